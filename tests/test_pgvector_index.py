"""What only the pgvector index has: its HNSW path, and searching a catalogue's own faces.

The VectorIndex contract (tests/test_vector_index_contract.py) runs on small collections,
which this index scans exactly; here `exact_max=0` forces the approximate HNSW path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iddetective.catalogue import Catalogue
from iddetective.errors import UsageError
from iddetective.matching import distances
from iddetective.matching.search import SearchResult
from iddetective.settings import Settings
from iddetective.store.postgres import PostgresStore
from iddetective.vector_index import IndexMismatch
from iddetective.vector_index.exact import ExactIndex
from iddetective.vector_index.pgvector import PgvectorIndex

from support.facesets import read_labels, require_set
from support.outcomes import MODEL, photo
from support.plans import hnsw_plan

pytestmark = pytest.mark.faces

DIM = 128
Opener = Callable[..., PgvectorIndex]


@pytest.fixture()
def open_index(postgres_url: str) -> Iterator[Opener]:
    """Opens pgvector indexes in one fresh database; closes them at the end."""
    opened: list[PgvectorIndex] = []

    def make(*args: Any, **knobs: Any) -> PgvectorIndex:
        index = PgvectorIndex(*args, url=postgres_url, **knobs)
        opened.append(index)
        return index

    yield make
    for index in opened:
        index.close()


def clustered(count: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 centres: like faces, where each person's photos are near."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, DIM))
    return distances.prepare(centres[rng.integers(0, 50, count)] + rng.normal(size=(count, DIM)))


def exact_of(ids: np.ndarray, vectors: np.ndarray, dimension: int = DIM) -> ExactIndex:
    reference = ExactIndex(dimension)
    reference.add(ids, vectors)
    return reference


def test_hnsw_search_finds_the_nearest_with_exact_distances(open_index: Opener) -> None:
    index = open_index(DIM, exact_max=0)
    ids, vectors = np.arange(3000, dtype=np.int64) + 7, clustered(3000)
    index.add(ids, vectors)
    queries = clustered(40, seed=1)
    found = index.search(queries, 10)
    truth = exact_of(ids, vectors).search(queries, 10)
    recall = np.mean([len(set(f.ids) & set(t.ids)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95
    for query, neighbours in zip(queries, found, strict=True):
        rows = np.searchsorted(ids, neighbours.ids)
        want = np.linalg.norm(vectors[rows] - query, axis=1)
        np.testing.assert_allclose(neighbours.distances, want, atol=1e-5)
        assert np.all(np.diff(neighbours.distances) >= 0)
    many = index.search(queries[:1], 1500)[0]  # past ef_search's cap, iteratively
    assert len(many) == 1500
    assert len(set(many.ids) & set(exact_of(ids, vectors).search(queries[:1], 1500)[0].ids)) > 1400


def test_hnsw_range_search_asks_for_more_until_one_is_beyond(open_index: Opener) -> None:
    index = open_index(DIM, exact_max=0)
    rng = np.random.default_rng(3)
    background = clustered(2000)
    planted = distances.prepare(background[0] + rng.normal(scale=0.01, size=(1200, DIM)))
    ids = np.arange(3200, dtype=np.int64)
    vectors = np.concatenate([background, planted])
    index.add(ids, vectors)
    found = index.range_search(background[:1], 0.15)[0]
    truth = exact_of(ids, vectors).range_search(background[:1], 0.15)[0]
    # More than ef_search's cap of 1,000: pgvector 0.8's iterative scan goes on past it.
    # HNSW is approximate, so nearly all of them.
    assert len(found) > 1000 and len(found) >= 0.9 * len(truth)
    assert set(found.ids.tolist()) <= set(truth.ids.tolist())


def test_a_large_filter_falls_back_to_an_exact_scan_when_hnsw_finds_too_few(
    open_index: Opener,
) -> None:
    index = open_index(DIM, exact_max=0, exact_filter_max=0)
    ids, vectors = np.arange(2000, dtype=np.int64), clustered(2000)
    index.add(ids, vectors)
    allowed = np.random.default_rng(4).choice(ids, size=30, replace=False)
    query = clustered(1, seed=5)
    found = index.search(query, 10, allowed=allowed)[0]
    want = exact_of(ids, vectors).search(query, 10, allowed=allowed)[0]
    assert found.ids.tolist() == want.ids.tolist()


def test_knobs_and_table_survive_save_and_load(open_index: Opener, tmp_path: Path) -> None:
    index = open_index(DIM, ef_search=321, exact_max=5)
    index.add(np.arange(20, dtype=np.int64), clustered(20))
    index.save(tmp_path / "index.pgvector.json", epoch=3)
    loaded, epoch = PgvectorIndex.load(tmp_path / "index.pgvector.json")
    try:
        assert (epoch, loaded.table, loaded.ef_search, loaded.exact_max) == (
            3,
            index.table,
            321,
            5,
        )
        index.remove(np.arange(5, dtype=np.int64))  # the table changed behind the file
        with pytest.raises(IndexMismatch, match="inconsistent: 15 rows, 20 saved"):
            PgvectorIndex.load(tmp_path / "index.pgvector.json")
    finally:
        loaded.close()
        index.drop()


def test_bad_table_names_and_no_database_are_refused(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(IndexMismatch, match="bad table name"):
        PgvectorIndex(DIM, url=postgres_url, table='face"; DROP TABLE face; --')
    monkeypatch.delenv("IDDETECTIVE_DB", raising=False)
    with pytest.raises(IndexMismatch, match="pass url= or set IDDETECTIVE_DB"):
        PgvectorIndex(DIM)
    with pytest.raises(IndexMismatch, match=r"cannot connect to postgresql://u@127\.0\.0\.1:1/"):
        PgvectorIndex(DIM, url="postgresql://u:secret@127.0.0.1:1/x")


# -- the catalogue's own faces ----------------------------------------------------------------


def test_the_catalogue_faces_are_searched_where_they_are_stored(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    index = PgvectorIndex.of_catalogue(postgres_url, MODEL, DIM, exact_max=0)
    try:
        store.save([photo(f"p{i}.jpg", faces=2, seeds=[i, 1000 + i]) for i in range(300)])
        other = photo("other-model.jpg", seeds=[5])
        store.save([replace(other, analysis=replace(other.analysis, model="another-model"))])
        ids, vectors = next(store.embeddings(MODEL))
        assert len(index) == 600 and index.ids().tolist() == ids.tolist()
        queries = vectors[:20] + 0.01
        truth = exact_of(ids, vectors).search(queries, 5)
        found = index.search(queries, 5)  # HNSW over the face table, other model left out
        assert [f.ids[0] for f in found] == [t.ids[0] for t in truth]
        store.save([photo("late.jpg", seeds=[99_999])])
        late = distances.prepare(np.random.default_rng(99_999).normal(size=DIM))
        assert index.search(late[None, :], 1)[0].distances[0] < 1e-5  # at once, no rebuild
        with pytest.raises(IndexMismatch, match="change when photos are saved"):
            index.add(np.array([1]), late[None, :])
        with pytest.raises(IndexMismatch, match="change when photos are saved"):
            index.remove(ids[:1])
    finally:
        index.close()
        store.close()


def test_each_model_is_searched_through_its_own_hnsw_index(postgres_url: str) -> None:
    """Faces of a 128-d and a 512-d model in one table: each model has its own partial HNSW
    index over its embeddings cast to its length, and its searches are planned with it."""
    wide, wide_dim = "wide-model", 512
    store = PostgresStore(postgres_url)
    store.save([photo(f"n{i}.jpg", seeds=[i]) for i in range(200)])
    store.save([photo(f"w{i}.jpg", seeds=[i], model=wide, dimension=wide_dim) for i in range(200)])
    indexes = dict(
        store.sql.all(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'face' "
            "AND indexdef LIKE %s",
            ("%USING hnsw%",),
        )
    )
    models = {m.name: m for m in store.models()}
    assert set(models) == {MODEL, wide} and set(indexes) == {
        "face_embedding_1",
        "face_embedding_2",
    }
    assert (
        "((embedding)::vector(128)) vector_l2_ops) WHERE (model = 'm'::text)"
        in (indexes["face_embedding_1"])
    )
    assert (
        "((embedding)::vector(512)) vector_l2_ops) WHERE (model = 'wide-model'::text)"
        in (indexes["face_embedding_2"])
    )
    store.sql.execute("ANALYZE face")
    for model, dimension, name in (
        (MODEL, DIM, "face_embedding_1"),
        (wide, wide_dim, "face_embedding_2"),
    ):
        ids, vectors = next(store.embeddings(model))
        index = PgvectorIndex.of_catalogue(postgres_url, model, dimension, exact_max=0)
        try:
            assert not index._exact(None) and len(index) == 200
            assert f"Index Scan using {name} on face" in hnsw_plan(index, vectors[0])
            queries = vectors[:10] + 0.01
            found = index.search(queries, 3)
            truth = exact_of(ids, vectors, dimension).search(queries, 3)
            assert [f.ids[0] for f in found] == [t.ids[0] for t in truth]
            assert set(np.concatenate([f.ids for f in found]).tolist()) <= set(ids.tolist())
        finally:
            index.close()
    with pytest.raises(IndexMismatch, match="records the model 'wide-model''s vectors as 512-"):
        PgvectorIndex.of_catalogue(postgres_url, wide, DIM)
    store.close()


def test_a_catalogue_on_postgresql_searches_with_pgvector(
    postgres_url: str, tmp_path: Path
) -> None:
    rows = read_labels(require_set("face_recognition"))
    with Catalogue(tmp_path / "pg", db=postgres_url) as catalogue:
        catalogue.index([str(Path(rows[0].path).parent)])
        index = catalogue.vector_index()
        assert isinstance(index, PgvectorIndex) and index.read_only
        assert not (tmp_path / "pg" / "vectors").exists()  # no index file to build or keep
        assert catalogue.reindex() == len(index) > 0
        ours = [catalogue.search_photo(row.path, top=3) for row in rows]
    with Catalogue(tmp_path / "exact", db=postgres_url, vector_index="exact") as reference:
        exact = [reference.search_photo(row.path, top=3) for row in rows]
    assert [answer(r) for r in ours] == [answer(r) for r in exact]
    distances_of = [
        [h.distance for f in r.faces for m in f.matches for h in m.photos] for r in ours
    ]
    exact_distances = [
        [h.distance for f in r.faces for m in f.matches for h in m.photos] for r in exact
    ]
    for got, want in zip(distances_of, exact_distances, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def answer(result: SearchResult) -> list[list[tuple[object, ...]]]:
    """Who each face of a search is, with the faces that say so (distances aside)."""
    return [
        [(m.person, m.verdict, tuple(h.face_id for h in m.photos)) for m in face.matches]
        for face in result.faces
    ]


def test_pgvector_needs_the_catalogue_on_postgresql(tmp_path: Path) -> None:
    with (
        Catalogue(tmp_path, create=True, vector_index="pgvector") as catalogue,
        pytest.raises(UsageError, match="needs the catalogue on PostgreSQL"),
    ):
        catalogue.vector_index()


def test_the_vector_index_can_be_chosen_in_the_environment(
    postgres_url: str, tmp_path: Path
) -> None:
    # Read at the edge (the CLI builds Settings from os.environ), passed down to the catalogue.
    environ = {"IDDETECTIVE_VECTOR_INDEX": "exact"}
    settings = Settings.from_environment(environ, data_dir=tmp_path, db=postgres_url)
    with Catalogue.from_settings(settings) as catalogue:
        assert isinstance(catalogue.vector_index(), ExactIndex)
