"""Accuracy figures for face verification and search, from distances and labels.

Pure functions over numpy arrays, used by `iddetective eval`, the calibration table and the
benchmarks: the best single threshold, 10-fold pair accuracy as in the LFW protocol, all
genuine and impostor distances of a labelled set, thresholds at a false-match rate, the
share of distances under a threshold, ROC points and the true-accept rate at a false-accept
rate, and the identification figures (rank-k, and the detection-and-identification rate at
a false-alarm rate for open-set search). tests/test_metrics.py checks them on cases small
enough to compute by hand.

A photo where no face was found is a NaN distance. The verification and identification
figures count it as the system would answer: never a match. So it is an error for a genuine
pair and for a probe of an enrolled person, and stays in every denominator (the
"generalised" rates of ISO/IEC 19795-1).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..matching import distances

__all__ = [
    "FOLDS",
    "MIN_ERRORS",
    "all_pairs",
    "best_threshold",
    "dir_at_fpir",
    "enough_trials",
    "identification_ranks",
    "kfold_accuracy",
    "missing_pairs",
    "pairwise_scores",
    "rate_at",
    "roc_points",
    "stratified_folds",
    "tar_at_far",
    "threshold_at_fmr",
]

#: Folds of the LFW protocol: each fold's threshold is chosen on the other nine.
FOLDS = 10

#: A rate is only reported where the data holds at least this many errors at that rate.
MIN_ERRORS = 3


def best_threshold(dist: np.ndarray, same: np.ndarray) -> tuple[float, int]:
    """The threshold that classifies most of these (face-complete) pairs right, and how many."""
    order = np.argsort(dist, kind="stable")
    ordered, genuine = dist[order], same[order]
    # Accepting the k nearest pairs: right = genuine among them + impostors beyond them.
    genuine_in = np.concatenate([[0], np.cumsum(genuine)])
    impostor_in = np.concatenate([[0], np.cumsum(~genuine)])
    right = genuine_in + (impostor_in[-1] - impostor_in)
    # Only split between distinct distances.
    valid = np.ones(len(right), dtype=bool)
    valid[1:-1] = ordered[1:] > ordered[:-1]
    k = int(np.argmax(np.where(valid, right, -1)))
    if k == 0:
        threshold = float(ordered[0]) - 1e-6 if len(ordered) else 0.0
    elif k == len(ordered):
        threshold = float(ordered[-1])
    else:
        threshold = float((ordered[k - 1] + ordered[k]) / 2)
    return threshold, int(right[k])


def stratified_folds(same: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Fold number of each pair: the n-th pair of each kind goes to fold n % folds."""
    fold = np.empty(len(same), dtype=int)
    for kind in (True, False):
        where = np.flatnonzero(same == kind)
        fold[where] = np.arange(len(where)) % folds
    return fold


def kfold_accuracy(
    dist: np.ndarray, same: np.ndarray, missing_is_error: bool = True
) -> tuple[float, float]:
    """Mean and sd of the 10 test-fold accuracies.

    A pair with a missing face is an error, or (`missing_is_error=False`) answered "no match",
    which is right for an impostor pair.
    """
    fold = stratified_folds(same)
    present = ~np.isnan(dist)
    scores = []
    for k in range(FOLDS):
        train, test = (fold != k) & present, fold == k
        threshold, _ = best_threshold(dist[train], same[train])
        match = present[test] & (dist[test] <= threshold)
        right = match == same[test]
        if missing_is_error:
            right &= present[test]
        scores.append(right.mean())
    return float(np.mean(scores)), float(np.std(scores))


