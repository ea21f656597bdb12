"""Compare detector settings on labelled photos: faces found, and time per photo.

`iddetective eval --detectors hog:0,hog:1,hog:2,cnn:0` runs each setting's detector alone
(no fallback, no embedding) on the same photos, decoded and shrunk exactly as the pipeline
does, and reports how many photos had no face or several faces and how long detection took.
Timings are measured inside the worker around the detector call only, so decoding and
process start-up are not in them.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import IDDetectiveError, UsageError
from ..faces.imaging import decode_image, read_photo_bytes
from ..faces.pipeline import PipelineSettings, pipeline_for
from ..ingest.indexing import CRASHED
from ..processes.pool import map_in_processes

__all__ = [
    "DETECTOR_ALIASES",
    "DetectorTrial",
    "compare_detectors",
    "parse_detector_settings",
    "sample_photos",
]

#: Short names accepted by --detectors, and the detector each one means.
DETECTOR_ALIASES = {"hog": "dlib-hog", "cnn": "dlib-cnn"}
#: dlib upsamples by a factor of 2 each time: beyond 3 a photo is 64 times its pixels.
MAX_UPSAMPLE = 3

Progress = Callable[[int, int], None]

_warmed: set[PipelineSettings] = set()


@dataclass(frozen=True)
class DetectorTrial:
    """How one detector setting did on the photos: counts and seconds per photo."""

    settings: PipelineSettings
    photos: int
    no_face: int
    several_faces: int
    unusable: int
    mean_seconds: float
    median_seconds: float

    @property
    def label(self) -> str:
        """The setting as typed on the command line (`hog:1`)."""
        short = {name: alias for alias, name in DETECTOR_ALIASES.items()}
        name = short.get(self.settings.detector, self.settings.detector)
        return f"{name}:{self.settings.upsample}"


def parse_detector_settings(spec: str, base: PipelineSettings) -> list[PipelineSettings]:
    """`hog:0,hog:1,cnn:0` as pipeline settings (detector and upsample; the rest from
    `base`, without a fallback). Raises `UsageError` naming the part that is wrong."""
    found: list[PipelineSettings] = []
    for part in (piece.strip() for piece in spec.split(",")):
        name, _, upsample = part.partition(":")
        detector = DETECTOR_ALIASES.get(name, name)
        if detector not in DETECTOR_ALIASES.values():
            raise UsageError(
                f"--detectors: unknown detector {name!r} in {part!r}; "
                f"use {', '.join(DETECTOR_ALIASES)} (e.g. hog:1,cnn:0)"
            )
        if not upsample.isdigit() or int(upsample) > MAX_UPSAMPLE:
            raise UsageError(
                f"--detectors: {part!r} needs an upsample count from 0 to {MAX_UPSAMPLE} "
                f"after the colon (e.g. {name}:1)"
            )
        setting = replace(base, detector=detector, upsample=int(upsample), fallback_detector=None)
        if setting not in found:
            found.append(setting)
    return found


def sample_photos(paths: Sequence[str], size: int | None, seed: int = 0) -> list[str]:
    """`size` of the photos chosen at random (the same ones every run), or all of them."""
    if size is None or size >= len(paths):
        return list(paths)
    return sorted(random.Random(seed).sample(list(paths), size))


def compare_detectors(
    paths: Sequence[str],
    settings: Sequence[PipelineSettings],
    workers: int = 1,
    progress: Progress | None = None,
) -> list[DetectorTrial]:
    """Each setting's detector run alone on every photo of `paths`."""
    total, done = len(paths) * len(settings), 0
    trials = []
    for setting in settings:
        outcomes: list[tuple[int, float] | str] = []
        timed = map_in_processes(
            time_detection, list(paths), workers, setting, crashed=_crashed
        )
        for _, outcome in timed:
            outcomes.append(outcome)
            done += 1
            if progress is not None:
                progress(done, total)
        trials.append(_trial(setting, outcomes))
    return trials


def _crashed(path: str) -> str:
    return CRASHED  # the photo killed its worker process: unusable, as one it cannot read


def _trial(setting: PipelineSettings, outcomes: list[tuple[int, float] | str]) -> DetectorTrial:
    timed = [outcome for outcome in outcomes if not isinstance(outcome, str)]
    seconds = [elapsed for _, elapsed in timed]
    return DetectorTrial(
        settings=setting,
        photos=len(outcomes),
        no_face=sum(faces == 0 for faces, _ in timed),
        several_faces=sum(faces > 1 for faces, _ in timed),
        unusable=len(outcomes) - len(timed),
        mean_seconds=statistics.fmean(seconds) if seconds else float("nan"),
        median_seconds=statistics.median(seconds) if seconds else float("nan"),
    )


def time_detection(path: str, settings: PipelineSettings) -> tuple[int, float] | str:
    """(faces found, seconds the detector took) for one photo, or why it could not be used."""
    try:
        image = decode_image(read_photo_bytes(path), path, settings.max_side)
    except (OSError, IDDetectiveError) as error:
        return str(error)
    pipeline = pipeline_for(settings)
    if settings not in _warmed:  # the model loads on first use: not part of any photo's time
        pipeline.detect(np.zeros((32, 32, 3), np.uint8))
        _warmed.add(settings)
    started = time.perf_counter()
    boxes, _ = pipeline.detect(image.pixels)
    return len(boxes), time.perf_counter() - started
