"""A worker process that dies on one photo costs that photo only, never the run."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from iddetective.catalogue import Catalogue
from iddetective.faces import PipelineSettings

from conftest import read_labels, require_set


def test_photo_that_crashes_a_worker_fails_alone(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for row in read_labels(require_set("lfw_dev"))[:8]:
        shutil.copy2(row.path, folder)
    poison = folder / "black.png"
    Image.new("RGB", (120, 120)).save(poison)
    settings = PipelineSettings(detector="crashing_detector:CrashingDetector")
    with Catalogue(tmp_path / "data", create=True, pipeline=settings) as catalogue:
        report = catalogue.index([str(folder)], workers=2)
        assert [(f.path, f.reason) for f in report.failed] == [
            (str(poison), "the face pipeline crashed the worker process on this photo")
        ]
        assert report.indexed + report.no_face == 8
        assert catalogue.stats().photos == 8