def all_pairs(vectors: np.ndarray, people: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distances of all genuine and of all impostor pairs among photos with a face."""
    keep = ~np.isnan(vectors[:, 0])
    vectors = vectors[keep]
    _, ids = np.unique(np.asarray(people)[keep], return_inverse=True)
    genuine: list[np.ndarray] = []
    impostor: list[np.ndarray] = []
    for start in range(0, len(vectors), 512):
        block = distances.euclidean_many(vectors[start : start + 512], vectors)
        for row, dist in enumerate(block):
            i = start + row
            later, same = dist[i + 1 :], ids[i + 1 :] == ids[i]
            genuine.append(later[same])
            impostor.append(later[~same])
    return np.sort(np.concatenate(genuine)), np.sort(np.concatenate(impostor))


def threshold_at_fmr(impostor: np.ndarray, fmr: float) -> float | None:
    """The largest impostor distance that keeps the false-match rate at or under `fmr`."""
    accepted = math.floor(fmr * len(impostor) + 1e-9)
    return float(impostor[accepted - 1]) if accepted >= 1 else None


def rate_at(sorted_distances: np.ndarray, threshold: float) -> float:
    """Share of these (sorted) distances at or under `threshold`."""
    if len(sorted_distances) == 0:
        return float("nan")
    return np.searchsorted(sorted_distances, threshold, side="right") / len(sorted_distances)


def missing_pairs(found: np.ndarray, people: Sequence[str]) -> tuple[int, int]:
    """How many genuine and impostor pairs of these photos involve a photo with no face."""
    _, ids = np.unique(np.asarray(people), return_inverse=True)
    photos = np.bincount(ids)
    with_face = np.bincount(ids, weights=found.astype(float)).astype(int)
    genuine = int((photos * (photos - 1) // 2).sum())
    genuine_found = int((with_face * (with_face - 1) // 2).sum())
    total, total_found = len(found) * (len(found) - 1) // 2, int(found.sum())
    impostor = total - genuine
    impostor_found = total_found * (total_found - 1) // 2 - genuine_found
    return genuine - genuine_found, impostor - impostor_found


def enough_trials(trials: int, rate: float, errors: int = MIN_ERRORS) -> bool:
    """Whether `trials` comparisons can measure `rate`: at least `errors` would be wrong there."""
    return trials * rate >= errors - 1e-9


def roc_points(dist: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-accept rate, true-accept rate and threshold at each distinct distance.

    A pair is accepted when its distance is at or under the threshold; a pair with a missing
    face (NaN) is never accepted. Rates are shares of all genuine / impostor pairs.
    """
    present = ~np.isnan(dist)
    order = np.argsort(dist[present], kind="stable")
    ordered, genuine = dist[present][order], same[present][order]
    last = np.append(ordered[1:] != ordered[:-1], True)  # the last pair at each distance
    tar = np.cumsum(genuine)[last] / max(int(same.sum()), 1)
    far = np.cumsum(~genuine)[last] / max(int((~same).sum()), 1)
    return far, tar, ordered[last]


def tar_at_far(dist: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float]:
    """True-accept rate at the largest threshold whose false-accept rate is at most `far`,
    and that threshold (a missing face, NaN, is never accepted)."""
    present = ~np.isnan(dist)
    impostor = np.sort(dist[present & ~same])
    genuine = np.sort(dist[present & same])
    threshold = _largest_keeping(impostor, math.floor(far * int((~same).sum()) + 1e-9))
    accepted = np.searchsorted(genuine, threshold, side="right")
    return float(accepted / max(int(same.sum()), 1)), threshold


def identification_ranks(
    dist: np.ndarray, probe_people: Sequence[str], gallery_people: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each probe's own person, and the distance to that person's nearest face.

    `dist` holds the distance of every probe (row) to every enrolled face (column); NaN for a
    probe or a face that is missing. People are ordered by their nearest face; rank 1 is the
    nearest, and a tie counts against the probe. A probe with no face, or whose person has no
    enrolled face, has rank and distance inf.
    """
    names, column_person = np.unique(np.asarray(gallery_people), return_inverse=True)
    order = np.argsort(column_person, kind="stable")
    starts = np.flatnonzero(np.append(True, np.diff(column_person[order]) != 0))
    filled = np.where(np.isnan(dist), np.inf, dist)[:, order]
    nearest = np.minimum.reduceat(filled, starts, axis=1) if len(starts) else filled
    where = {name: i for i, name in enumerate(names.tolist())}
    own = np.full(len(probe_people), np.inf)
    ranks = np.full(len(probe_people), np.inf)
    for row, person in enumerate(probe_people):
        column = where.get(person)
        if column is not None and np.isfinite(nearest[row, column]):
            own[row] = nearest[row, column]
            ranks[row] = np.count_nonzero(nearest[row] <= own[row])
    return ranks, own


def dir_at_fpir(
    ranks: np.ndarray, own: np.ndarray, unknown_nearest: np.ndarray, fpir: float
) -> tuple[float, float]:
    """Detection-and-identification rate at a false-positive identification rate, and the
    threshold.

    The threshold is the largest distance at which at most `fpir` of the unknown probes (people
    not enrolled; `unknown_nearest`: each one's nearest enrolled face, inf when it has no face)
    have anyone within it. A probe of an enrolled person is identified when its own person is
    nearest (rank 1) and within the threshold (`ranks`, `own` from `identification_ranks`).
    """
    alarms = np.sort(unknown_nearest[np.isfinite(unknown_nearest)])
    threshold = _largest_keeping(alarms, math.floor(fpir * len(unknown_nearest) + 1e-9))
    identified = (ranks == 1) & (own <= threshold)
    return float(identified.mean()) if len(ranks) else float("nan"), threshold


def _largest_keeping(ordered: np.ndarray, allowed: int) -> float:
    """The largest threshold that accepts at most `allowed` of these sorted distances."""
    if allowed >= len(ordered):
        return math.inf
    return float(np.nextafter(ordered[allowed], -np.inf))


def pairwise_scores(truth: Sequence[object], predicted: Sequence[object]) -> tuple[float, float]:
    """Pairwise precision and recall of a clustering: of the pairs of items put in one
    cluster, the share that truly belong together; of the pairs that truly belong together,
    the share put in one cluster. 1.0 where there are no such pairs."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted label the same items")
    cells = Counter(zip(truth, predicted, strict=True))
    together = sum(n * (n - 1) // 2 for n in cells.values())
    predicted_pairs = sum(n * (n - 1) // 2 for n in Counter(predicted).values())
    true_pairs = sum(n * (n - 1) // 2 for n in Counter(truth).values())
    precision = together / predicted_pairs if predicted_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    return precision, recall
