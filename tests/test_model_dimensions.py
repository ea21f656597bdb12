"""A catalogue of a model whose vectors are not dlib's 128-d: the same answers, at 512 dimensions,
through each store and its default vector index (IVF beside SQLite, pgvector's HNSW inside
PostgreSQL); an index file of another dimension rebuilt; a model whose vectors changed length
refused; the media cache kept for the faces of every model.

The 512-d model is dlib's descriptor mapped by a fixed orthonormal matrix
(support/wide_embedder.py), which keeps every distance: its answers must be dlib's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from iddetective import media
from iddetective.catalogue import Catalogue
from iddetective.errors import StoreError
from iddetective.faces.pipeline import PipelineSettings
from iddetective.matching.calibration import calibration_for
from iddetective.matching.search import SearchResult
from iddetective.store.sqlite import SqliteStore
from iddetective.vector_index.ivf import IvfIndex
from iddetective.vector_index.pgvector import PgvectorIndex

from support.facesets import (
    Labelled,
    copy_data,
    read_labels,
    require_set,
    split_enrol_probe,
    write_manifest,
)
from support.outcomes import MODEL, photo
from support.plans import hnsw_plan
from support.wide_embedder import WIDE_MODEL

pytestmark = pytest.mark.faces

Build = Callable[[str, list[Labelled], list[str]], Path]
WIDE = PipelineSettings(embedder="support.wide_embedder:WideEmbedder")
MISDECLARED = PipelineSettings(embedder="support.wide_embedder:MisdeclaredEmbedder")


def face_recognition() -> tuple[list[Labelled], list[str]]:
    """The enrolled rows (as tests/test_search_accuracy.py enrols them) and the photos to
    search with: the other photos of those people, and of a person not enrolled."""
    rows = read_labels(require_set("face_recognition"))
    known = [r for r in rows if r.person != "lin_manuel_miranda"]
    enrol, probes = split_enrol_probe(known)
    return enrol, [r.path for r in probes] + [r.path for r in rows if r not in known]


def answers(result: SearchResult) -> list[list[tuple[object, ...]]]:
    """Who each face of a search is, by which photos (faces are numbered per catalogue)."""
    return [
        [
            (
                m.person.name if m.person else None,
                m.verdict,
                tuple(h.photo.sha256 for h in m.photos),
            )
            for m in face.matches
        ]
        for face in result.faces
    ]


def distances_of(result: SearchResult) -> list[float]:
    return [h.distance for face in result.faces for m in face.matches for h in m.photos]


def calibrate_as_dlib(catalogue: Catalogue) -> None:
    """Give the 512-d model dlib's table: the orthonormal map keeps every distance."""
    made_from = "dlib-resnet-v1's shipped table (the map keeps every distance)"
    catalogue.save_calibration(replace(calibration_for(), model=WIDE_MODEL, made_from=made_from))


@pytest.fixture(scope="module")
def wide_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite data directory of the face_recognition set's enrolled photos, 512-d faces."""
    enrol, _ = face_recognition()
    folder = tmp_path_factory.mktemp("wide")
    manifest = write_manifest(folder / "enrol.csv", enrol)
    with Catalogue(folder / "data", create=True, pipeline=WIDE) as catalogue:
        report = catalogue.index([], people=str(manifest))
        calibrate_as_dlib(catalogue)
    assert not report.failed, report.failed
    return folder / "data"


@pytest.fixture(params=["sqlite", "postgresql"])
def wide_catalogue(request: pytest.FixtureRequest, wide_data: Path, tmp_path: Path) -> Catalogue:
    """The 512-d catalogue on SQLite (a copy of `wide_data`), or on a fresh PostgreSQL."""
    if request.param == "sqlite":
        catalogue = Catalogue(copy_data(wide_data, tmp_path / "data"), pipeline=WIDE)
    else:
        url = request.getfixturevalue("postgres_url")
        catalogue = Catalogue(tmp_path / "pg", db=url, pipeline=WIDE)
        calibrate_as_dlib(catalogue)
        enrol, _ = face_recognition()
        catalogue.index([], people=str(write_manifest(tmp_path / "enrol.csv", enrol)))
    request.addfinalizer(catalogue.close)
    return catalogue


