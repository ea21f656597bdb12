"""The contract every `Store` passes, on synthetic outcomes (no face model needed)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from iddetective import distances
from iddetective.entities import (
    Box,
    FaceAnalysis,
    FailedPhoto,
    FileStat,
    IndexedPhoto,
    KnownPhoto,
    PhotoAnalysis,
)
from iddetective.errors import NotFound
from iddetective.registry import available, resolve_class
from iddetective.store import Store


@pytest.fixture(params=available("store"))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store = resolve_class("store", request.param)(tmp_path / "catalog.sqlite")
    assert isinstance(opened, Store)
    yield opened
    opened.close()


def photo(name: str, faces: int = 1, label: str | None = None) -> IndexedPhoto:
    rng = np.random.default_rng(len(name))
    analysed = tuple(
        FaceAnalysis(
            Box(10 + 100 * i, 10, 90 + 100 * i, 90),
            1.0,
            ((0, 0),) * 5,
            distances.prepare(rng.normal(size=128)),
        )
        for i in range(faces)
    )
    sha = hashlib.sha256(name.encode()).hexdigest()
    return IndexedPhoto(
        FileStat(f"/photos/{name}", 100, 1), sha, PhotoAnalysis(400, 100, analysed, "m"), label
    )


def test_save_is_idempotent_by_sha256(store: Store) -> None:
    first = store.save([photo("a.jpg", faces=2)])
    again = store.save([photo("a.jpg", faces=2)])
    assert [r.status for r in first] == ["indexed"] and first[0].faces == 2
    assert [r.status for r in again] == ["unchanged"]
    assert store.stats().photos == 1 and store.stats().faces == 2


def test_epoch_moves_with_faces_only(store: Store) -> None:
    start = store.faces_epoch()
    store.save([FailedPhoto(FileStat("/photos/bad.jpg", 1, 1), "empty file (0 bytes)")])
    assert store.faces_epoch() == start
    store.save([photo("a.jpg")])
    assert store.faces_epoch() > start


def test_known_photo_that_vanished_becomes_a_failure(store: Store) -> None:
    sha = hashlib.sha256(b"gone").hexdigest()
    (result,) = store.save([KnownPhoto(FileStat("/photos/gone.jpg", 5, 5), sha, None)])
    assert result.status == "failed" and "removed from the catalogue" in (result.reason or "")
    record = store.file_record("/photos/gone.jpg")
    assert record is not None and record.stat.size == -1  # never skipped as unchanged


def test_success_clears_an_earlier_failure(store: Store) -> None:
    store.save([FailedPhoto(FileStat("/photos/a.jpg", 1, 1), "truncated")])
    assert [f.path for f in store.failures()] == ["/photos/a.jpg"]
    store.save([photo("a.jpg")])
    assert store.failures() == []
    record = store.file_record("/photos/a.jpg")
    assert record is not None and record.sha256 == photo("a.jpg").sha256


def test_label_goes_to_one_face_and_flags_review(store: Store) -> None:
    store.save([photo("group.jpg", faces=3, label="Ann Lee")])
    (person,) = store.people()
    assert (person.name, person.faces, person.photos) == ("Ann Lee", 1, 1)
    (review,) = store.reviews()
    assert review.person is not None and review.person.id == person.id
    assert review.faces == 3 and "largest, most central" in review.reason


def test_embeddings_faces_and_people_filter(store: Store) -> None:
    store.save([photo("a.jpg", label="Ann"), photo("b.jpg", faces=2)])
    ids, vectors = next(store.embeddings("m"))
    assert len(ids) == 3 and vectors.shape == (3, 128) and vectors.dtype == np.float32
    assert list(store.embeddings("other-model")) == []
    faces = store.faces(ids.tolist())
    ann = store.resolve_person("ann")
    assert store.face_ids_of_people([ann.id]).tolist() == [
        i for i, f in faces.items() if f.person == ann
    ]


def test_remove_photo(store: Store) -> None:
    store.save([photo("a.jpg"), photo("b.jpg")])
    removed = store.remove_photo("/photos/a.jpg")
    assert removed.paths == ("/photos/a.jpg",)
    assert store.stats().photos == 1 and store.stats().faces == 1
    with pytest.raises(NotFound):
        store.remove_photo("/photos/a.jpg")
