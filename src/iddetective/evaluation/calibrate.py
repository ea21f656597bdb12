"""`iddetective calibrate`: a model's calibration table made from the operator's own labelled
photos, by the method of the shipped one (matching/calibration.py, docs/accuracy.md).

Every photo of the labelled set is embedded once (the evaluation's cache), every pair of
photos of two different people gives an impostor distance, and the share of them within each
distance is the measured false-match rate there; below the rate the data can measure
(3 / impostor pairs) a fitted tail extrapolates. The table's thresholds are read at the
default rates. More photos of more people measure lower rates: a set of 300 photos of 30
people gives about 40,000 impostor pairs, enough to measure 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..faces.pipeline import PipelineSettings, pipeline_for
from ..matching.calibration import Calibration, build_calibration
from .evaluate import Progress, embed_photos, labelled_vectors, read_labelled_set
from .metrics import all_pairs, rate_at

__all__ = ["CalibrationRun", "calibrate"]


@dataclass(frozen=True)
class CalibrationRun:
    """A table just made, and what it was made from."""

    table: Calibration
    photos: int
    with_face: int
    genuine_pairs: int
    #: Share of genuine pairs (two photos of one person) within the table's match threshold.
    genuine_accepted: float


def calibrate(
    labels: str,
    settings: PipelineSettings,
    *,
    workers: int = 1,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> CalibrationRun:
    """The calibration table of `settings`' embedding model, from the photos of `labels`
    (a `path,person` manifest); `CalibrationError` when they are too few to measure the
    match rate."""
    labelled = read_labelled_set(labels)
    run = embed_photos(labelled.paths, workers, cache_dir, progress, settings)
    vectors = labelled_vectors(run.photos, pipeline_for(settings).embedder.dimension)
    with_face = int((vectors[:, 0] == vectors[:, 0]).sum())  # NaN rows: no face found
    genuine, impostor = all_pairs(vectors, labelled.people)
    made_from = (
        f"{labels}: {with_face:,} labelled photos with a face, {len(genuine):,} genuine and "
        f"{len(impostor):,} impostor pairs (iddetective calibrate)"
    )
    table = build_calibration(run.model, made_from, impostor)
    accepted = rate_at(genuine, table.thresholds.match)
    return CalibrationRun(table, len(labelled.paths), with_face, len(genuine), accepted)
