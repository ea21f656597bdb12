"""A second detector tried only where the first finds no face (docs/accuracy.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from iddetective.cli import main
from iddetective.faces.imaging import read_photo_bytes
from iddetective.faces.pipeline import FacePipeline, PipelineSettings

from support.facesets import require_set

pytestmark = pytest.mark.faces

#: lfw_dev photos in which HOG (upsample 1) finds no face and dlib's CNN detector finds one.
MISSED_BY_HOG = ("images/David_Wells_0007.jpg", "images/Hamid_Karzai_0006.jpg")


def test_cnn_finds_the_faces_hog_misses() -> None:
    folder = require_set("lfw_dev")
    hog = FacePipeline(PipelineSettings())
    both = FacePipeline(PipelineSettings(fallback_detector="dlib-cnn"))
    for name in MISSED_BY_HOG:
        data = read_photo_bytes(str(folder / name))
        assert hog.analyse(data, name).faces == ()
        found = both.analyse(data, name).faces
        assert len(found) == 1 and found[0].embedding.shape == (128,)


def test_index_takes_the_option(tmp_path: Path) -> None:
    folder = require_set("lfw_dev")
    photo = str(folder / MISSED_BY_HOG[0])
    data = str(tmp_path / "d")
    plain = CliRunner().invoke(main, ["index", photo, "--data", data])
    assert "0 photos (0 faces), 1 with no face" in plain.output.replace("indexed ", "")
    again = CliRunner().invoke(
        main, ["index", photo, "--data", data + "2", "--fallback-detector", "dlib-cnn"]
    )
    assert again.exit_code == 0 and "indexed 1 photos (1 faces)" in again.output
