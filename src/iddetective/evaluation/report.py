"""The report of `iddetective eval`: Markdown tables and two plots (matplotlib, Agg backend).

Pure presentation of an `evaluation.Evaluation`; every figure is computed in evaluation/evaluate.py.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..matching.calibration import shipped_calibration
from .evaluate import FARS, FPIRS, LISTED_PHOTOS, RANKS, Evaluation, Identification, Verification
from .metrics import FOLDS, MIN_ERRORS, roc_points

__all__ = ["plot_distances", "plot_roc", "report_markdown", "write_report"]


# -- the report ----------------------------------------------------------------------------------
def report_markdown(
    evaluation: Evaluation, command: str, when: datetime | None = None, plots: bool = False
) -> str:
    """The report: what was measured (command, set, date, model) and every figure as
    Markdown tables; with `plots`, links to roc.png and distances.png beside it."""
    sections = [
        _header(evaluation, command, when or datetime.now(UTC)),
        _detection_section(evaluation),
        _verification_section(evaluation),
        _closed_set_section(evaluation),
        _open_set_section(evaluation),
    ]
    if plots:
        sections.append(
            "## Plots\n\n![ROC: TAR against FAR](roc.png)\n\n"
            "![Distances of genuine and impostor pairs](distances.png)"
        )
    return "\n\n".join(sections) + "\n"


def _header(evaluation: Evaluation, command: str, when: datetime) -> str:
    labelled, run = evaluation.labelled, evaluation.embedding
    settings = run.settings
    rows = [
        ("command", f"`{command}`"),
        (
            "set",
            f"{labelled.source}: {len(labelled.paths):,} photos of "
            f"{len(set(labelled.people)):,} people",
        ),
        (
            "pairs",
            f"{evaluation.pairs.source}: {len(evaluation.pairs.same):,} pairs"
            if evaluation.pairs
            else "none (`--pairs`)",
        ),
        ("distractors", _distractor_line(evaluation)),
        ("date", when.strftime("%Y-%m-%d %H:%M %Z")),
        (
            "model",
            f"{run.model} (detector {settings.detector}, upsample {settings.upsample}, "
            f"decoded at most {settings.max_side} px, detection at most "
            f"{settings.detect_max_side} px, jitters {settings.jitters})",
        ),
        (
            "embedding",
            f"{len(run.photos):,} photos: {run.embedded:,} embedded in "
            f"{run.seconds:.1f} s, {run.from_cache:,} from the cache ({run.cache})",
        ),
        ("time", f"{evaluation.seconds:.1f} s in all"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    title = f"# Evaluation: {labelled.folder.name}"
    note = (
        "A photo where no face is found is never a match: it is an error in every figure "
        "below (a genuine pair or a probe of an enrolled person that it is in is missed)."
    )
    return f"{title}\n\n| | |\n|---|---|\n{table}\n\n{note}"


def _distractor_line(evaluation: Evaluation) -> str:
    extra, seen = evaluation.distractors, evaluation.distractor_detection
    found = evaluation.with_distractors
    if extra is None or seen is None or found is None:
        return "none (`--distractors`)"
    kind = "labelled face of each photo" if extra.people is not None else "every face"
    return (
        f"{extra.source}: {seen.photos:,} photos ({len(seen.no_face):,} with no face, "
        f"{len(seen.unusable):,} unusable), {found.distractor_faces:,} faces enrolled "
        f"({kind})"
    )


def _detection_section(evaluation: Evaluation) -> str:
    counts = evaluation.detection
    rows = [
        ("labelled photos", f"{counts.photos:,}", ""),
        (
            "no face found",
            f"{len(counts.no_face):,}",
            _percent(len(counts.no_face) / counts.photos),
        ),
        (
            "several faces found (the label goes to the largest, most central)",
            f"{counts.several_faces:,}",
            _percent(counts.several_faces / counts.photos),
        ),
        (
            "could not be used",
            f"{len(counts.unusable):,}",
            _percent(len(counts.unusable) / counts.photos),
        ),
    ]
    lines = ["## Detection", "", "| | photos | share |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    settings = evaluation.embedding.settings
    detector = f"{settings.detector}, upsample {settings.upsample}"
    if settings.fallback_detector:
        detector += f", with {settings.fallback_detector} where it finds no face"
    lines += ["", f"Detector: {detector}."]
    lines += _photo_list(evaluation, "Photos with no face found", [(p, "") for p in counts.no_face])
    lines += _photo_list(evaluation, "Photos that could not be used", list(counts.unusable))
    lines += ["", *_detector_comparison(evaluation)]
    return "\n".join(lines)


def _detector_comparison(evaluation: Evaluation) -> list[str]:
    trials = evaluation.detector_trials
    if not trials:
        return ["Detector settings can be compared with `--detectors hog:0,hog:1,hog:2,cnn:0`."]
    photos = trials[0].photos
    sampled = photos < evaluation.detection.photos
    what = f"{photos:,} photos chosen at random" if sampled else f"all {photos:,} photos"
    lines = [
        "### Detector settings compared",
        "",
        f"Each setting's detector alone (no fallback, no embedding) on {what}, detecting on "
        f"a copy at most {trials[0].settings.detect_max_side} px large as the pipeline does; "
        "seconds are the detector call only, in one worker process.",
        "",
        "| setting | no face found | several faces | could not be used "
        "| seconds per photo (mean / median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for trial in trials:
        lines.append(
            f"| {trial.label} | {trial.no_face:,} ({_percent(trial.no_face / photos)}) "
            f"| {trial.several_faces:,} | {trial.unusable:,} "
            f"| {trial.mean_seconds:.3f} / {trial.median_seconds:.3f} |"
        )
    return lines


def _photo_list(evaluation: Evaluation, title: str, photos: list[tuple[str, str]]) -> list[str]:
    if not photos:
        return []
    folder = evaluation.labelled.folder
    lines = ["", f"{title}:", ""]
    for path, reason in photos[:LISTED_PHOTOS]:
        lines.append(f"- {os.path.relpath(path, folder)}" + (f": {reason}" if reason else ""))
    if len(photos) > LISTED_PHOTOS:
        lines.append(f"- ... and {len(photos) - LISTED_PHOTOS:,} more")
    return lines


def _verification_section(evaluation: Evaluation) -> str:
    columns = [("all pairs of labelled photos", evaluation.all_pairs)]
    if evaluation.on_pairs is not None:
        columns.insert(0, ("pairs.csv", evaluation.on_pairs))
    rows = [
        ("genuine / impostor pairs", [f"{v.genuine:,} / {v.impostor:,}" for _, v in columns]),
        ("pairs with a missing face", [f"{v.missing:,}" for _, v in columns]),
        (
            "10-fold accuracy (LFW protocol; a missing face is an error)",
            [_accuracy(v, name == "pairs.csv") for name, v in columns],
        ),
    ]
    rows += [(f"TAR at FAR {_rate(far)}", [_tar_cell(v, far) for _, v in columns]) for far in FARS]
    about = (
        "A pair is accepted when its distance is at or under the threshold; TAR and FAR are "
        "shares of all genuine and all impostor pairs, those with a missing face included "
        f"(never accepted). A rate is measured only where at least {MIN_ERRORS} impostor pairs "
        f"would be accepted at it ({MIN_ERRORS} / FAR pairs)."
    )
    table = _table([name for name, _ in columns], rows)
    return "\n".join(["## Verification", "", *table, "", about])


def _accuracy(figures: Verification, on_pairs: bool) -> str:
    if figures.accuracy is None:
        return f"n/a (needs {FOLDS} pairs of each kind)" if on_pairs else "(pairs.csv only)"
    mean, sd = figures.accuracy
    return f"{_percent(mean)} ± {100 * sd:.2f}"


def _tar_cell(figures: Verification, far: float) -> str:
    found = figures.tar[far]
    if found is None:
        need = math.ceil(MIN_ERRORS / far - 1e-9)
        return f"not enough pairs ({figures.impostor:,} impostor; {need:,} needed)"
    return f"{_percent(found[0])} (threshold {_distance(found[1])})"


def _identification_columns(evaluation: Evaluation) -> list[tuple[str, Identification]]:
    columns = [("without distractors", evaluation.identification)]
    if evaluation.with_distractors is not None:
        columns.append(("with distractors", evaluation.with_distractors))
    singles = evaluation.with_single_photo_people
    if singles is not None and singles.distractor_faces:
        columns.append(("single-photo people enrolled too", singles))
    return columns


def _closed_set_section(evaluation: Evaluation) -> str:
    columns = _identification_columns(evaluation)
    rows = [
        (
            "people enrolled (photos with no face)",
            [f"{i.people:,} ({i.faceless:,})" for _, i in columns],
        ),
        ("distractor faces enrolled", [f"{i.distractor_faces:,}" for _, i in columns]),
        ("probes (other photos of enrolled people)", [f"{i.probes:,}" for _, i in columns]),
    ]
    rows += [(f"rank-{k}", [_percent(i.rank[k]) for _, i in columns]) for k in RANKS]
    about = (
        "The first photo of each person with several photos is enrolled; their other photos "
        "are searched. Rank-k: the share of those probes whose own person is among the k "
        "nearest enrolled people (a tie counts against)."
    )
    if columns[-1][1] is evaluation.with_single_photo_people:
        about += (
            " In the last column the people with a single photo are enrolled too, as "
            "distractors from the same population."
        )
    table = _table([name for name, _ in columns], rows)
    return "\n".join(["## Closed-set identification", "", about, "", *table])


def _open_set_section(evaluation: Evaluation) -> str:
    # Where the single-photo people are enrolled there are no unknown probes left.
    columns = [(n, i) for n, i in _identification_columns(evaluation) if i.unknown_probes]
    if not columns:
        return "## Open-set identification\n\nNo people with a single photo to search as unknown."
    rows = [
        (
            "unknown probes (people with a single photo)",
            [f"{i.unknown_probes:,}" for _, i in columns],
        )
    ]
    rows += [(f"DIR at FPIR {_rate(r)}", [_dir_cell(i, r) for _, i in columns]) for r in FPIRS]
    about = (
        "People with a single photo are not enrolled: their photos are unknown probes. DIR: "
        "the share of probes of enrolled people whose own person is nearest and within the "
        "threshold, where the threshold lets that share (FPIR) of unknown probes match "
        "someone (an unknown probe with no face matches nobody)."
    )
    table = _table([name for name, _ in columns], rows)
    return "\n".join(["## Open-set identification", "", about, "", *table])


def _table(columns: Sequence[str], rows: Sequence[tuple[str, list[str]]]) -> list[str]:
    """A Markdown table: a figure per row, its value in each column."""
    head = "| figure | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    return [head, rule, *(f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows)]


def _dir_cell(figures: Identification, rate: float) -> str:
    found = figures.dir[rate]
    if found is None:
        need = math.ceil(MIN_ERRORS / rate - 1e-9)
        return f"not enough unknown probes ({figures.unknown_probes:,}; {need:,} needed)"
    return f"{_percent(found[0])} (threshold {_distance(found[1])})"


def _rate(rate: float) -> str:
    return f"{rate:.0e}".replace("e-0", "e-")


def _percent(share: float) -> str:
    return "n/a" if np.isnan(share) else f"{100 * share:.2f} %"


def _distance(threshold: float) -> str:
    return "any distance" if np.isinf(threshold) else f"{threshold:.3f}"


def write_report(
    evaluation: Evaluation, folder: Path, command: str, when: datetime | None = None
) -> list[Path]:
    """Write report.md, roc.png and distances.png into `folder`; the files written."""
    files = [folder / "report.md", folder / "roc.png", folder / "distances.png"]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        plot_roc(evaluation, files[1])
        plot_distances(evaluation, files[2])
        files[0].write_text(report_markdown(evaluation, command, when, plots=True), "utf-8")
    except OSError as error:
        raise UsageError(f"--report {folder}: cannot write there ({error.strerror})") from None
    return files


def plot_roc(evaluation: Evaluation, path: Path) -> None:
    """TAR against FAR (log scale) of pairs.csv and of all pairs, with the FARS marked."""
    figure, axes = _figure()
    curves = [("all pairs of labelled photos", evaluation.all_pairs)]
    if evaluation.on_pairs is not None:
        curves.insert(0, ("pairs.csv", evaluation.on_pairs))
    lowest = 1.0
    for name, figures in curves:
        if figures.impostor and figures.genuine:
            far, tar = _roc_curve(figures)
            axes.step(far, tar, where="post", label=f"{name} ({figures.impostor:,} impostor)")
            lowest = min(lowest, far[0])
    for rate in FARS:
        axes.axvline(rate, color="grey", linestyle=":", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_xlim(min(lowest, FARS[-1] / 10), 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false-accept rate (FAR)")
    axes.set_ylabel("true-accept rate (TAR)")
    axes.set_title(f"{evaluation.labelled.folder.name}: ROC ({evaluation.embedding.model})")
    axes.grid(True, which="major", alpha=0.3)
    if axes.get_lines():
        axes.legend(loc="lower right")
    figure.savefig(path, dpi=100)


def _roc_curve(figures: Verification) -> tuple[np.ndarray, np.ndarray]:
    """TAR on a log grid of FAR from 1 / impostor pairs to 1 (the ROC has millions of points)."""
    far, tar, _ = roc_points(figures.dist, figures.same)
    grid = np.logspace(np.log10(1 / figures.impostor), 0.0, 400)
    at = np.searchsorted(far, grid, side="right") - 1
    return grid, np.where(at >= 0, tar[np.maximum(at, 0)] if len(tar) else 0.0, 0.0)


def plot_distances(evaluation: Evaluation, path: Path) -> None:
    """Histograms of genuine and impostor distances over all pairs, and the model's default
    threshold (where the model has a shipped calibration table)."""
    figure, axes = _figure()
    figures = evaluation.all_pairs
    present = ~np.isnan(figures.dist)
    bins = np.linspace(0.0, 1.2, 121)
    for name, kind in (("genuine", figures.same), ("impostor", ~figures.same)):
        values = figures.dist[present & kind]
        if len(values):
            label = f"{name} ({len(values):,} pairs with both faces found)"
            axes.hist(values, bins, density=True, alpha=0.5, label=label)
    table = shipped_calibration(evaluation.embedding.model)
    if table is not None:
        axes.axvline(
            table.thresholds.match,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"default threshold {table.thresholds.match}",
        )
    axes.set_xlabel("distance (L2-normalised embeddings)")
    axes.set_ylabel("density")
    axes.set_title(f"{evaluation.labelled.folder.name}: all pairs of labelled photos")
    axes.legend(loc="upper right")
    figure.savefig(path, dpi=100)


def _figure() -> tuple[Any, Any]:
    """A figure drawn by the Agg backend, outside pyplot (no global state, nothing to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()
