"""The one distance (matching/distances.py): exact where it matters most, near zero."""

from __future__ import annotations

import numpy as np

from iddetective.matching import distances


def unit_vectors(count: int, seed: int) -> np.ndarray:
    return distances.prepare(np.random.default_rng(seed).normal(size=(count, 128)))


def test_a_face_compared_with_itself_is_zero_apart() -> None:
    """The expansion |q|^2 + |g|^2 - 2 q.g cancels near zero: in float32 two copies of
    one unit vector read ~5e-4 apart (what a search for a photo of the catalogue showed
    once embeddings came from ONNX Runtime). They are 0."""
    vectors = unit_vectors(500, 1)
    matrix = distances.euclidean_many(vectors, vectors)
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(np.diag(matrix), 0.0)


def test_every_distance_is_the_norm_of_the_difference() -> None:
    """Far, close and near-duplicate pairs alike, within float32 rounding of the distance
    (the expansion's error, ~1e-6 above 0.1, is far below any threshold's resolution)."""
    gallery = unit_vectors(300, 2)
    rng = np.random.default_rng(3)
    near = distances.prepare(gallery[:100] + rng.normal(scale=1e-3, size=(100, 128)))
    close = distances.prepare(gallery[:100] + rng.normal(scale=0.02, size=(100, 128)))
    queries = np.concatenate([near, close, unit_vectors(100, 4)])
    expected = np.linalg.norm(
        queries.astype(np.float64)[:, None, :] - gallery.astype(np.float64)[None, :, :], axis=2
    )
    found = distances.euclidean_many(queries, gallery)
    assert expected.min() < 0.02  # near-duplicates are among them
    np.testing.assert_allclose(found, expected, atol=5e-6)
    near_ones = expected < 0.1
    np.testing.assert_allclose(found[near_ones], expected[near_ones], atol=1e-6)
