"""The `eval` command: accuracy on the operator's own labelled photos."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from ..evaluation.detection_study import parse_detector_settings
from ..evaluation.evaluate import evaluate, with_detector_trials
from ..evaluation.report import report_markdown, write_report
from ..faces.pipeline import PipelineSettings
from ..settings import (
    Settings,
    default_cache_dir,
)
from .common import err, fallback_option, library_errors, main, out, progress_bar

#: Nothing to import: the commands register themselves on `main`.
__all__: list[str] = []


@main.command("eval")
@click.argument("labels", type=click.Path(path_type=str, dir_okay=False, readable=False))
@click.option(
    "--pairs",
    type=click.Path(path_type=str, dir_okay=False, readable=False),
    help="CSV path_a,path_b,same of pairs to verify (10-fold accuracy, TAR at FAR).",
)
@click.option(
    "--distractors",
    type=click.Path(path_type=str, readable=False),
    help="Folder of photos of other people, or their labels CSV, enrolled too.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write report.md, roc.png and distances.png into this folder.",
)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Processes."
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=lambda: default_cache_dir(os.environ),
    show_default="$XDG_CACHE_HOME/iddetective/eval",
    help="Folder of the embeddings cache (by photo SHA-256 and model).",
)
@fallback_option
@click.option(
    "--detectors",
    metavar="SETTINGS",
    help="Also compare detector settings alone on the labelled photos, e.g. "
    "hog:0,hog:1,hog:2,cnn:0 (detector:upsample): faces found, seconds per photo.",
)
@click.option(
    "--detector-sample",
    type=click.IntRange(1),
    help="Compare the detectors on this many of the photos, chosen at random (default: all).",
)
def eval_command(
    labels: str,
    pairs: str | None,
    distractors: str | None,
    report_dir: Path | None,
    workers: int,
    cache_dir: Path,
    fallback_detector: str | None,
    detectors: str | None,
    detector_sample: int | None,
) -> None:
    """Measure accuracy on the labelled photos of LABELS (a path,person CSV; docs/accuracy.md)."""
    command = _command_line(
        "eval",
        labels,
        pairs=pairs,
        distractors=distractors,
        report=None if report_dir is None else str(report_dir),
        workers=None if workers == 1 else str(workers),
        fallback_detector=fallback_detector,
        detectors=detectors,
        detector_sample=None if detector_sample is None else str(detector_sample),
    )
    with library_errors():
        settings = Settings.from_environment(
            os.environ, pipeline=PipelineSettings(fallback_detector=fallback_detector)
        ).pipeline
        trials = parse_detector_settings(detectors, settings) if detectors else []
        with progress_bar("embedding", "photos") as update:
            evaluation = evaluate(labels, pairs, distractors, workers, cache_dir, update, settings)
        run = evaluation.embedding
        err.print(
            f"{run.embedded} photos embedded in {run.seconds:.1f} s, "
            f"{run.from_cache} from the cache ({run.cache})"
        )
        if trials:
            with progress_bar("detectors", "photos") as update:
                evaluation = with_detector_trials(
                    evaluation, trials, detector_sample, workers, update
                )
        if report_dir is None:
            out.print(report_markdown(evaluation, command))
            return
        written = write_report(evaluation, report_dir, command)
    out.print(f"wrote {', '.join(str(path) for path in written)}")


def _command_line(name: str, *arguments: str, **options: str | None) -> str:
    """The command as a person would type it again (for the report)."""
    words = ["iddetective", name, *arguments]
    for option, value in options.items():
        if value is not None:
            words += [f"--{option.replace('_', '-')}", value]
    return shlex.join(words)
