"""The `eval` and `calibrate` commands: accuracy on the operator's own labelled photos, and
a model's calibration table made from them."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import click

from ..evaluation.calibrate import calibrate as calibrate_labelled
from ..evaluation.detection_study import parse_detector_settings
from ..evaluation.evaluate import evaluate, with_detector_trials
from ..evaluation.report import report_markdown, write_report
from ..faces.pipeline import PipelineSettings
from ..matching.calibration import ERASE_UNNAMED_FMR, MATCH_FMR, OPTOUT_FMR
from ..settings import (
    Settings,
    default_cache_dir,
)
from .common import (
    F,
    catalogue_for,
    data_option,
    err,
    fallback_option,
    library_errors,
    main,
    out,
    progress_bar,
)

#: Nothing to import: the commands register themselves on `main`.
__all__: list[str] = []


def embedding_options(command: F) -> F:
    """--workers and --cache: how labelled photos are embedded (`eval`, `calibrate`)."""
    command = click.option(
        "--cache",
        "cache_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=lambda: default_cache_dir(os.environ),
        show_default="$XDG_CACHE_HOME/iddetective/eval",
        help="Folder of the embeddings cache (by photo SHA-256 and model).",
    )(command)
    return click.option(
        "--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Processes."
    )(command)


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
@embedding_options
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


@main.command()
@click.argument("labels", type=click.Path(path_type=str, dir_okay=False, readable=False))
@data_option
@click.option(
    "--model",
    metavar="NAME",
    help="The embedding model to calibrate (a registered name) [default: the catalogue's].",
)
@embedding_options
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the table as JSON instead of keeping it in the catalogue.",
)
def calibrate(
    labels: str, data_dir: Path, model: str | None, workers: int, cache_dir: Path, print_only: bool
) -> None:
    """Make a model's calibration table from the labelled photos of LABELS (a path,person
    CSV) and keep it in the catalogue: its rates in words and default thresholds then come
    from your photos (docs/accuracy.md)."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        settings = catalogue.pipeline_with(model) if model else catalogue.pipeline
        with progress_bar("embedding", "photos") as update:
            run = calibrate_labelled(
                labels, settings, workers=workers, cache_dir=cache_dir, progress=update
            )
        table = run.table
        if print_only:
            click.echo(json.dumps(table.to_json(), indent=1))
            return
        catalogue.save_calibration(table)
    t = table.thresholds
    out.print(
        f"{table.model}: {run.with_face:,} of {run.photos:,} photos with a face, "
        f"{run.genuine_pairs:,} genuine and {table.impostor_pairs:,} impostor pairs; rates "
        f"measured down to {table.floor:.1g}, extrapolated below"
    )
    out.print(
        f"thresholds: match {t.match} (false-match rate {MATCH_FMR:g}; "
        f"{run.genuine_accepted:.1%} of genuine pairs within), opt-out {t.optout} "
        f"({OPTOUT_FMR:g}), erase-unnamed {t.erase_unnamed} ({ERASE_UNNAMED_FMR:g})"
    )
    out.print(f"kept in the catalogue as the calibration table of {table.model}")


def _command_line(name: str, *arguments: str, **options: str | None) -> str:
    """The command as a person would type it again (for the report)."""
    words = ["iddetective", name, *arguments]
    for option, value in options.items():
        if value is not None:
            words += [f"--{option.replace('_', '-')}", value]
    return shlex.join(words)