def test_a_512_dimensional_model_answers_as_dlibs_own_vectors_do(
    wide_catalogue: Catalogue, built_catalogue: Build
) -> None:
    enrol, queries = face_recognition()
    # The same data directory as tests/test_search_accuracy.py's: embedded once per run.
    with Catalogue(built_catalogue("face_recognition", enrol, [])) as reference:
        want = [reference.search_photo(path, top=3) for path in queries]
    got = [wide_catalogue.search_photo(path, top=3) for path in queries]
    assert [answers(r) for r in got] == [answers(r) for r in want]
    for ours, theirs in zip(got, want, strict=True):
        np.testing.assert_allclose(distances_of(ours), distances_of(theirs), atol=1e-4)
    assert {r.model for r in got} == {WIDE_MODEL}
    store = wide_catalogue.store
    assert [(m.name, m.dimension) for m in store.models()] == [(WIDE_MODEL, 512)]
    index = wide_catalogue.vector_index()
    assert index.dimension == 512
    vectors = next(store.embeddings(WIDE_MODEL))[1]
    if isinstance(index, PgvectorIndex):
        assert "Index Scan using face_embedding_1 on face" in hnsw_plan(index, vectors[0])
    else:
        assert isinstance(index, IvfIndex)
        pointer = wide_catalogue.data_dir / "vectors" / f"ivf-{WIDE_MODEL}"
        meta = json.loads((pointer.parent / pointer.read_text() / "meta.json").read_text())
        assert meta["dimension"] == 512


def test_an_index_file_of_another_dimension_is_rebuilt(wide_data: Path, tmp_path: Path) -> None:
    data = copy_data(wide_data, tmp_path / "data")
    told: list[str] = []
    with Catalogue(data, pipeline=WIDE, notice=told.append) as catalogue:
        held = catalogue.store.face_ids(WIDE_MODEL)
        stranger = IvfIndex(128)  # the model's faces, as 128-d vectors
        stranger.add(held, np.ones((len(held), 128), np.float32) / np.sqrt(128))
        stranger.save(data / "vectors" / f"ivf-{WIDE_MODEL}", catalogue.store.faces_epoch())
        _, queries = face_recognition()
        result = catalogue.search_photo(queries[0])
        assert catalogue.vector_index().dimension == 512
    assert told == [
        f"the vector index at {data / 'vectors' / f'ivf-{WIDE_MODEL}'} holds 128-dimensional "
        f"vectors, but the model '{WIDE_MODEL}' makes 512-dimensional ones; rebuilding the "
        "vector index from the catalogue"
    ]
    assert result.faces[0].matches[0].verdict == "match"


def test_a_model_whose_vectors_changed_length_is_refused(wide_data: Path, tmp_path: Path) -> None:
    data = copy_data(wide_data, tmp_path / "data")
    _, queries = face_recognition()
    with Catalogue(data, pipeline=MISDECLARED) as catalogue:
        with pytest.raises(
            StoreError,
            match=f"records the model '{WIDE_MODEL}''s vectors as 512-dimensional, but its "
            "embedder makes 128-dimensional ones",
        ):
            catalogue.search_photo(queries[0])
        with pytest.raises(
            StoreError, match=f"refused a 128-dimensional vector of the model '{WIDE_MODEL}'"
        ):
            catalogue.index([queries[-1]])
        assert catalogue.store.stats().photos == len(face_recognition()[0])


def test_crops_of_every_models_faces_are_kept_by_maintenance(tmp_path: Path) -> None:
    """A cached crop is an orphan when its face is gone, whichever model the face is of."""
    store = SqliteStore(tmp_path / "catalog.sqlite")
    try:
        store.save([photo("n.jpg"), photo("w.jpg", model=WIDE_MODEL, dimension=512)])
        kept = [int(i) for m in (MODEL, WIDE_MODEL) for i in store.face_ids(m)]
        root = tmp_path / "media"
        for face_id in [*kept, 999]:
            crop = root / "face" / f"{face_id % 1000:03d}" / f"{face_id}.jpg"
            crop.parent.mkdir(parents=True, exist_ok=True)
            crop.write_bytes(b"")
        assert [p.name for p in media.orphans(root, store)] == ["999.jpg"]
    finally:
        store.close()
