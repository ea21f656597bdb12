"""A worker process that dies on one photo costs that photo only, never the run: indexing and
the evaluation share the crash rule (processes.map_in_processes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from iddetective.catalogue import Catalogue
from iddetective.evaluation.detection_study import compare_detectors
from iddetective.evaluation.evaluate import embed_photos
from iddetective.faces.pipeline import PipelineSettings
from iddetective.ingest.indexing import CRASHED

from support.facesets import read_labels, require_set

pytestmark = pytest.mark.faces


def test_photo_that_crashes_a_worker_fails_alone(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for row in read_labels(require_set("lfw_dev"))[:8]:
        shutil.copy2(row.path, folder)
    poison = folder / "black.png"
    Image.new("RGB", (120, 120)).save(poison)
    settings = PipelineSettings(detector="support.crashing_detector:CrashingDetector")
    with Catalogue(tmp_path / "data", create=True, pipeline=settings) as catalogue:
        report = catalogue.index([str(folder)], workers=2)
        assert [(f.path, f.reason) for f in report.failed] == [
            (str(poison), "the face pipeline crashed the worker process on this photo")
        ]
        assert report.indexed + report.no_face == 8
        assert catalogue.stats().photos == 8


def crashing_folder(tmp_path: Path, photos: int) -> list[str]:
    """`photos` photos of lfw_dev and, among them, one that kills the crashing detector."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for row in read_labels(require_set("lfw_dev"))[:photos]:
        shutil.copy2(row.path, folder)
    Image.new("RGB", (120, 120)).save(folder / "black.png")
    return sorted(str(path) for path in folder.iterdir())


def test_a_photo_that_crashes_an_evaluation_worker_fails_alone(tmp_path: Path) -> None:
    """The evaluation's pool has the indexing pool's crash rule (it used to end the run)."""
    paths = crashing_folder(tmp_path, 5)
    settings = PipelineSettings(detector="support.crashing_detector:CrashingDetector")
    run = embed_photos(paths, 2, tmp_path / "cache", settings=settings)
    errors = {path: photo.error for path, photo in zip(paths, run.photos, strict=True)}
    black = str(tmp_path / "photos" / "black.png")
    assert errors.pop(black) == CRASHED
    assert set(errors.values()) == {""} and len(errors) == 5
    # The detector comparison warms each process up on a black image, which this detector
    # dies of: every photo kills its process, and the comparison still ends, saying so.
    (trial,) = compare_detectors(paths, [settings], workers=2)
    assert (trial.photos, trial.unusable) == (6, 6)
