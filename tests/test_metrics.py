"""The accuracy metrics on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from iddetective.evaluation.metrics import (
    all_pairs,
    best_threshold,
    dir_at_fpir,
    enough_trials,
    identification_ranks,
    kfold_accuracy,
    missing_pairs,
    rate_at,
    roc_points,
    stratified_folds,
    tar_at_far,
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


def test_roc_points_of_six_pairs_by_hand() -> None:
    far, tar, threshold = roc_points(DIST, SAME)
    # Accepting at or under 0.1 .. 0.6: genuine 0.1, 0.2, 0.4; impostors 0.3, 0.5, 0.6.
    assert threshold == pytest.approx(DIST)
    assert tar == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert far == pytest.approx([0, 0, 1 / 3, 1 / 3, 2 / 3, 1])


def test_roc_points_never_accept_a_missing_face_and_merge_ties() -> None:
    dist = np.array([0.2, 0.2, np.nan, 0.5])
    same = np.array([True, False, True, False])
    far, tar, threshold = roc_points(dist, same)
    assert threshold == pytest.approx([0.2, 0.5])
    assert tar == pytest.approx([0.5, 0.5])  # the genuine pair with no face stays rejected
    assert far == pytest.approx([0.5, 1.0])


def test_tar_at_far_by_hand() -> None:
    # One impostor in three may pass: accept everything under the second impostor, 0.5.
    tar, threshold = tar_at_far(DIST, SAME, 1 / 3)
    assert tar == 1.0 and 0.4 < threshold < 0.5
    # No impostor may pass: accept under the first impostor, 0.3 (genuine 0.1 and 0.2).
    tar, threshold = tar_at_far(DIST, SAME, 0.1)
    assert tar == pytest.approx(2 / 3) and 0.2 < threshold < 0.3
    tar, threshold = tar_at_far(DIST, SAME, 1.0)
    assert tar == 1.0 and threshold == np.inf
    # A genuine pair with a missing face is a rejection at any threshold.
    dist = np.append(DIST, np.nan)
    tar, _ = tar_at_far(dist, np.append(SAME, True), 1 / 3)
    assert tar == pytest.approx(3 / 4)


def test_enough_trials_needs_three_errors_at_the_rate() -> None:
    assert enough_trials(300, 1e-2) and not enough_trials(299, 1e-2)
    assert enough_trials(3000, 1e-3) and not enough_trials(2000, 1e-3)


def test_missing_pairs_by_hand() -> None:
    # a: 3 photos (one without a face), b: 2 photos, c: 1 photo without a face.
    people = ["a", "a", "a", "b", "b", "c"]
    found = np.array([True, True, False, True, True, False])
    # Genuine: a has 3 pairs, 2 with the faceless photo; b has 1, none. Impostor: 15 - 4 = 11
    # pairs; with a face on both sides 2 * 2 (a x b) = 4, so 7 involve a faceless photo.
    assert missing_pairs(found, people) == (2, 7)


# Distances of three probes (rows) to three enrolled faces (columns) of people x, y, z.
GALLERY = ["x", "y", "z"]
PROBES = np.array(
    [
        [0.2, 0.5, 0.6],  # an x: x nearest, rank 1
        [0.3, 0.4, 0.1],  # a y: z and x nearer, rank 3
        [0.7, 0.3, 0.3],  # a z: tied with y, a tie counts against: rank 2
    ]
)


def test_identification_ranks_on_three_by_three_by_hand() -> None:
    ranks, own = identification_ranks(PROBES, ["x", "y", "z"], GALLERY)
    assert ranks.tolist() == [1, 3, 2]
    assert own == pytest.approx([0.2, 0.4, 0.3])
    assert np.mean(ranks <= 1) == pytest.approx(1 / 3)
    assert np.mean(ranks <= 2) == pytest.approx(2 / 3)


def test_identification_ranks_of_missing_faces_and_people() -> None:
    dist = PROBES.copy()
    dist[0] = np.nan  # the probe has no face
    dist[:, 1] = np.nan  # y's enrolled photo has no face
    ranks, own = identification_ranks(dist, ["x", "y", "w"], GALLERY)  # w is not enrolled
    assert ranks.tolist() == [np.inf, np.inf, np.inf] and np.isinf(own).all()


def test_identification_ranks_take_each_persons_nearest_face() -> None:
    # y has two enrolled faces: the nearer one, 0.05, puts y before z (0.1) for the second probe.
    dist = np.column_stack([PROBES, [0.9, 0.05, 0.9]])
    ranks, own = identification_ranks(dist, ["x", "y", "z"], [*GALLERY, "y"])
    assert ranks.tolist() == [1, 1, 2] and own[1] == pytest.approx(0.05)


def test_dir_at_fpir_by_hand() -> None:
    ranks, own = np.array([1, 1, 1, 2]), np.array([0.2, 0.35, 0.5, 0.3])
    unknown = np.array([0.3, 0.4, 0.45, np.inf, 0.6])  # the fourth has no face: never alarms
    # One false alarm in five: accept under the second nearest unknown, 0.4.
    rate, threshold = dir_at_fpir(ranks, own, unknown, 0.2)
    assert rate == pytest.approx(2 / 4) and 0.35 < threshold < 0.4
    # None allowed: under 0.3 only the first probe is identified.
    rate, threshold = dir_at_fpir(ranks, own, unknown, 0.1)
    assert rate == pytest.approx(1 / 4) and threshold < 0.3
    # Four in five may alarm: all four unknowns with a face, so any distance is accepted.
    rate, threshold = dir_at_fpir(ranks, own, unknown, 0.8)
    assert rate == pytest.approx(3 / 4) and threshold == np.inf
