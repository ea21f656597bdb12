"""The contract every `VectorIndex` implementation passes (parametrised by registry name).

`pgvector` runs against a fresh database of the session's PostgreSQL (tests/conftest.py),
passed as its `url` (as a catalogue passes its --db); each index there is a table of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest

from iddetective.matching import distances
from iddetective.registry import available, resolve_class
from iddetective.vector_index import CatalogueIndex, IndexMismatch, PersistentIndex, VectorIndex
from iddetective.vector_index.ivf import IvfIndex
from iddetective.vector_index.pgvector import PgvectorIndex

#: Every test runs at the dimension of dlib's ResNet and at a wider one: nothing assumes 128.
DIMENSIONS = (128, 512)


class IndexClass(Protocol):
    """What these tests use of an index class: a new, empty index, and a saved one loaded."""

    def __call__(self, dimension: int) -> VectorIndex: ...

    def load(self, path: Path) -> tuple[VectorIndex, int]: ...


#: Each registered index as the catalogue builds it, and the approximate ones with training
#: thresholds small enough that this suite's 500 vectors reach their approximate path: IVF
#: trained (from 40 vectors), pgvector answering through HNSW (from 1 row, filters too).
CONFIGURATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: (name, {}) for name in available("vector_index")},
    "ivf-trained": ("ivf", {"train_min": 40, "exact_filter_max": 0}),
    "pgvector-hnsw": ("pgvector", {"exact_max": 0, "exact_filter_max": 0}),
}
#: Where an approximate index may miss a neighbour, the share of the exact answer it finds.
RECALL_MIN = 0.9


@pytest.fixture(params=DIMENSIONS, ids=[f"d{d}" for d in DIMENSIONS])
def dim(request: pytest.FixtureRequest) -> int:
    """The length of the vectors a test indexes."""
    return int(request.param)


@pytest.fixture(params=sorted(CONFIGURATIONS))
def index_class(request: pytest.FixtureRequest) -> IndexClass:
    name, knobs = CONFIGURATIONS[request.param]
    chosen = resolve_class("vector_index", name)
    if name == "pgvector":  # the database comes with the index, never from the environment
        knobs = {**knobs, "url": request.getfixturevalue("postgres_url")}
    if name != "pgvector" and not knobs:
        return chosen
    opened: list[Any] = []
    request.addfinalizer(lambda: [index.close() for index in opened])
    base: type[Any] = chosen  # typed as a class: mypy takes no plain variable as a base

    class Configured(base):
        """The index with this configuration's knobs; every one the test opens (loads
        included) is closed at its end."""

        approximate = bool(set(knobs) - {"url"})

        def __init__(self, dimension: int, **given: Any) -> None:
            super().__init__(dimension, **{**knobs, **given})
            if hasattr(self, "close"):
                opened.append(self)

    return Configured


def approximate(index_class: IndexClass) -> bool:
    return bool(getattr(index_class, "approximate", False))


def assert_found(
    found_ids: np.ndarray, found_dist: np.ndarray, want_ids: np.ndarray, index_class: IndexClass
) -> None:
    """The exact answer from an exact index; from an approximate one, at least RECALL_MIN of
    it, each face at its exact distance (approximate indexes re-rank exactly), nearest first."""
    if not approximate(index_class):
        assert found_ids.tolist() == want_ids.tolist()
        return
    assert np.all(np.diff(found_dist) >= 0)
    recall = len(np.intersect1d(found_ids, want_ids)) / max(1, len(want_ids))
    assert recall >= RECALL_MIN, f"recall {recall:.2f} below {RECALL_MIN}"


def unit_vectors(dim: int, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return distances.prepare(rng.normal(size=(count, dim)))


def brute_force(
    gallery: np.ndarray, ids: np.ndarray, query: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    dist = np.linalg.norm(gallery.astype(np.float64) - query.astype(np.float64), axis=1)
    order = np.argsort(dist, kind="stable")
    return ids[order], dist[order]


def filled(
    index_class: IndexClass, dim: int, count: int = 500
) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    index: VectorIndex = index_class(dim)
    ids = np.arange(10, 10 + count, dtype=np.int64) * 3
    vectors = unit_vectors(dim, count)
    index.add(ids, vectors)
    return index, ids, vectors


def test_satisfies_protocol(index_class: IndexClass, dim: int) -> None:
    assert isinstance(index_class(dim), VectorIndex)
    assert isinstance(index_class, PersistentIndex | CatalogueIndex)


@pytest.mark.parametrize("index_class", ["ivf-trained", "pgvector-hnsw"], indirect=True)
def test_approximate_configurations_take_their_approximate_path(
    index_class: IndexClass, dim: int
) -> None:
    """The small thresholds do what they are for: searches of 500 vectors leave the exact
    scan (IVF trained, pgvector planning its HNSW index)."""
    assert approximate(index_class)
    index, _, vectors = filled(index_class, dim)
    if isinstance(index, IvfIndex):
        assert index.trained and index.lists > 1
        return
    assert isinstance(index, PgvectorIndex)
    assert not index._exact(None) and not index._exact([1, 2, 3])
    plan = index._db.execute(
        f"EXPLAIN SELECT id FROM {index.table} ORDER BY embedding <-> %s LIMIT 5",
        (vectors[0],),
    ).fetchall()
    assert "hnsw" in " ".join(row[0] for row in plan)


def test_search_matches_brute_force(index_class: IndexClass, dim: int) -> None:
    index, ids, vectors = filled(index_class, dim)
    queries = unit_vectors(dim, 7, seed=1)
    hits = []
    for query, found in zip(queries, index.search(queries, 10), strict=True):
        want_ids, want_dist = brute_force(vectors, ids, query)
        assert_found(found.ids, found.distances, want_ids[:10], index_class)
        exact = dict(zip(want_ids.tolist(), want_dist.tolist(), strict=True))
        np.testing.assert_allclose(found.distances, [exact[i] for i in found.ids], atol=1e-5)
        hits.append(len(np.intersect1d(found.ids, want_ids[:10])))
    if not approximate(index_class):
        assert hits == [10] * len(queries)


def test_range_search_returns_everything_within_radius(index_class: IndexClass, dim: int) -> None:
    index, ids, vectors = filled(index_class, dim)
    query = vectors[5] + 0.01
    want_ids, want_dist = brute_force(vectors, ids, query)
    # Random unit vectors lie further apart the more dimensions they have: the radius takes
    # in the nearest 40 at any dimension (midway to the 41st, clear of rounding).
    radius = float(want_dist[39] + want_dist[40]) / 2
    found = index.range_search(query[None, :], radius)[0]
    expected = want_ids[want_dist <= radius]
    assert len(expected) == 40
    assert np.all(found.distances <= radius)
    assert_found(np.sort(found.ids), found.distances, np.sort(expected), index_class)
    assert np.all(np.diff(found.distances) >= 0)


def test_filtered_search_equals_exact_filtered_scan(index_class: IndexClass, dim: int) -> None:
    index, ids, vectors = filled(index_class, dim)
    rng = np.random.default_rng(2)
    allowed = rng.choice(ids, size=40, replace=False)
    mask = np.isin(ids, allowed)
    for query in unit_vectors(dim, 5, seed=3):
        found = index.search(query[None, :], 8, allowed=allowed)[0]
        want_ids, _ = brute_force(vectors[mask], ids[mask], query)
        assert set(found.ids.tolist()) <= set(allowed.tolist())
        assert_found(found.ids, found.distances, want_ids[:8], index_class)
        ranged = index.range_search(query[None, :], 1.4, allowed=allowed)[0]
        assert set(ranged.ids.tolist()) <= set(allowed.tolist())


def test_k_larger_than_collection_and_empty_index(index_class: IndexClass, dim: int) -> None:
    index, ids, _ = filled(index_class, dim, count=5)
    found = index.search(unit_vectors(dim, 1), 50)[0]
    assert sorted(found.ids.tolist()) == sorted(ids.tolist())
    empty: VectorIndex = index_class(dim)
    assert len(empty) == 0
    assert len(empty.search(unit_vectors(dim, 2), 3)[1]) == 0
    assert len(empty.range_search(unit_vectors(dim, 1), 2.0)[0]) == 0


def test_adding_nothing_changes_nothing(index_class: IndexClass, dim: int) -> None:
    index, ids, vectors = filled(index_class, dim, count=5)
    index.add(np.zeros(0, np.int64), np.zeros((0, dim), np.float32))
    assert len(index) == 5
    assert index.search(vectors[:1], 1)[0].ids.tolist() == [ids[0]]


def test_remove(index_class: IndexClass, dim: int) -> None:
    index, ids, vectors = filled(index_class, dim, count=20)
    assert index.remove(ids[:5]) == 5
    assert index.remove(np.array([999_999])) == 0
    assert len(index) == 15
    found = index.search(vectors[0][None, :], 20)[0]
    assert not set(found.ids.tolist()) & set(ids[:5].tolist())


def test_duplicate_ids_rejected(index_class: IndexClass, dim: int) -> None:
    index, ids, vectors = filled(index_class, dim, count=5)
    with pytest.raises(IndexMismatch, match="already in the index"):
        index.add(ids[:1], vectors[:1])
    with pytest.raises(IndexMismatch, match="duplicate"):
        index.add(np.array([1, 1]), unit_vectors(dim, 2))
    assert len(index) == 5


def test_wrong_dimension_rejected(index_class: IndexClass, dim: int) -> None:
    index, _, _ = filled(index_class, dim, count=5)
    with pytest.raises(IndexMismatch, match=f"dimension {dim}"):
        index.add(np.array([1]), np.zeros((1, 64), np.float32))
    with pytest.raises(IndexMismatch, match=f"dimension {dim}"):
        index.search(np.zeros((1, 3), np.float32), 1)
    other = 128 if dim != 128 else 512  # the other dimension this suite runs at
    with pytest.raises(IndexMismatch, match=f"dimension {dim}"):
        index.range_search(unit_vectors(other, 1), 1.0)


def test_persistence_and_epoch(index_class: IndexClass, dim: int, tmp_path: Path) -> None:
    index, _, vectors = filled(index_class, dim, count=50)
    path = tmp_path / "index.npz"
    index.save(path, epoch=7)
    loaded, epoch = index_class.load(path)
    assert epoch == 7 and len(loaded) == 50 and loaded.dimension == dim
    before = index.search(vectors[:3], 5)
    after = loaded.search(vectors[:3], 5)
    assert [b.ids.tolist() for b in before] == [a.ids.tolist() for a in after]
    assert not list(tmp_path.glob("*.tmp"))


def saved_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_any_flipped_or_swapped_byte_is_refused_or_harmless(
    index_class: IndexClass, dim: int, tmp_path: Path
) -> None:
    """Damage anywhere in a saved index never changes an answer: the file is refused."""
    index, _, vectors = filled(index_class, dim, count=60)
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


def test_corrupt_file_is_reported(index_class: IndexClass, dim: int, tmp_path: Path) -> None:
    index, _, _ = filled(index_class, dim, count=50)
    path = tmp_path / "index.npz"
    index.save(path, epoch=1)
    for saved in [p for p in tmp_path.rglob("*") if p.is_file()]:
        saved.write_bytes(saved.read_bytes()[:100])  # every file an index keeps, truncated
    with pytest.raises(IndexMismatch, match=r"cannot read|damaged"):
        index_class.load(path)
