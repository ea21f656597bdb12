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
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = [
    "ERASE_UNNAMED_FMR",
    "MATCH_FMR",
    "OPTOUT_FMR",
    "Calibration",
    "CalibrationError",
    "FmrEstimate",
    "Thresholds",
    "build_calibration",
    "calibration_for",
    "fmr_at",
    "resolve_threshold",
    "shipped_calibration",
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
class Thresholds:
    """A model's default thresholds (distances), read from its calibration table."""

    #: Largest distance that counts as a match (a search's default).
    match: float
    #: An opted-out face blocks every face at most this far from it.
    optout: float
    #: Erasing a person also erases the unnamed faces at most this far from one of theirs.
    erase_unnamed: float


@dataclass(frozen=True)
class Calibration:
    """One model's table: measured (distance, rate) points, the fitted tail, thresholds."""

    model: str
    made_from: str
    impostor_pairs: int
    distances: np.ndarray  # ascending
    fmrs: np.ndarray  # measured share of impostor pairs within each distance
    tail: tuple[float, float]  # log10(fmr) = a + b * distance, below the measurable floor
    #: Thresholds the table records (the shipped dlib table's, chosen by the benches); None:
    #: read at the default rates.
    recorded: Thresholds | None = None

    @property
    def thresholds(self) -> Thresholds:
        """The model's default thresholds: recorded, else read at `MATCH_FMR`, `OPTOUT_FMR`
        and `ERASE_UNNAMED_FMR`, rounded down to 0.001 so none is looser than its rate."""
        if self.recorded is not None:
            return self.recorded
        at = [math.floor(self.threshold_for(fmr) * 1000) / 1000 for fmr in _RATES]
        return Thresholds(*at)

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

    def to_json(self) -> dict[str, Any]:
        """The table as its JSON file holds it (`from_json` reads it back)."""
        return {
            "model": self.model,
            "made_from": self.made_from,
            "impostor_pairs": self.impostor_pairs,
            "method": METHOD,
            "points": [
                [float(d), float(f)] for d, f in zip(self.distances, self.fmrs, strict=True)
            ],
            "tail": {"a": self.tail[0], "b": self.tail[1]},
            "thresholds": {
                "match": self.thresholds.match,
                "optout": self.thresholds.optout,
                "erase_unnamed": self.thresholds.erase_unnamed,
            },
        }

    @classmethod
    def from_json(cls, table: Any, where: str) -> Calibration:
        """A table read back from JSON; `CalibrationError` naming `where` and what is wrong
        if it is not one (a damaged table is refused, never half used)."""
        try:
            points = np.asarray(table["points"], dtype=np.float64)
            calibration = cls(
                model=str(table["model"]),
                made_from=str(table["made_from"]),
                impostor_pairs=int(table["impostor_pairs"]),
                distances=points[:, 0],
                fmrs=points[:, 1],
                tail=(float(table["tail"]["a"]), float(table["tail"]["b"])),
                recorded=_recorded(table.get("thresholds")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise CalibrationError(f"{where} is not a calibration table: {error!r}") from None
        _check(calibration, where)
        return calibration


class CalibrationError(UsageError):
    """A calibration table that cannot be used, or a model that has none."""


#: The false-match rates a model's default thresholds are read at (docs/accuracy.md): a
#: search's match, an opt-out's reach (looser: other photos of the person are blocked too)
#: and the unnamed faces an erasure takes with a person (stricter: strangers' faces go too).
MATCH_FMR = 1e-3
OPTOUT_FMR = 1e-2
ERASE_UNNAMED_FMR = 5e-5
#: Distances (0.20 to 0.80, step 0.005) a table measures the rate at.
GRID = np.round(np.arange(0.20, 0.8001, 0.005), 3)
#: The tail is fitted on the measured rates from the floor up to this one.
TAIL_TOP = 1e-3
METHOD = (
    "measured share of impostor pairs within each distance; below 3 / impostor pairs, "
    "log10(rate) = a + b * distance fitted on the measured rates from that floor to 1e-3"
)


def build_calibration(model: str, made_from: str, impostor: np.ndarray) -> Calibration:
    """The table of `model` from the distances of impostor pairs (photos of two different
    people; any order): the measured rate at each distance of `GRID`, the tail fitted below
    the measurable floor, and thresholds read at `MATCH_FMR`, `OPTOUT_FMR` and
    `ERASE_UNNAMED_FMR`, rounded down to 0.001 so that none is looser than its rate."""
    impostor = np.sort(np.asarray(impostor, dtype=np.float64))
    if len(impostor) < 3 / MATCH_FMR:
        raise CalibrationError(
            f"{len(impostor):,} impostor pairs cannot measure a false-match rate of "
            f"{MATCH_FMR:g} (at least {3 / MATCH_FMR:,.0f} are needed: more labelled photos "
            "of more people)"
        )
    fmrs = np.searchsorted(impostor, GRID, side="right") / len(impostor)
    floor = 3 / len(impostor)
    usable = (fmrs >= floor) & (fmrs <= TAIL_TOP)
    if usable.sum() < 2:
        raise CalibrationError(
            "too few measured rates between the floor and 1e-3 to fit the tail: the "
            "impostor distances fall outside 0.2..0.8"
        )
    b, a = np.polyfit(GRID[usable], np.log10(fmrs[usable]), 1)
    return Calibration(
        model=model,
        made_from=made_from,
        impostor_pairs=len(impostor),
        distances=GRID.astype(np.float64),
        fmrs=fmrs,
        tail=(float(a), float(b)),
    )


def _recorded(thresholds: Any) -> Thresholds | None:
    if thresholds is None:
        return None
    return Thresholds(
        float(thresholds["match"]), float(thresholds["optout"]), float(thresholds["erase_unnamed"])
    )


_RATES = (MATCH_FMR, OPTOUT_FMR, ERASE_UNNAMED_FMR)


def _check(calibration: Calibration, where: str) -> None:
    """Refuse a table whose numbers cannot be one (read from a file or a catalogue)."""
    problems = []
    if calibration.impostor_pairs < 1:
        problems.append("no impostor pairs")
    if len(calibration.distances) < 2 or np.any(np.diff(calibration.distances) <= 0):
        problems.append("distances not ascending")
    if np.any(np.diff(calibration.fmrs) < 0) or not np.all(
        (calibration.fmrs >= 0) & (calibration.fmrs <= 1)
    ):
        problems.append("rates not rising within 0..1")
    if not calibration.tail[1] > 0:
        problems.append("a tail that does not fall with the distance")
    t = calibration.thresholds
    if not 0 < t.erase_unnamed <= t.match <= t.optout <= 2:
        problems.append("thresholds not 0 < erase_unnamed <= match <= optout <= 2")
    if problems:
        raise CalibrationError(f"{where} is not a usable calibration table: {'; '.join(problems)}")


@functools.lru_cache(maxsize=4)
def shipped_calibration(model: str) -> Calibration | None:
    """The table shipped for `model` (`calibration/<model>.json`), or None."""
    try:
        file = resources.files("iddetective.matching").joinpath(f"calibration/{model}.json")
        text = file.read_text()
    except FileNotFoundError:
        return None
    return Calibration.from_json(json.loads(text), f"the shipped table of {model}")


def calibration_for(model: str = DEFAULT_MODEL) -> Calibration:
    """The shipped table of `model`; `CalibrationError` if there is none."""
    table = shipped_calibration(model)
    if table is None:
        raise CalibrationError(f"no calibration table for the model {model!r}")
    return table


def fmr_at(distance: float, model: str = DEFAULT_MODEL) -> FmrEstimate:
    """The estimated false-match rate of a distance (see `Calibration.fmr_at`)."""
    return calibration_for(model).fmr_at(distance)


def threshold_for_fmr(fmr: float, model: str = DEFAULT_MODEL) -> float:
    """The match threshold that keeps the estimated false-match rate at or under `fmr`."""
    return calibration_for(model).threshold_for(fmr)


def resolve_threshold(
    threshold: float | None, max_fmr: float | None, table: Calibration | None, model: str
) -> float:
    """The match threshold from a distance or a false-match rate (not both); the table's
    match threshold when neither is given. Without a table (a model nobody calibrated) only
    an explicit distance will do."""
    if threshold is not None and max_fmr is not None:
        raise UsageError("give --threshold or --max-fmr, not both")
    if threshold is not None:
        return threshold
    if table is None:
        raise CalibrationError(
            f"the model {model!r} has no calibration table, so no default threshold: give "
            f"--threshold, or run `iddetective calibrate LABELS.csv` with this model first"
        )
    return table.threshold_for(max_fmr) if max_fmr is not None else table.thresholds.match
