"""Calibrated scores: what false-match rate a distance corresponds to, and back.

A shipped table per embedding model (`calibration/<model>.json`, made by bench/calibrate.py)
holds the share of impostor pairs (photos of two different people) within each distance on a
labelled set. A distance then reads as "about 1 in N comparisons with a stranger come this
close", and a threshold can be chosen for a stated rate (`--max-fmr`). A rate can only be
measured down to about 3 / (impostor pairs in the data); below that the table's tail is an
extrapolation (a straight line through log10(rate) against distance, fitted on the measured
tail), and every estimate says whether it is one. docs/accuracy.md tells how the table was made.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..errors import UsageError
from . import distances

__all__ = [
    "Calibration",
    "FmrEstimate",
    "calibration_for",
    "fmr_at",
    "resolve_threshold",
    "threshold_for_fmr",
]

DEFAULT_MODEL = "dlib-resnet-v1"


@dataclass(frozen=True)
class FmrEstimate:
    """The estimated false-match rate at a distance, and whether it is extrapolated."""

    fmr: float
    extrapolated: bool

    @property
    def one_in(self) -> int:
        """N in "1 in N" (at least 1)."""
        return max(1, round(1 / self.fmr)) if self.fmr > 0 else 2**63 - 1

    def describe(self) -> str:
        """`≈ 1 in 12,000`, with "(extrapolated)" where the data could not measure it."""
        text = f"≈ 1 in {self.one_in:,}"
        return f"{text} (extrapolated)" if self.extrapolated else text


@dataclass(frozen=True)
class Calibration:
    """One model's table: measured (distance, rate) points and the fitted tail."""

    model: str
    made_from: str
    impostor_pairs: int
    distances: np.ndarray  # ascending
    fmrs: np.ndarray  # measured share of impostor pairs within each distance
    tail: tuple[float, float]  # log10(fmr) = a + b * distance, below the measurable floor

    @property
    def floor(self) -> float:
        """The smallest rate the data can measure: 3 / impostor pairs."""
        return 3 / self.impostor_pairs

    def fmr_at(self, distance: float) -> FmrEstimate:
        """The rate at `distance`: interpolated on the measured points (in log10 rate),
        extrapolated by the tail where the measured rate is under the floor."""
        measured = self.fmrs >= self.floor
        if distance >= self.distances[measured][0]:
            logs = np.log10(self.fmrs[measured])
            value = float(np.interp(distance, self.distances[measured], logs))
            return FmrEstimate(min(1.0, 10**value), False)
        a, b = self.tail
        return FmrEstimate(10 ** (a + b * distance), True)

    def threshold_for(self, fmr: float) -> float:
        """The largest distance whose estimated rate is at most `fmr`."""
        if not 0 < fmr < 1:
            raise UsageError(f"--max-fmr must be between 0 and 1 (e.g. 1e-4), not {fmr}")
        measured = self.fmrs >= self.floor
        if fmr >= self.fmrs[measured][0]:
            logs = np.log10(self.fmrs[measured])
            return float(np.interp(math.log10(fmr), logs, self.distances[measured]))
        a, b = self.tail
        return (math.log10(fmr) - a) / b


@functools.lru_cache(maxsize=4)
def calibration_for(model: str = DEFAULT_MODEL) -> Calibration:
    """The shipped table of `model`; `UsageError` if there is none."""
    try:
        table = resources.files("iddetective.matching").joinpath(f"calibration/{model}.json")
        text = table.read_text()
    except FileNotFoundError:
        raise UsageError(f"no calibration table for the model {model!r}") from None
    table = json.loads(text)
    points = np.asarray(table["points"], dtype=np.float64)
    return Calibration(
        model=table["model"],
        made_from=table["made_from"],
        impostor_pairs=int(table["impostor_pairs"]),
        distances=points[:, 0],
        fmrs=points[:, 1],
        tail=(float(table["tail"]["a"]), float(table["tail"]["b"])),
    )


def fmr_at(distance: float, model: str = DEFAULT_MODEL) -> FmrEstimate:
    """The estimated false-match rate of a distance (see `Calibration.fmr_at`)."""
    return calibration_for(model).fmr_at(distance)


def threshold_for_fmr(fmr: float, model: str = DEFAULT_MODEL) -> float:
    """The match threshold that keeps the estimated false-match rate at or under `fmr`."""
    return calibration_for(model).threshold_for(fmr)


def resolve_threshold(
    threshold: float | None, max_fmr: float | None, model: str = DEFAULT_MODEL
) -> float:
    """The match threshold from a distance or a false-match rate (not both); the default
    (`distances.DEFAULT_THRESHOLD`) when neither is given."""
    if threshold is not None and max_fmr is not None:
        raise UsageError("give --threshold or --max-fmr, not both")
    if max_fmr is not None:
        return threshold_for_fmr(max_fmr, model)
    return distances.DEFAULT_THRESHOLD if threshold is None else threshold
