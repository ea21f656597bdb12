"""The contract every `VectorIndex` implementation passes (parametrised by registry name).

`pgvector` runs against a fresh database of the session's PostgreSQL (tests/conftest.py),
passed as its `url` (as a catalogue passes its --db); each index there is a table of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iddetective import distances
from iddetective.registry import available, resolve_class
from iddetective.vector_index import IndexMismatch, VectorIndex
from iddetective.vector_index.pgvector import PgvectorIndex

DIM = 128


@pytest.fixture(params=available("vector_index"))
def index_class(request: pytest.FixtureRequest) -> type:
    chosen: type = resolve_class("vector_index", request.param)
    if request.param != "pgvector":
        return chosen
    url = request.getfixturevalue("postgres_url")
    opened: list[PgvectorIndex] = []

    class Closed(PgvectorIndex):
        """Every index the test opens (loads included) is closed at its end."""

        def __init__(self, dimension: int, **knobs: Any) -> None:
            knobs.setdefault("url", url)
            super().__init__(dimension, **knobs)
            opened.append(self)

    request.addfinalizer(lambda: [index.close() for index in opened])
    return Closed


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return distances.prepare(rng.normal(size=(count, DIM)))


def brute_force(
    gallery: np.ndarray, ids: np.ndarray, query: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    dist = np.linalg.norm(gallery.astype(np.float64) - query.astype(np.float64), axis=1)
    order = np.argsort(dist, kind="stable")
    return ids[order], dist[order]


def filled(index_class: type, count: int = 500) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    index: VectorIndex = index_class(DIM)
    ids = np.arange(10, 10 + count, dtype=np.int64) * 3
    vectors = unit_vectors(count)
    index.add(ids, vectors)
    return index, ids, vectors


def test_satisfies_protocol(index_class: type) -> None:
    assert isinstance(index_class(DIM), VectorIndex)


def test_search_matches_brute_force(index_class: type) -> None:
    index, ids, vectors = filled(index_class)
    queries = unit_vectors(7, seed=1)
    for query, found in zip(queries, index.search(queries, 10), strict=True):
        want_ids, want_dist = brute_force(vectors, ids, query)
        assert found.ids.tolist() == want_ids[:10].tolist()
        np.testing.assert_allclose(found.distances, want_dist[:10], atol=1e-5)


def test_range_search_returns_everything_within_radius(index_class: type) -> None:
    index, ids, vectors = filled(index_class)
    query = vectors[5] + 0.01
    radius = 1.3
    found = index.range_search(query[None, :], radius)[0]
    want_ids, want_dist = brute_force(vectors, ids, query)
    expected = want_ids[want_dist <= radius]
    assert len(expected) > 1
    assert sorted(found.ids.tolist()) == sorted(expected.tolist())
    assert np.all(np.diff(found.distances) >= 0)


def test_filtered_search_equals_exact_filtered_scan(index_class: type) -> None:
    index, ids, vectors = filled(index_class)
    rng = np.random.default_rng(2)
    allowed = rng.choice(ids, size=40, replace=False)
    mask = np.isin(ids, allowed)
    for query in unit_vectors(5, seed=3):
        found = index.search(query[None, :], 8, allowed=allowed)[0]
        want_ids, _ = brute_force(vectors[mask], ids[mask], query)
        assert found.ids.tolist() == want_ids[:8].tolist()
        ranged = index.range_search(query[None, :], 1.4, allowed=allowed)[0]
        assert set(ranged.ids.tolist()) <= set(allowed.tolist())


def test_k_larger_than_collection_and_empty_index(index_class: type) -> None:
    index, ids, _ = filled(index_class, count=5)
    found = index.search(unit_vectors(1), 50)[0]
    assert sorted(found.ids.tolist()) == sorted(ids.tolist())
    empty: VectorIndex = index_class(DIM)
    assert len(empty) == 0
    assert len(empty.search(unit_vectors(2), 3)[1]) == 0
    assert len(empty.range_search(unit_vectors(1), 2.0)[0]) == 0


def test_adding_nothing_changes_nothing(index_class: type) -> None:
    index, ids, vectors = filled(index_class, count=5)
    index.add(np.zeros(0, np.int64), np.zeros((0, DIM), np.float32))
    assert len(index) == 5
    assert index.search(vectors[:1], 1)[0].ids.tolist() == [ids[0]]


def test_remove(index_class: type) -> None:
    index, ids, vectors = filled(index_class, count=20)
    assert index.remove(ids[:5]) == 5
    assert index.remove(np.array([999_999])) == 0
    assert len(index) == 15
    found = index.search(vectors[0][None, :], 20)[0]
    assert not set(found.ids.tolist()) & set(ids[:5].tolist())


def test_duplicate_ids_rejected(index_class: type) -> None:
    index, ids, vectors = filled(index_class, count=5)
    with pytest.raises(IndexMismatch, match="already in the index"):
        index.add(ids[:1], vectors[:1])
    with pytest.raises(IndexMismatch, match="duplicate"):
        index.add(np.array([1, 1]), unit_vectors(2))
    assert len(index) == 5


def test_wrong_dimension_rejected(index_class: type) -> None:
    index, _, _ = filled(index_class, count=5)
    with pytest.raises(IndexMismatch, match="dimension 128"):
        index.add(np.array([1]), np.zeros((1, 64), np.float32))
    with pytest.raises(IndexMismatch, match="dimension 128"):
        index.search(np.zeros((1, 3), np.float32), 1)


def test_persistence_and_epoch(index_class: type, tmp_path: Path) -> None:
    index, _, vectors = filled(index_class, count=50)
    path = tmp_path / "index.npz"
    index.save(path, epoch=7)
    loaded, epoch = index_class.load(path)
    assert epoch == 7 and len(loaded) == 50
    before = index.search(vectors[:3], 5)
    after = loaded.search(vectors[:3], 5)
    assert [b.ids.tolist() for b in before] == [a.ids.tolist() for a in after]
    assert not list(tmp_path.glob("*.tmp"))


def saved_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_any_flipped_or_swapped_byte_is_refused_or_harmless(
    index_class: type, tmp_path: Path
) -> None:
    """Damage anywhere in a saved index never changes an answer: the file is refused."""
    index, _, vectors = filled(index_class, count=60)
    path = tmp_path / "index.npz"
    index.save(path, epoch=3)
    want = [(hits.ids.tolist(), hits.distances.tolist()) for hits in index.search(vectors, 3)]
    rng = np.random.default_rng(1)
    for saved in saved_files(tmp_path):
        original = saved.read_bytes()
        for offset in rng.choice(len(original), size=min(12, len(original)), replace=False):
            damaged = bytearray(original)
            damaged[offset] ^= 1 << int(rng.integers(8))
            saved.write_bytes(bytes(damaged))
            try:
                loaded, _ = index_class.load(path)
            except IndexMismatch:
                continue
            got = [(h.ids.tolist(), h.distances.tolist()) for h in loaded.search(vectors, 3)]
            assert got == want, f"{saved.name} byte {offset} flipped changed the answers"
        saved.write_bytes(original)
    assert index_class.load(path)[1] == 3  # the undamaged files still load


def test_corrupt_file_is_reported(index_class: type, tmp_path: Path) -> None:
    index, _, _ = filled(index_class, count=50)
    path = tmp_path / "index.npz"
    index.save(path, epoch=1)
    for saved in [p for p in tmp_path.rglob("*") if p.is_file()]:
        saved.write_bytes(saved.read_bytes()[:100])  # every file an index keeps, truncated
    with pytest.raises(IndexMismatch, match=r"cannot read|damaged"):
        index_class.load(path)
