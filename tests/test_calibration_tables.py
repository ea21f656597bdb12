"""Calibration tables made and read back (matching/calibration.py): the method, the
thresholds read at their rates, and the refusal of what is not a table."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from iddetective.matching.calibration import (
    ERASE_UNNAMED_FMR,
    GRID,
    MATCH_FMR,
    OPTOUT_FMR,
    Calibration,
    CalibrationError,
    build_calibration,
    calibration_for,
    resolve_threshold,
)


def impostors(count: int = 400_000, seed: int = 5) -> np.ndarray:
    """Impostor distances shaped like a face model's: most near 1, a thin tail towards 0.3."""
    return np.random.default_rng(seed).normal(1.0, 0.17, count)


def test_a_table_is_the_measured_share_within_each_distance() -> None:
    distances = impostors()
    table = build_calibration("m", "synthetic", distances)
    expected = [(distances <= d).mean() for d in GRID]
    assert np.allclose(table.fmrs, expected) and table.impostor_pairs == len(distances)
    assert table.floor == pytest.approx(3 / len(distances))
    below = table.fmr_at(float(np.quantile(distances, 1e-6)))
    assert below.extrapolated and 0 < below.fmr < table.floor


def test_thresholds_are_read_at_their_rates_and_never_looser() -> None:
    table = build_calibration("m", "synthetic", impostors())
    t = table.thresholds
    for threshold, rate in ((t.match, MATCH_FMR), (t.optout, OPTOUT_FMR)):
        assert table.fmr_at(threshold).fmr <= rate * 1.0001
        assert threshold >= table.threshold_for(rate) - 0.001
        assert math.isclose(threshold * 1000, round(threshold * 1000))
    assert table.fmr_at(t.erase_unnamed).fmr <= ERASE_UNNAMED_FMR * 1.0001
    assert t.erase_unnamed < t.match < t.optout


def test_a_table_reads_back_from_its_json_unchanged() -> None:
    table = build_calibration("m", "synthetic", impostors())
    again = Calibration.from_json(table.to_json(), "a test")
    assert again.to_json() == table.to_json() and again.thresholds == table.thresholds
    shipped = calibration_for()
    assert Calibration.from_json(shipped.to_json(), "a test").thresholds == shipped.thresholds


def test_too_few_impostor_pairs_cannot_measure_the_match_rate() -> None:
    with pytest.raises(CalibrationError, match=r"2,000 impostor pairs cannot measure"):
        build_calibration("m", "a few photos", impostors(2_000))


def damaged(change: str) -> dict[str, Any]:
    table = calibration_for().to_json()
    if change == "missing":
        del table["tail"]
    elif change == "unsorted":
        table["points"] = table["points"][::-1]
    elif change == "rates":
        table["points"][5][1] = 2.0
    elif change == "tail":
        table["tail"]["b"] = -1.0
    elif change == "thresholds":
        table["thresholds"]["match"] = 0.9
    elif change == "not a table":
        return {"model": "m"}
    return table


@pytest.mark.parametrize(
    "change", ["missing", "unsorted", "rates", "tail", "thresholds", "not a table"]
)
def test_a_damaged_table_is_refused_naming_where_it_is(change: str) -> None:
    with pytest.raises(CalibrationError, match="the catalogue's table of m"):
        Calibration.from_json(damaged(change), "the catalogue's table of m")


def test_without_a_table_only_an_explicit_threshold_will_do() -> None:
    assert resolve_threshold(0.3, None, None, "mine") == 0.3
    with pytest.raises(CalibrationError, match=r"'mine' has no calibration table.*--threshold"):
        resolve_threshold(None, None, None, "mine")
    with pytest.raises(CalibrationError, match="no calibration table"):
        resolve_threshold(None, 1e-4, None, "mine")
    table = replace(calibration_for(), model="mine")
    assert resolve_threshold(None, 1e-3, table, "mine") == pytest.approx(
        table.threshold_for(1e-3)
    )
