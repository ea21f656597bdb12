"""Accuracy figures for face verification and search, from distances and labels.

Pure functions over numpy arrays, used by `iddetective eval`, the calibration table and the
benchmarks: the best single threshold, 10-fold pair accuracy as in the LFW protocol, all
genuine and impostor distances of a labelled set, thresholds at a false-match rate, and the
share of distances under a threshold. tests/test_metrics.py checks them on cases small
enough to compute by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from . import distances

__all__ = [
    "FOLDS",
    "all_pairs",
    "best_threshold",
    "kfold_accuracy",
    "rate_at",
    "stratified_folds",
    "threshold_at_fmr",
]

#: Folds of the LFW protocol: each fold's threshold is chosen on the other nine.
FOLDS = 10


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
