"""The shipped calibration table: distance ↔ false-match rate, and --max-fmr."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.errors import UsageError
from iddetective.faces.pipeline import PipelineSettings
from iddetective.matching import calibration
from iddetective.matching.calibration import CalibrationError, calibration_for
from iddetective.matching.search import to_json

from support.facesets import WebCatalogue, copy_data, require_set

pytestmark = pytest.mark.faces


def test_the_table_is_monotonic_and_agrees_with_the_default_threshold() -> None:
    table = calibration.calibration_for()
    assert np.all(np.diff(table.distances) > 0) and np.all(np.diff(table.fmrs) >= 0)
    assert table.impostor_pairs > 1_000_000
    # The default threshold was chosen at 1e-3 on the same data (bench/threshold.py).
    match, optout = table.thresholds.match, table.thresholds.optout
    assert calibration.fmr_at(match).fmr == pytest.approx(1e-3, rel=0.1)
    assert calibration.threshold_for_fmr(1e-3) == pytest.approx(match, abs=0.003)
    assert calibration.fmr_at(optout).fmr == pytest.approx(1e-2, rel=0.1)


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
    table = calibration.calibration_for()
    with pytest.raises(UsageError, match="not both"):
        calibration.resolve_threshold(0.3, 1e-4, table, table.model)
    assert calibration.resolve_threshold(None, None, table, table.model) == 0.383


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


RENAMED = "support.renamed_embedder:RenamedEmbedder"


def test_a_model_nobody_calibrated_needs_an_explicit_threshold(tmp_path: Path) -> None:
    photos = require_set("face_recognition") / "images"
    probe = str(next(p for p in sorted(photos.rglob("*")) if p.is_file()))
    with Catalogue(
        tmp_path / "data", create=True, pipeline=PipelineSettings(embedder=RENAMED)
    ) as catalogue:
        catalogue.index([str(photos)])
        assert catalogue.model == "dlib-renamed" and catalogue.calibration is None
        with pytest.raises(CalibrationError, match="iddetective calibrate"):
            catalogue.search_photo(probe)
        with pytest.raises(CalibrationError, match="no calibration table"):
            catalogue.preview_optout(probe)
        result = catalogue.search_photo(probe, threshold=0.4)
        document = to_json(result)
        matches = [m for face in document["faces"] for m in face["matches"]]
        assert matches and all("fmr" not in m for m in matches)
        table = replace(calibration_for(), model="dlib-renamed", made_from="their photos")
        catalogue.save_calibration(table)
        calibrated = to_json(catalogue.search_photo(probe))
        assert calibrated["threshold"] == 0.383
        assert all("fmr" in m for face in calibrated["faces"] for m in face["matches"])
        assert catalogue.preview_optout(probe).within == 0.43


def test_calibrate_keeps_a_table_made_from_the_operators_photos(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    data = str(copy_data(web_catalogue.data_dir, tmp_path / "data"))
    labels = str(require_set("orl_att") / "labels.csv")
    cache = str(tmp_path / "cache")
    printed = CliRunner().invoke(
        main, ["calibrate", labels, "--data", data, "--cache", cache, "--workers", "2", "--print"]
    )
    assert printed.exit_code == 0, printed.output
    shown = json.loads(printed.stdout)
    assert shown["model"] == "dlib-resnet-v1" and "iddetective calibrate" in shown["made_from"]
    with Catalogue(data) as catalogue:
        assert catalogue.store.calibration("dlib-resnet-v1") is None  # --print keeps nothing
    kept = CliRunner().invoke(main, ["calibrate", labels, "--data", data, "--cache", cache])
    assert kept.exit_code == 0 and "thresholds: match" in kept.output, kept.output
    with Catalogue(data) as catalogue:
        table = catalogue.calibration
        assert table is not None and table.to_json() == shown
        assert table.impostor_pairs > 10_000 and 0.3 < table.thresholds.match < 0.5
        assert catalogue.thresholds == table.thresholds != calibration_for().thresholds
    probe = next(p for p in web_catalogue.probes if p.person == "biden").path
    searched = CliRunner().invoke(main, ["search", probe, "--data", data, "--json"])
    assert json.loads(searched.output)["threshold"] == table.thresholds.match
    with Catalogue(data) as catalogue:
        kinds = [(e.kind, e.query_text) for e in catalogue.audit(limit=5)]
    assert kinds[:2] == [("photo", None), ("calibration", "dlib-resnet-v1")]


def test_calibrate_refuses_too_few_photos(web_catalogue: WebCatalogue, tmp_path: Path) -> None:
    data = str(copy_data(web_catalogue.data_dir, tmp_path / "data"))
    labels = str(require_set("face_recognition") / "labels.csv")
    few = CliRunner().invoke(
        main, ["calibrate", labels, "--data", data, "--cache", str(tmp_path / "cache")]
    )
    assert few.exit_code == 2 and "impostor pairs cannot measure" in few.output, few.output
