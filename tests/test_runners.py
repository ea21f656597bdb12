"""The ingestion runner seam: `Catalogue.index(..., runner=...)` plans once, whoever analyses.

The fleet's runner runs against a real Redis and real workers in tests/test_workers.py; here
the local one, and a runner of the test's own that records what the plan handed it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from iddetective.catalogue import Catalogue
from iddetective.entities import Box, FailedPhoto, IndexedPhoto
from iddetective.errors import UsageError
from iddetective.faces.pipeline import PipelineSettings, pipeline_for
from iddetective.ingest.indexing import BatchWriter, Runner, analyse_file, analyse_files
from iddetective.ingest.local import LocalRunner
from iddetective.sources.paths import PhotoJob

from support.facesets import read_labels, require_set

pytestmark = pytest.mark.faces


class Recording:
    """A `LocalRunner` that records the jobs each run handed it."""

    def __init__(self) -> None:
        self.runs: list[list[str]] = []

    def run(
        self, jobs: Sequence[PhotoJob], settings: PipelineSettings, writer: BatchWriter
    ) -> None:
        self.runs.append(sorted(Path(job.path).name for job in jobs))
        LocalRunner().run(jobs, settings, writer)


def photos(folder: Path, count: int) -> list[Path]:
    rows = sorted(read_labels(require_set("face_recognition")), key=lambda r: r.path)
    folder.mkdir()
    copies = []
    for row in rows[:count]:
        copies.append(Path(shutil.copy(row.path, folder / Path(row.path).name)))
    return copies


def test_a_runner_gets_only_what_the_plan_left_and_its_outcomes_make_the_report(
    tmp_path: Path,
) -> None:
    first, second, third = photos(tmp_path / "photos", 3)
    runner: Runner = Recording()
    assert isinstance(runner, Recording)
    second.rename(tmp_path / second.name)  # not there for the first run
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        report = catalogue.index([str(tmp_path / "photos")], runner=runner)
        assert runner.runs == [sorted([first.name, third.name])]
        assert report.indexed + report.no_face == 2 and not report.failed
        (tmp_path / second.name).rename(second)
        os.utime(third, ns=(1, 1))  # changed since it was stored: planned again
        again = catalogue.index([str(tmp_path / "photos")], runner=runner)
        assert runner.runs[1] == sorted([second.name, third.name])
        # The new photo stored; the touched one read again, its bytes known: unchanged.
        assert again.indexed + again.no_face == 1 and again.unchanged == 2
        assert catalogue.stats().photos == 3
        assert again.clustering is not None  # the catalogue clusters after any runner


def test_workers_are_for_the_local_runner(tmp_path: Path) -> None:
    with (
        Catalogue(tmp_path, create=True) as catalogue,
        pytest.raises(UsageError, match="--workers is for a local run"),
    ):
        catalogue.index([str(tmp_path)], workers=2, runner=Recording())
    with pytest.raises(UsageError, match="--workers must be at least 1, not 0"):
        LocalRunner(0)


def test_photos_analysed_together_are_each_what_they_are_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`analyse_files` (a process analysing photos in a row: their faces embedded in one
    batch) gives each photo's analysis alone, within float rounding; a bad file, and a photo
    the embedder fails on, fail alone with their reasons."""
    photos = [row.path for row in read_labels(require_set("face_recognition"))[:5]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    jobs = [PhotoJob(p) for p in [photos[0], str(broken), *photos[1:]]]
    settings = PipelineSettings(model_cache=tmp_path / "models")
    together = analyse_files(jobs, settings)
    alone = [analyse_file(job, settings) for job in jobs]
    assert [type(o) for o in together] == [type(o) for o in alone]
    assert isinstance(together[1], FailedPhoto) and together[1] == alone[1]
    for ours, theirs in zip(together, alone, strict=True):
        if isinstance(ours, IndexedPhoto):
            assert isinstance(theirs, IndexedPhoto) and ours.sha256 == theirs.sha256
            assert [f.box for f in ours.analysis.faces] == [f.box for f in theirs.analysis.faces]
            for face, other in zip(ours.analysis.faces, theirs.analysis.faces, strict=True):
                np.testing.assert_allclose(face.embedding, other.embedding, atol=1e-6)

    embedder = pipeline_for(settings).embedder
    real_embed, calls = embedder.embed, []

    def fails_on_the_third(image: np.ndarray, boxes: Sequence[Box], jitters: int) -> object:
        calls.append(image)  # one by one, in order: the third photo is photos[2]
        if len(calls) == 3:
            raise RuntimeError("a native error")
        return real_embed(image, boxes, jitters)

    # The batch fails: the photos are analysed one by one and only the third fails.
    monkeypatch.setattr(embedder, "embed_photos", lambda *args: 1 / 0)
    monkeypatch.setattr(embedder, "embed", fails_on_the_third)
    outcomes = analyse_files(jobs, settings)
    failed = {o.file.path: o.reason for o in outcomes if isinstance(o, FailedPhoto)}
    assert list(failed) == [str(broken), photos[2]] and len(outcomes) == len(jobs)
    assert "RuntimeError: a native error" in failed[photos[2]]
