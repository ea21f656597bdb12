"""The IVF index past its exact-scan stage: trained, filtered, persisted, updated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iddetective.matching import distances
from iddetective.vector_index import IndexDamaged, IndexMismatch
from iddetective.vector_index.exact import ExactIndex
from iddetective.vector_index.integrity import file_digests, sealed
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


def test_a_trained_index_with_a_damaged_file_is_refused_before_faiss_reads_it(
    tmp_path: Path,
) -> None:
    ivf, _, _ = pair(count=1000)
    path = tmp_path / "ivf"
    ivf.save(path, epoch=2)
    folder = tmp_path / path.read_text()
    for name in ("ivf.faiss", "vectors.npy", "ids.npy", "meta.json"):
        original = (folder / name).read_bytes()
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0x10
        (folder / name).write_bytes(bytes(damaged))
        with pytest.raises(IndexDamaged):
            IvfIndex.load(path)
        (folder / name).write_bytes(original)
    rows = np.load(folder / "vectors.npy")
    rows[[0, 1]] = rows[[1, 0]]  # two faces' vectors swapped: same bytes, other order
    np.save(folder / "vectors.npy", rows)
    with pytest.raises(IndexDamaged, match=r"vectors\.npy is damaged"):
        IvfIndex.load(path)


@pytest.mark.parametrize("pointer", ["..", "../victim", "ABSOLUTE", "ivf.1.x/../..", "", "ivf.1.x"])
def test_a_pointer_naming_anything_but_its_own_folder_is_never_followed_or_deleted(
    tmp_path: Path, pointer: str
) -> None:
    vectors_dir, victim = tmp_path / "data" / "vectors", tmp_path / "data" / "victim"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("precious")
    (tmp_path / "data" / "ivf.1.x").mkdir()  # the right shape, in the wrong folder
    vectors_dir.mkdir()
    index = IvfIndex(DIM)
    index.add(np.arange(3), clustered(3, people=3))
    path = vectors_dir / "ivf"
    path.write_text(str(victim) if pointer == "ABSOLUTE" else pointer)
    with pytest.raises(IndexMismatch):
        IvfIndex.load(path)
    index.save(path, epoch=1)  # replaces the pointer: deletes what it named only if its own
    assert (victim / "keep.txt").read_text() == "precious"
    assert (tmp_path / "data" / "ivf.1.x").is_dir() and (tmp_path / "data").is_dir()
    assert len(IvfIndex.load(path)[0]) == 3


def test_a_symlinked_index_folder_is_refused(tmp_path: Path) -> None:
    index = IvfIndex(DIM)
    index.add(np.arange(3), clustered(3, people=3))
    path = tmp_path / "ivf"
    index.save(path, epoch=1)
    outside = tmp_path / "outside"
    (tmp_path / path.read_text()).rename(outside)
    (tmp_path / "ivf.1.link").symlink_to(outside)
    path.write_text("ivf.1.link")
    with pytest.raises(IndexMismatch):
        IvfIndex.load(path)
    index.save(path, epoch=2)
    assert outside.is_dir()  # a symlink is never followed to delete


def test_an_inverted_file_of_another_dimension_than_its_vectors_is_refused(
    tmp_path: Path,
) -> None:
    """Each file of a saved index intact, sealed in its metadata, but the faiss file trained
    for other vectors: refused before any search compares the two."""
    rng = np.random.default_rng(0)
    for dimension in (64, 32):
        index = IvfIndex(dimension, train_min=100)
        index.add(
            np.arange(200, dtype=np.int64), distances.prepare(rng.normal(size=(200, dimension)))
        )
        index.save(tmp_path / f"d{dimension}", epoch=1)
    wide, narrow = (tmp_path / (tmp_path / name).read_text() for name in ("d64", "d32"))
    (wide / "ivf.faiss").write_bytes((narrow / "ivf.faiss").read_bytes())
    meta = json.loads((wide / "meta.json").read_text())
    meta.pop("seal")
    meta["sha256"] = file_digests(wide, sorted(meta["sha256"]))
    (wide / "meta.json").write_text(sealed(meta))
    with pytest.raises(IndexMismatch, match="inverted file is of dimension 32, its vectors of 64"):
        IvfIndex.load(tmp_path / "d64")
