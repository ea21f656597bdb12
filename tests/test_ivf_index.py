"""The IVF index past its exact-scan stage: trained, filtered, persisted, updated."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iddetective import distances
from iddetective.vector_index.exact import ExactIndex
from iddetective.vector_index.ivf import IvfIndex

DIM = 128


def clustered(count: int, people: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight groups, like several photos of each person."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, DIM))
    members = centres[rng.integers(0, people, size=count)] + rng.normal(size=(count, DIM)) * 0.3
    return distances.prepare(members)


def pair(count: int = 3000, **options: int) -> tuple[IvfIndex, ExactIndex, np.ndarray]:
    vectors = clustered(count, people=300)
    ids = np.arange(count, dtype=np.int64) * 7 + 1
    ivf, exact = IvfIndex(DIM, train_min=500, **options), ExactIndex(DIM)
    ivf.add(ids, vectors)
    exact.add(ids, vectors)
    assert ivf.trained
    return ivf, exact, vectors


def same(a: list, b: list) -> bool:
    return [x.ids.tolist() for x in a] == [y.ids.tolist() for y in b]


def test_probing_every_list_gives_the_exact_answer() -> None:
    ivf, exact, vectors = pair(nprobe=10_000)
    queries = vectors[:20] + 0.01
    assert same(ivf.search(queries, 10), exact.search(queries, 10))
    assert same(ivf.range_search(queries, 0.5), exact.range_search(queries, 0.5))


def test_distances_are_exact_after_rerank() -> None:
    ivf, exact, vectors = pair()
    for found, want in zip(ivf.search(vectors[:5], 5), exact.search(vectors[:5], 5), strict=True):
        common = np.intersect1d(found.ids, want.ids)
        got = dict(zip(found.ids.tolist(), found.distances.tolist(), strict=True))
        ref = dict(zip(want.ids.tolist(), want.distances.tolist(), strict=True))
        # 8-bit codes would be off by ~1e-2; float rounding near zero stays under 1e-3.
        assert all(abs(got[i] - ref[i]) < 1e-3 for i in common.tolist())


def test_filtered_search_small_set_is_exact_and_large_set_uses_selector() -> None:
    ivf, exact, vectors = pair(nprobe=10_000)
    allowed = np.arange(0, 3000, 3, dtype=np.int64) * 7 + 1
    queries = vectors[1:9]
    want = exact.search(queries, 8, allowed=allowed)
    assert same(ivf.search(queries, 8, allowed=allowed), want)
    ivf.exact_filter_max = 0  # force the inverted file with an id selector
    assert same(ivf.search(queries, 8, allowed=allowed), want)
    ranged = ivf.range_search(queries, 0.6, allowed=allowed)
    assert same(ranged, exact.range_search(queries, 0.6, allowed=allowed))


def test_everyone_within_the_radius_is_returned_not_only_k() -> None:
    rng = np.random.default_rng(5)
    crowd = distances.prepare(rng.normal(size=(5000, DIM)))
    centre = crowd[0]
    person = distances.prepare(centre + rng.normal(size=(400, DIM)) * 0.012)
    ivf = IvfIndex(DIM, train_min=1000)
    ivf.add(np.arange(5000, dtype=np.int64), crowd)
    ivf.add(np.arange(10_000, 10_400, dtype=np.int64), person)
    found = ivf.range_search(centre[None, :], 0.3)[0]
    assert set(range(10_000, 10_400)) <= set(found.ids.tolist())


def test_add_and_remove_after_training() -> None:
    ivf, exact, _ = pair(nprobe=10_000)
    extra = clustered(50, people=5, seed=9)
    extra_ids = np.arange(100_000, 100_050, dtype=np.int64)
    for index in (ivf, exact):
        index.add(extra_ids, extra)
        index.remove(extra_ids[:25])
    assert len(ivf) == len(exact) == 3025
    assert same(ivf.search(extra, 5), exact.search(extra, 5))


def test_save_load_round_trip_and_old_versions_cleaned(tmp_path: Path) -> None:
    ivf, _, vectors = pair()
    path = tmp_path / "ivf-model"
    ivf.save(path, epoch=3)
    ivf.save(path, epoch=4)
    loaded, epoch = IvfIndex.load(path)
    assert epoch == 4 and loaded.trained and len(loaded) == len(ivf)
    assert (loaded.nprobe, loaded.train_min) == (ivf.nprobe, 500)  # settings travel along
    assert same(loaded.search(vectors[:5], 5), ivf.search(vectors[:5], 5))
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_trained_again_when_the_collection_has_grown() -> None:
    ivf = IvfIndex(DIM, train_min=500, retrain_growth=4.0)
    vectors = clustered(4000, people=300)
    ivf.add(np.arange(600), vectors[:600])
    first = ivf.lists
    ivf.add(np.arange(600, 4000), vectors[600:])
    assert 0 < first < ivf.lists and len(ivf) == 4000
    found = ivf.search(vectors[3999:], 1)[0]
    assert found.ids.tolist() == [3999]
