"""The accuracy metrics on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from iddetective.metrics import (
    all_pairs,
    best_threshold,
    kfold_accuracy,
    rate_at,
    stratified_folds,
    threshold_at_fmr,
)

# Six pairs: distance and whether the two photos show the same person.
DIST = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
SAME = np.array([True, True, False, True, False, False])


def test_best_threshold_by_hand() -> None:
    # Accepting the k nearest pairs gets right: k=0: 3, 1: 4, 2: 5, 3: 4, 4: 5, 5: 4, 6: 3.
    threshold, right = best_threshold(DIST, SAME)
    assert right == 5 and threshold == pytest.approx(0.25)


def test_roc_points_by_hand() -> None:
    genuine, impostor = np.sort(DIST[SAME]), np.sort(DIST[~SAME])
    # At 0.45: genuine 0.1, 0.2, 0.4 accepted (3/3); impostors 0.3 accepted (1/3).
    assert rate_at(genuine, 0.45) == 1.0 and rate_at(impostor, 0.45) == pytest.approx(1 / 3)
    assert rate_at(genuine, 0.15) == pytest.approx(1 / 3) and rate_at(impostor, 0.15) == 0.0
    assert np.isnan(rate_at(np.array([]), 0.5))


def test_threshold_at_a_false_match_rate_by_hand() -> None:
    impostor = np.sort(DIST[~SAME])  # 0.3, 0.5, 0.6
    assert threshold_at_fmr(impostor, 1 / 3) == pytest.approx(0.3)
    assert threshold_at_fmr(impostor, 2 / 3) == pytest.approx(0.5)
    assert threshold_at_fmr(impostor, 0.2) is None  # fewer than one impostor may match


def test_folds_are_stratified() -> None:
    same = np.array([True] * 10 + [False] * 10)
    fold = stratified_folds(same)
    for k in range(10):
        assert sorted(same[fold == k].tolist()) == [False, True]


def test_kfold_accuracy_counts_missing_faces() -> None:
    same = np.array([True] * 10 + [False] * 10)
    dist = np.where(same, 0.2, 0.8).astype(float)
    assert kfold_accuracy(dist, same) == (1.0, 0.0)
    dist[0] = np.nan  # a genuine pair with no face: wrong either way
    dist[10] = np.nan  # an impostor pair with no face: right only as "no match"
    as_errors, _ = kfold_accuracy(dist, same)
    as_no_match, _ = kfold_accuracy(dist, same, missing_is_error=False)
    assert as_errors == pytest.approx(0.9) and as_no_match == pytest.approx(0.95)


def test_all_pairs_by_hand() -> None:
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [np.nan, np.nan]], dtype=np.float32)
    people = ["a", "a", "b", "b"]  # the last photo had no face
    genuine, impostor = all_pairs(vectors, people)
    assert genuine == pytest.approx([np.hypot(0.2, 0.6)])
    assert impostor == pytest.approx(sorted([np.sqrt(2), np.hypot(0.8, 0.4)]))
