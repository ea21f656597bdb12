"""The shipped calibration table: distance ↔ false-match rate, and --max-fmr."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from iddetective.cli import main
from iddetective.errors import UsageError
from iddetective.matching import calibration, distances

from support.facesets import WebCatalogue, copy_data

pytestmark = pytest.mark.faces


def test_the_table_is_monotonic_and_agrees_with_the_default_threshold() -> None:
    table = calibration.calibration_for()
    assert np.all(np.diff(table.distances) > 0) and np.all(np.diff(table.fmrs) >= 0)
    assert table.impostor_pairs > 1_000_000
    # The default threshold was chosen at 1e-3 on the same data (bench/threshold.py).
    assert calibration.fmr_at(distances.DEFAULT_THRESHOLD).fmr == pytest.approx(1e-3, rel=0.1)
    assert calibration.threshold_for_fmr(1e-3) == pytest.approx(
        distances.DEFAULT_THRESHOLD, abs=0.003
    )
    assert calibration.fmr_at(distances.OPTOUT_THRESHOLD).fmr == pytest.approx(1e-2, rel=0.1)


@pytest.mark.parametrize("fmr", [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8])
def test_rate_and_threshold_are_inverse(fmr: float) -> None:
    threshold = calibration.threshold_for_fmr(fmr)
    assert calibration.fmr_at(threshold).fmr == pytest.approx(fmr, rel=1e-6)


def test_rates_under_what_the_data_can_measure_are_marked_extrapolated() -> None:
    table = calibration.calibration_for()
    deep = calibration.fmr_at(calibration.threshold_for_fmr(table.floor / 10))
    assert deep.extrapolated and "(extrapolated)" in deep.describe()
    measured = calibration.fmr_at(0.35)
    assert not measured.extrapolated and measured.describe().startswith("≈ 1 in ")


def test_bad_rates_and_both_options_are_usage_errors() -> None:
    for bad in (0.0, 1.0, -1e-3, 2.0):
        with pytest.raises(UsageError, match="--max-fmr must be between 0 and 1"):
            calibration.threshold_for_fmr(bad)
    with pytest.raises(UsageError, match="not both"):
        calibration.resolve_threshold(0.3, 1e-4)
    assert calibration.resolve_threshold(None, None) == distances.DEFAULT_THRESHOLD


def test_search_shows_the_rate_and_takes_max_fmr(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    probe = next(p for p in web_catalogue.probes if p.person == "biden").path
    data = str(copy_data(web_catalogue.data_dir, tmp_path / "data"))  # searches are audited
    shown = CliRunner().invoke(main, ["search", probe, "--data", data])
    assert (
        shown.exit_code == 0
        and "strangers this close" in shown.output
        and "≈ 1 in " in shown.output
    )
    strict = CliRunner().invoke(
        main, ["search", probe, "--data", data, "--max-fmr", "1e-9", "--json"]
    )
    result = json.loads(strict.output)
    assert result["threshold"] == pytest.approx(calibration.threshold_for_fmr(1e-9))
    match = result["faces"][0]["matches"][0]
    assert {"fmr", "fmr_extrapolated"} <= match.keys() and 0 < match["fmr"] <= 1
    both = CliRunner().invoke(
        main, ["search", probe, "--data", data, "--max-fmr", "1e-4", "--threshold", "0.3"]
    )
    assert both.exit_code == 2 and "not both" in both.output


def test_the_table_file_says_how_it_was_made() -> None:
    path = Path(calibration.__file__).parent / "calibration" / "dlib-resnet-v1.json"
    table = json.loads(path.read_text())
    assert "lfw_dev" in table["made_from"] and "bench/calibrate.py" in table["made_from"]
    assert table["method"] and set(table["tail"]) == {"a", "b"}
