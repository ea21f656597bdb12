"""The `iddetective` command: parse, call one library method, print.

Exit codes (docs/contracts.md): 0 done; 1 error (named person or photo not found, ambiguous
name, catalogue problem); 2 bad arguments (missing path, unreadable manifest or query photo);
3 index finished but some photos failed; 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from .catalogue import CATALOG_FILE, POSTGRES_SCHEMES, Catalogue
from .entities import Edit, SaveResult
from .errors import IDDetectiveError, UsageError, from_os_error
from .evaluation.detection_study import parse_detector_settings
from .evaluation.evaluate import evaluate, with_detector_trials
from .evaluation.report import report_markdown, write_report
from .faces.pipeline import PipelineSettings
from .ingest.indexing import BATCH_PHOTOS, IndexReport
from .matching import calibration, distances
from .matching.search import SearchResult, to_json
from .people.discovery import ClusterReport
from .people.privacy import OptOutPreview
from .settings import (
    BROKER_ENV,
    DB_ENV,
    Settings,
    default_cache_dir,
    default_data_dir,
    default_hosts_file,
)
from .sources.fetch import FetchSettings

__all__ = ["main"]

EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130
#: Where --db's value waits in the click context for `_settings`.
_DB_OPTION = "iddetective.db"

# Markup off: paths and reasons are printed as they are, even `photo [b].jpg`.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

F = TypeVar("F", bound=Callable[..., Any])


def data_option(command: F) -> F:
    """The --data option every command takes, and --db for a PostgreSQL catalogue."""
    command = click.option(
        "--db",
        metavar="URL",
        expose_value=False,
        callback=_remember_db,
        help=f"A PostgreSQL catalogue (postgresql://...; default ${DB_ENV}) instead of "
        "the SQLite one in the data directory, which then holds only caches.",
    )(command)
    return click.option(
        "--data",
        "data_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=lambda: default_data_dir(os.environ),
        show_default="$IDDETECTIVE_DATA or ~/.local/share/iddetective",
        help="Data directory holding the catalogue and the vector index.",
    )(command)


def _remember_db(context: click.Context, parameter: click.Parameter, value: str | None) -> None:
    # Kept for `_settings`: every command opens its catalogue through it.
    if value is not None:
        if not value.startswith(POSTGRES_SCHEMES):
            raise click.BadParameter("give a postgresql:// URL", context, parameter)
        context.meta[_DB_OPTION] = value


def _settings(data_dir: Path, **options: Any) -> Settings:
    """This run's settings: the options given (--data, --db, ...), else the environment."""
    context = click.get_current_context(silent=True)
    db = context.meta.get(_DB_OPTION) if context is not None else None
    return Settings.from_environment(os.environ, data_dir=data_dir, db=db, **options)


def _catalogue(data_dir: Path, **options: Any) -> Catalogue:
    """The catalogue this run's settings name; `options` as `Catalogue.from_settings`'s."""
    return Catalogue.from_settings(_settings(data_dir), **options)


def fallback_option(command: F) -> F:
    """--fallback-detector: a second detector for photos where the first finds no face."""
    return click.option(
        "--fallback-detector",
        type=click.Choice(["dlib-cnn"]),
        default=None,
        help="Try this detector on photos where HOG finds no face (slower on those photos).",
    )(command)


def threshold_options(command: F) -> F:
    """--threshold (a distance) or --max-fmr (a false-match rate), for the commands that match."""
    command = click.option(
        "--max-fmr",
        type=float,
        default=None,
        help="Match threshold as a false-match rate instead, e.g. 1e-4 (calibration table).",
    )(command)
    return click.option(
        "--threshold",
        type=float,
        default=None,
        help=f"Largest distance that counts as a match [default: {distances.DEFAULT_THRESHOLD}].",
    )(command)


@contextmanager
def library_errors() -> Iterator[None]:
    """Turn library errors into a one-line message and the error's exit code."""
    try:
        yield
    except IDDetectiveError as error:
        err.print(Text("error: ", style="red") + Text(str(error)))
        sys.exit(error.exit_code)
    except OSError as error:  # a full disk, a read-only data directory ...
        err.print(Text("error: ", style="red") + Text(str(from_os_error(error))))
        sys.exit(1)


@click.group()
@click.version_option(package_name="iddetective")
def main() -> None:
    """ID-Detective: index photos, then find people by photo."""
    _print_notices()


class _NoticePrinter(logging.Handler):
    """Prints the library's notices (damage found and repaired ...) as warnings on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(Text("warning: ", style="yellow") + Text(record.getMessage()))


def _print_notices() -> None:
    logger = logging.getLogger("iddetective")
    if not any(isinstance(handler, _NoticePrinter) for handler in logger.handlers):
        logger.addHandler(_NoticePrinter(logging.WARNING))


@main.command()
# readable=False: an unreadable file fails alone (exit 3), it does not stop the run.
@click.argument("paths", nargs=-1, type=click.Path(path_type=str, readable=False))
@click.option(
    "--people",
    "people",
    type=str,
    help="CSV (path,person) or JSONL manifest of who is in which photo.",
)
@click.option(
    "--people-from-folders",
    is_flag=True,
    help="Folder layout PERSON_NAME/photo.jpg names the people.",
)
@data_option
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Processes analysing photos."
)
@click.option("--prune", is_flag=True, help="Forget photos under PATHS whose files are gone.")
@click.option("--retry-failed", is_flag=True, help="Try unchanged files that failed before again.")
@click.option(
    "--basis",
    default="",
    help='On what basis they are processed, kept as provenance ("consent form").',
)
@fallback_option
@click.option(
    "--upsample",
    type=click.IntRange(0, 3),
    default=PipelineSettings.upsample,
    show_default=True,
    help="Times the detector upsamples (finds smaller faces, slower).",
)
@click.option(
    "--broker",
    metavar="URL",
    envvar=BROKER_ENV,
    help="Have the ingestion workers on this Redis (redis://...; default $IDDETECTIVE_BROKER) "
    "analyse the photos instead of this machine.",
)
@click.option(
    "--batch",
    type=click.IntRange(1),
    default=BATCH_PHOTOS,
    show_default=True,
    help="Photos per batch sent to the workers (with --broker).",
)
def index(
    paths: tuple[str, ...],
    people: str | None,
    people_from_folders: bool,
    data_dir: Path,
    workers: int,
    prune: bool,
    retry_failed: bool,
    basis: str,
    fallback_detector: str | None,
    upsample: int,
    broker: str | None,
    batch: int,
) -> None:
    """Index photos from PATHS (files and folders, recursively) into the catalogue."""
    with (
        library_errors(),
        _opened(
            data_dir, create=True, pipeline=_pipeline(upsample, fallback_detector)
        ) as catalogue,
    ):
        with _progress_bar("indexing", "photos") as update:
            options: dict[str, Any] = {
                "people": people,
                "people_from_folders": people_from_folders,
                "prune": prune,
                "retry_failed": retry_failed,
                "basis": basis,
                "progress": _report_failures(update),
            }
            if broker:
                options["runner"] = _fleet().FleetRunner(broker, batch=batch)
            report = catalogue.index(list(paths), workers=workers, **options)
        _print_report(report, data_dir)
    if report.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if report.failed:
        sys.exit(EXIT_PARTIAL)


@main.command("import")
@click.argument("file", type=click.Path(path_type=str, dir_okay=False))
@data_option
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Processes analysing photos."
)
@click.option(
    "--allow-network",
    "allow_networks",
    multiple=True,
    metavar="CIDR",
    help="Let photo URLs reach this private address range (yours); repeatable.",
)
@click.option(
    "--basis", default="", help="On what basis the people are processed (a row's basis wins)."
)
def import_(
    file: str, data_dir: Path, workers: int, allow_networks: tuple[str, ...], basis: str
) -> None:
    """Import people, accounts, lists, relations and photos from FILE (JSONL or CSV)."""
    with (
        library_errors(),
        _opened(data_dir, create=True) as catalogue,
        _progress_bar("indexing", "photos") as update,
    ):
        report = catalogue.import_file(
            file,
            workers=workers,
            fetch=FetchSettings(allow=allow_networks),
            basis=basis,
            progress=_report_failures(update),
        )
    out.print(
        f"people: {report.created} new, {report.updated} already known; "
        f"{report.relations} new relations; {len(report.problems)} rows with problems"
    )
    for problem in report.problems:
        out.print(f"  {file}:{problem.line}: {problem.reason}")
    if report.photos is not None:
        _print_report(report.photos, data_dir)
    if report.photos is not None and report.photos.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if report.problems or (report.photos is not None and report.photos.failed):
        sys.exit(EXIT_PARTIAL)


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"-- {self.unit}/s")


@contextmanager
def _progress_bar(label: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, started by the first update (so errors print alone)."""
    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if progress.live.is_started:  # a bar never shown must not leave an empty line
            progress.stop()


def _report_failures(
    update: Callable[[int, int], None],
) -> Callable[[int, int, SaveResult | None], None]:
    def on_photo(done: int, total: int, result: SaveResult | None) -> None:
        update(done, total)
        if result is not None and result.status == "failed":
            failed = Text("failed: ", style="yellow") + Text(f"{result.path}: {result.reason}")
            err.print(failed)

    return on_photo


@contextmanager
def _opened(data_dir: Path, **options: Any) -> Iterator[Catalogue]:
    """The catalogue, with a progress bar whenever its vector index must be rebuilt."""
    with (
        _progress_bar("updating the vector index", "faces") as update,
        _catalogue(data_dir, index_progress=update, **options) as catalogue,
    ):
        yield catalogue


def _print_report(report: IndexReport, data_dir: Path) -> None:
    if report.interrupted:
        out.print("Interrupted: what was done is stored; run the same command again to finish.")
    out.print(
        f"indexed {report.indexed} photos ({report.faces} faces), "
        f"{report.no_face} with no face, {len(report.failed)} failed, "
        f"{report.duplicates} already known at another path, {report.unchanged} unchanged "
        f"in {report.seconds:.1f} s ({report.photos_per_second:.1f} photos/s)"
    )
    if report.pruned:
        out.print(f"forgot {report.pruned} files that are gone")
    if report.not_photos:
        out.print(f"passed over {report.not_photos} files whose names are not photo types")
    for result in report.failed:
        out.print(f"  failed: {result.path}: {result.reason}")
    if report.clustering is not None and report.clustering.considered:
        _print_clustering(report.clustering)
    if report.reviews:
        out.print(
            f"{len(report.reviews)} labelled photos to review: iddetective review --data {data_dir}"
        )


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
        settings = PipelineSettings(fallback_detector=fallback_detector)
        trials = parse_detector_settings(detectors, settings) if detectors else []
        with _progress_bar("embedding", "photos") as update:
            evaluation = evaluate(labels, pairs, distractors, workers, cache_dir, update, settings)
        run = evaluation.embedding
        err.print(
            f"{run.embedded} photos embedded in {run.seconds:.1f} s, "
            f"{run.from_cache} from the cache ({run.cache})"
        )
        if trials:
            with _progress_bar("detectors", "photos") as update:
                evaluation = with_detector_trials(
                    evaluation, trials, detector_sample, workers, update
                )
        if report_dir is None:
            out.print(report_markdown(evaluation, command))
            return
        written = write_report(evaluation, report_dir, command)
    out.print(f"wrote {', '.join(str(path) for path in written)}")


def _pipeline(upsample: int, fallback_detector: str | None) -> PipelineSettings:
    return PipelineSettings(upsample=upsample, fallback_detector=fallback_detector)


def _command_line(name: str, *arguments: str, **options: str | None) -> str:
    """The command as a person would type it again (for the report)."""
    words = ["iddetective", name, *arguments]
    for option, value in options.items():
        if value is not None:
            words += [f"--{option.replace('_', '-')}", value]
    return shlex.join(words)


@main.command()
@click.argument("photo", type=click.Path(path_type=str, readable=False))
@data_option
@click.option("--top", type=int, default=5, show_default=True, help="People listed per face.")
@threshold_options
@click.option(
    "--person",
    "people",
    multiple=True,
    help="Only compare with this person (id or name); repeatable.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the iddetective/search/v1 JSON object."
)
def search(
    photo: str,
    data_dir: Path,
    top: int,
    threshold: float | None,
    max_fmr: float | None,
    people: tuple[str, ...],
    as_json: bool,
) -> None:
    """Find every face in PHOTO and who each one is."""
    with library_errors(), _opened(data_dir) as catalogue:
        result = catalogue.search_photo(
            photo,
            top=top,
            threshold=calibration.resolve_threshold(threshold, max_fmr),
            people=list(people) or None,
        )
    if as_json:
        click.echo(json.dumps(to_json(result), indent=2, ensure_ascii=False))
    else:
        _print_search(result)


def _print_search(result: SearchResult) -> None:
    if not result.faces:
        out.print(f"No face found in {result.path}.")
        return
    out.print(f"{len(result.faces)} face(s) in {result.path} (threshold {result.threshold}):")
    for number, face in enumerate(result.faces, start=1):
        box = face.box
        where = f"left={box.left} top={box.top} right={box.right} bottom={box.bottom}"
        out.print(f"\nFace {number} at {where}:")
        if face.verdict == "no_match":
            out.print("  no match: nobody in the catalogue is within the threshold")
        for match in face.matches:
            who = f"{match.person.name} ({match.person.id})" if match.person else "unnamed face(s)"
            word = "MATCH   " if match.verdict == "match" else "no match"
            odds = calibration.fmr_at(match.distance, result.model).describe()
            out.print(f"  {word} {match.distance:.3f} ({odds} strangers this close)  {who}")
            for hit in match.photos[:5]:
                shown = hit.photo.paths[0] if hit.photo.paths else hit.photo.sha256
                out.print(f"           {hit.distance:.3f}  {shown}")
            if len(match.photos) > 5:
                out.print(f"           ... and {len(match.photos) - 5} more photos")


@main.command()
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def people(data_dir: Path, as_json: bool) -> None:
    """List the people in the catalogue."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        found = catalogue.people()
    if as_json:
        for person in found:
            click.echo(json.dumps(person.__dict__, ensure_ascii=False))
        return
    table = Table("id", "name", "faces", "photos")
    for person in found:
        table.add_row(person.id, person.name, str(person.faces), str(person.photos))
    out.print(table)


@main.command()
@click.argument("text")
@data_option
@click.option("--limit", type=int, default=20, show_default=True, help="People to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def find(text: str, data_dir: Path, limit: int, as_json: bool) -> None:
    """Find people whose name, alias or handle contains TEXT (any case, accents or script)."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        found = catalogue.find(text, limit=limit)
    if as_json:
        for hit in found:
            click.echo(json.dumps(asdict(hit), ensure_ascii=False))
        return
    table = Table("id", "name", "matched", "in")
    for hit in found:
        table.add_row(hit.person.id, hit.person.name, hit.value, hit.field)
    out.print(table if found else f"nobody's name, alias or handle contains {text!r}")


@main.command()
@click.argument("text")
@data_option
@click.option("--top", type=int, default=5, show_default=True, help="People listed per face.")
@threshold_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def query(
    text: str,
    data_dir: Path,
    top: int,
    threshold: float | None,
    max_fmr: float | None,
    as_json: bool,
) -> None:
    """Run a query (docs/query.md): list the people it selects, or with face:PHOTO, search
    that photo among their faces."""
    with library_errors(), _opened(data_dir) as catalogue:
        limit = calibration.resolve_threshold(threshold, max_fmr)
        answer = catalogue.query(text, top=top, threshold=limit)
    if as_json:
        people = [{"id": p.id, "name": p.name} for p in answer.people]
        search_json = to_json(answer.search) if answer.search else None
        click.echo(json.dumps({"people": people, "search": search_json}, ensure_ascii=False))
    elif answer.search is not None:
        out.print(f"searched among the faces of {len(answer.people)} people")
        _print_search(answer.search)
    else:
        for person in answer.people:
            out.print(f"{person.id}  {person.name}")
        out.print(f"{len(answer.people)} people")


@main.command()
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(data_dir: Path, as_json: bool) -> None:
    """Show the catalogue's size."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        figures = catalogue.stats()
    if as_json:
        click.echo(json.dumps(figures.__dict__))
        return
    for name, value in figures.__dict__.items():
        shown = f"{value / 1e6:.1f} MB" if name == "data_bytes" else str(value)
        out.print(f"{name.replace('_', ' '):>20}  {shown}")


@main.command()
@click.argument("photo")
@data_option
def remove(photo: str, data_dir: Path) -> None:
    """Remove one PHOTO (a path it was indexed from, or its SHA-256) and its faces."""
    with library_errors(), _opened(data_dir) as catalogue:
        removed = catalogue.remove_photo(photo)
    out.print(f"removed photo {removed.sha256} ({', '.join(removed.paths) or 'no path'})")


@main.command()
@data_option
def failures(data_dir: Path) -> None:
    """List files and manifest rows that could not be indexed, with the reason."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        found = catalogue.failures()
    for failure in found:
        out.print(f"{failure.path}: {failure.reason}  ({failure.failed_at})")
    if not found:
        out.print("no failures")


@main.command()
@data_option
def review(data_dir: Path) -> None:
    """List labelled photos whose label went to one of several faces (or was not applied)."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        found = catalogue.reviews()
    for item in found:
        where = item.photo.paths[0] if item.photo.paths else item.photo.sha256
        who = f"{item.person.name} ({item.person.id})" if item.person else "nobody"
        out.print(f"{where}: {item.reason}; labelled face: {who}")
    if not found:
        out.print("nothing to review")


@main.command()
@click.argument("person")
@data_option
@click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
@click.option(
    "--optout",
    "opt_out",
    is_flag=True,
    help="Also opt their faces out, so re-indexing your files never brings them back.",
)
@click.option(
    "--unnamed-within",
    type=float,
    default=distances.ERASE_UNNAMED_THRESHOLD,
    show_default=True,
    help="Unnamed faces at most this far from one of theirs are erased with them (0: none).",
)
def erase(person: str, data_dir: Path, yes: bool, opt_out: bool, unnamed_within: float) -> None:
    """Erase PERSON (id or unambiguous name) everywhere: faces, embeddings, index, crops."""
    with library_errors(), _opened(data_dir) as catalogue:
        preview = catalogue.preview_erasure(person, unnamed_within=unnamed_within)
        found = preview.person
        out.print(
            f"{found.name} ({found.id}): {len(preview.faces)} faces, and {len(preview.unnamed)} "
            f"unnamed faces within {unnamed_within} of one of them, erased with them"
        )
        total = len(preview.faces) + len(preview.unnamed)
        _confirm_or_refuse(f"Erase {found.name} and {total} faces for good?", yes, "erase")
        erasure = catalogue.erase_person(preview, optout=opt_out)
    out.print(
        f"erased {len(erasure.faces)} faces ({erasure.unnamed} unnamed) and "
        f"{len(erasure.photos)} photos left with no face; "
        f"the audit log names this erasure {erasure.token}"
    )
    if erasure.optout:
        out.print(f"opted their faces out as {erasure.optout}")
    else:
        out.print(
            "your photo files are not touched: indexing them again stores these faces again "
            "(unnamed; labels naming them are refused); erase with --optout, or "
            "`iddetective optout add`, to keep them out"
        )


def _confirm_or_refuse(question: str, yes: bool, command: str) -> None:
    """Ask before a destructive step; without a terminal, refuse unless --yes was given."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"{command} erases for good and asks first, but there is no terminal to ask on; "
            "check what it lists above and pass --yes"
        )
    click.confirm(question, abort=True, err=True)


# -- discovering people (docs/clustering.md) -----------------------------------------------------
@main.command()
@data_option
@click.option("--full", is_flag=True, help="Cluster every unnamed face again, not only new ones.")
def cluster(data_dir: Path, full: bool) -> None:
    """Group the faces nobody has named into likely people (new faces join clusters)."""
    with library_errors(), _opened(data_dir) as catalogue:
        report = catalogue.cluster(full=full)
    _print_clustering(report)


def _print_clustering(report: ClusterReport) -> None:
    out.print(
        f"considered {report.considered} unnamed faces ({report.considered - report.clustered} "
        f"below the quality bar), {report.joined} joined existing clusters, "
        f"in {report.seconds:.1f} s; {report.clusters} clusters of 2+ faces hold "
        f"{report.faces_in_clusters} faces (iddetective clusters)"
    )


@main.command()
@data_option
@click.option("--min-size", type=click.IntRange(1), default=2, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def clusters(data_dir: Path, min_size: int, limit: int, as_json: bool) -> None:
    """List clusters of unnamed faces, largest first, with a few face ids and photos."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        found = catalogue.clusters(min_size=min_size, limit=limit)
    if as_json:
        for item in found:
            click.echo(json.dumps(asdict(item), ensure_ascii=False))
        return
    table = Table("cluster", "faces", "face ids", "photos")
    for item in found:
        paths = sorted({face.photo.paths[0] for face in item.faces if face.photo.paths})
        shown = ", ".join(str(face.id) for face in item.faces)
        more = ", ..." if item.size > len(item.faces) else ""
        table.add_row(str(item.id), str(item.size), shown + more, "\n".join(paths[:3]))
    out.print(table if found else "no clusters (iddetective cluster makes them)")


@main.command()
@click.argument("person")
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def faces(person: str, data_dir: Path, as_json: bool) -> None:
    """List the faces of PERSON (id or name) with their ids, to move or reject them."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        found_person, found = catalogue.person(person)
    if as_json:
        for face in found:
            click.echo(json.dumps(asdict(face), ensure_ascii=False))
        return
    out.print(f"{found_person.name} ({found_person.id}): {len(found)} faces")
    for face in found:
        out.print(f"{face.id:>8}  {face.photo.paths[0] if face.photo.paths else face.photo.sha256}")


def person_options(command: F) -> F:
    """--person REF or --new NAME: who faces go to."""
    command = click.option("--new", "new_name", metavar="NAME", help="A new person named so.")(
        command
    )
    return click.option("--person", metavar="ID_OR_NAME", help="An existing person.")(command)


@main.command("name-cluster")
@click.argument("cluster_id", type=int)
@person_options
@data_option
def name_cluster(cluster_id: int, person: str | None, new_name: str | None, data_dir: Path) -> None:
    """Give the faces of cluster CLUSTER_ID to a person (--person) or a new one (--new)."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        edit = catalogue.name_cluster(cluster_id, person=person, new_name=new_name)
    _print_edit(edit)


@main.command("move-faces")
@click.argument("face_ids", type=int, nargs=-1, required=True)
@person_options
@data_option
def move_faces(
    face_ids: tuple[int, ...], person: str | None, new_name: str | None, data_dir: Path
) -> None:
    """Move faces to another person (--person) or a new one (--new): split a person."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        edit = catalogue.move_faces(face_ids, person=person, new_name=new_name)
    _print_edit(edit)


@main.command()
@click.argument("face_ids", type=int, nargs=-1, required=True)
@data_option
def reject(face_ids: tuple[int, ...], data_dir: Path) -> None:
    """Take faces from their person for good: they never rejoin them automatically."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        edit = catalogue.reject_faces(face_ids)
    _print_edit(edit)


@main.command()
@click.argument("target")
@click.argument("source")
@data_option
def merge(target: str, source: str, data_dir: Path) -> None:
    """Merge person SOURCE into TARGET (faces, names, accounts, lists, relations)."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        edit = catalogue.merge_people(target, source)
    _print_edit(edit)


@main.command()
@click.argument("edit_id", type=int)
@data_option
def undo(edit_id: int, data_dir: Path) -> None:
    """Undo the recorded edit EDIT_ID (iddetective edits lists them)."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        edit = catalogue.undo(edit_id)
    _print_edit(edit)


@main.command()
@data_option
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def edits(data_dir: Path, limit: int, as_json: bool) -> None:
    """List the recorded edits of who is who (name, merge, split, reject, undo), newest first."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        found = catalogue.edits(limit=limit)
    if as_json:
        for edit in found:
            click.echo(json.dumps(asdict(edit), ensure_ascii=False))
        return
    for edit in found:
        undone = f"  (undone {edit.undone_at} by {edit.undone_by})" if edit.undone_at else ""
        out.print(f"{edit.id:>6}  {edit.at}  {edit.actor}  {edit.summary}{undone}")
    if not found:
        out.print("no edits yet")


def _print_edit(edit: Edit) -> None:
    out.print(f"edit {edit.id}: {edit.summary}")
    if edit.kind != "undo":
        out.print(f"undo with: iddetective undo {edit.id}")


@main.group()
def optout() -> None:
    """The opt-out registry: faces that must never match (docs/privacy.md)."""


@optout.command("add")
@click.argument("photo", type=click.Path(path_type=str, readable=False))
@data_option
@click.option(
    "--person",
    "person",
    default=None,
    help="Who is opting out (id or name) [default: the person of the nearest face, if a match].",
)
@click.option(
    "--erase-others",
    is_flag=True,
    help="Also erase faces within reach that are labelled as someone else (kept by default).",
)
@click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
def optout_add(
    photo: str, data_dir: Path, person: str | None, erase_others: bool, yes: bool
) -> None:
    """Opt out the one face in PHOTO: erase matching faces now, block them from now on."""
    with library_errors(), _opened(data_dir, create=True) as catalogue:
        preview = catalogue.preview_optout(photo, person=person)
        _print_optout_preview(preview, erase_others)
        erased = len(preview.to_erase(erase_others))
        _confirm_or_refuse(
            f"Block this face from now on and erase {erased} faces?", yes, "optout add"
        )
        result = catalogue.add_optout(preview, erase_others=erase_others)
    gone = result.erased
    out.print(
        f"opted out as {result.optout.token}; erased {len(gone.faces)} faces "
        f"({gone.people} people's, {gone.unnamed} unnamed) and {len(gone.photos)} photos "
        "left with no face"
    )
    kept = sum(len(g.faces) for g in result.kept)
    if kept:
        out.print(
            f"kept {kept} faces of {len(result.kept)} people labelled as someone else "
            "(--erase-others erases them too)"
        )


def _print_optout_preview(preview: OptOutPreview, erase_others: bool) -> None:
    out.print(f"faces within {distances.OPTOUT_THRESHOLD} of the face in {preview.photo}:")
    if not preview.groups:
        out.print("  none")
    others = preview.others
    for group in preview.groups:
        if group.person is None:
            who, fate = "unnamed", "erased"
        elif group not in others:
            who, fate = f"{group.person.name} ({group.person.id})", "erased: the person opting out"
        else:
            who = f"{group.person.name} ({group.person.id})"
            fate = "erased (--erase-others)" if erase_others else "kept: labelled as someone else"
        out.print(f"  {who}: {len(group.faces)} faces, nearest {group.nearest:.3f}; {fate}")
    if preview.subject is None:
        out.print("  (no stored face is a match: pass --person to say who is opting out)")


@optout.command("list")
@data_option
def optout_list(data_dir: Path) -> None:
    """List opt-outs by token and date (the faces are never shown)."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        found = catalogue.optouts()
    for item in found:
        out.print(f"{item.token}  {item.created_at}  {item.faces} faces")
    if not found:
        out.print("no opt-outs")


@optout.command("remove")
@click.argument("token")
@data_option
def optout_remove(token: str, data_dir: Path) -> None:
    """Withdraw the opt-out TOKEN (faces erased when it was added stay erased)."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        removed = catalogue.remove_optout(token)
    out.print(f"withdrew opt-out {removed.token}")


@main.command()
@data_option
@click.option(
    "--audit-days",
    type=int,
    default=365,
    show_default=True,
    help="Keep audit entries this many days.",
)
def maintenance(data_dir: Path, audit_days: int) -> None:
    """Retention: purge old audit entries and orphaned cache files; compact the catalogue."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        report = catalogue.maintenance(audit_days=audit_days)
    out.print(
        f"purged {report.audit_entries} audit entries older than {audit_days} days, "
        f"{report.media_files} cached thumbnails and crops of removed photos and faces, "
        f"{report.partial_files} partly written files; catalogue compacted"
    )


@main.command()
@data_option
@click.option(
    "--quick",
    is_flag=True,
    help="Compare photo files by size and time only, without reading them.",
)
def check(data_dir: Path, quick: bool) -> None:
    """Verify the catalogue, the vector index, the photo files and the media cache; change
    nothing. Exits 1 if anything is wrong, naming what and where."""
    with (
        library_errors(),
        _catalogue(data_dir) as catalogue,
        _progress_bar("reading photo files", "files") as update,
    ):
        report = catalogue.check(quick=quick, progress=update)
    for part, count in report.checked.items():
        found = sum(problem.part == part for problem in report.problems)
        verdict = Text("ok", style="green") if not found else Text(f"{found} problems", "red")
        out.print(Text(f"{part}: {count} checked, ") + verdict)
    for problem in report.problems:
        out.print(Text(f"{problem.part}: ", style="red") + Text(f"{problem.where}: {problem.what}"))
    for note in report.notes:
        out.print(f"note: {note}")
    if not report.ok:
        sys.exit(1)


@main.command()
@data_option
def reindex(data_dir: Path) -> None:
    """Rebuild the vector index from the catalogue (it is otherwise kept up to date)."""
    with library_errors(), _opened(data_dir) as catalogue:
        faces = catalogue.reindex()
    out.print(f"the vector index holds {faces} faces")


@main.command()
@data_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=None,
    help="Processes analysing uploaded photos (default: CPU cores, at most 4).",
)
@click.option(
    "--broker",
    metavar="URL",
    envvar=BROKER_ENV,
    default=None,
    help="The ingestion workers' Redis (redis://...; default $IDDETECTIVE_BROKER), "
    "watched and steered on the /fleet page.",
)
@click.option(
    "--max-megapixels",
    type=click.FloatRange(0.01, 1000),
    default=50.0,
    show_default=True,
    help="Largest photo an upload may declare, in millions of pixels (checked before decoding).",
)
@click.option(
    "--max-faces",
    type=click.IntRange(1, 10_000),
    default=40,
    show_default=True,
    help="Most faces an uploaded photo may have (more: refused before any is embedded).",
)
@click.option(
    "--analysis-seconds",
    type=click.FloatRange(0.1, 3600),
    default=15.0,
    show_default=True,
    help="Longest one photo's analysis may take; past it the photo is refused and its "
    "worker process replaced.",
)
def serve(
    data_dir: Path,
    host: str,
    port: int,
    workers: int | None,
    broker: str | None,
    max_megapixels: float,
    max_faces: int,
    analysis_seconds: float,
) -> None:
    """Serve the search pages and the HTTP API (OpenAPI at /docs)."""
    import uvicorn

    from .web import AnalysisLimits, ServerSettings, create_app, first_admin_key

    run = _settings(data_dir, broker=broker)
    with library_errors():
        new_key = first_admin_key(data_dir, host, db=run.db)
    limits = AnalysisLimits(round(max_megapixels * 1e6), max_faces, analysis_seconds)
    settings = ServerSettings(
        data_dir,
        db=run.db,
        vector_index=run.vector_index,
        broker=run.broker,
        hosts_file=run.hosts_file,
        limits=limits,
    )
    if workers is not None:
        settings = replace(settings, analysis_workers=workers)
    if new_key:
        out.print("Created the first admin key (shown once; keep it):")
        out.print(f"  {new_key}")
    else:
        out.print(
            f"Log in with an API key (iddetective keys create --role search --data {data_dir})."
        )
    shown = f"[{host}]" if ":" in host else host
    out.print(f"Serving {data_dir}: open http://{shown}:{port}/ (Ctrl-C stops)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (roles: admin, search, ingest)."""


@keys.command("create")
@data_option
@click.option(
    "--role",
    type=click.Choice(["admin", "search", "ingest"]),
    required=True,
    help="What it may do.",
)
@click.option("--label", default="", help="A note on who or what uses the key.")
def keys_create(data_dir: Path, role: str, label: str) -> None:
    """Create a key and print it (this once; only its hash is kept)."""
    with library_errors(), _catalogue(data_dir, create=True) as catalogue:
        secret, key = catalogue.create_key(role, label)
    err.print(f"created {role} key {key.id}; it is shown this once:")
    click.echo(secret)


@keys.command("list")
@data_option
def keys_list(data_dir: Path) -> None:
    """List the keys (ids, roles, labels; never the keys themselves)."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        found = catalogue.api_keys()
    table = Table("id", "role", "label", "created", "revoked")
    for key in found:
        table.add_row(key.id, key.role, key.label, key.created_at, key.revoked_at or "")
    out.print(table)


@keys.command("revoke")
@click.argument("key_id")
@data_option
def keys_revoke(key_id: str, data_dir: Path) -> None:
    """Revoke the key KEY_ID; it stops working at once."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        key = catalogue.revoke_key(key_id)
    out.print(f"revoked {key.role} key {key.id} at {key.revoked_at}")


@main.command()
@data_option
@click.option("--limit", type=int, default=100, show_default=True, help="Entries to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def audit(data_dir: Path, limit: int, as_json: bool) -> None:
    """Show the audit log of searches, newest first."""
    with library_errors(), _catalogue(data_dir) as catalogue:
        entries = catalogue.audit(limit=limit)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry.__dict__, ensure_ascii=False))
        return
    table = Table("when", "who", "kind", "query", "results")
    for entry in entries:
        query = f"photo {entry.query_sha256}" if entry.query_sha256 else repr(entry.query_text)
        results = str(entry.results)
        if entry.people is not None:  # erasures: faces, of how many named people
            results += f" ({entry.people} people)"
        table.add_row(entry.at, entry.actor, entry.kind, query, results)
    out.print(table)


# -- ingestion workers (ingest/fleet/, docs/scaling.md) --------------------------------------------


def _fleet() -> Any:
    """The fleet package, imported on use: celery comes with the `server` extra."""
    try:
        from .ingest import fleet
    except ImportError as error:
        raise UsageError(
            f"ingestion workers need celery[redis] ({error}): pip install 'iddetective[server]'"
        ) from None
    return fleet


def broker_option(command: F) -> F:
    """--broker: the Redis the workers take batches from (required)."""
    return click.option(
        "--broker",
        metavar="URL",
        envvar=BROKER_ENV,
        required=True,
        help="The workers' Redis (redis://...; default $IDDETECTIVE_BROKER).",
    )(command)


def worker_names_option(command: F) -> F:
    """--worker NAME: act on some workers only."""
    return click.option(
        "--worker",
        "workers",
        multiple=True,
        metavar="NAME",
        help="Only this worker (repeatable; default: every worker).",
    )(command)


@main.command()
@broker_option
@data_option
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=None,
    help="Processes analysing photos [default: one per CPU].",
)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "solo"]),
    default="prefork",
    show_default=True,
    help="prefork: a pool of processes; solo: batches run in the worker process itself.",
)
@click.option("--name", default=None, help="Worker name [default: iddetective@HOST].")
@click.option(
    "--visibility-timeout",
    type=click.FloatRange(0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds before a batch its worker never finished is given to another worker.",
)
@click.option(
    "--burst",
    is_flag=True,
    help="Drain the queue, then exit (once no batch waits, runs or is reserved here).",
)
def worker(
    broker: str,
    data_dir: Path,
    concurrency: int | None,
    pool: str,
    name: str | None,
    visibility_timeout: float,
    burst: bool,
) -> None:
    """Take photo batches from the broker, analyse them and store them, until stopped
    (with --burst, until the queue is empty)."""
    with library_errors():
        catalogue = _settings(data_dir).db or data_dir / CATALOG_FILE
        _fleet().run_worker(
            broker,
            catalogue,
            concurrency=concurrency,
            pool=pool,
            name=name,
            visibility_timeout=visibility_timeout,
            burst=burst,
        )


@main.group()
def fleet() -> None:
    """Watch and steer the ingestion workers (status, pause, resume, resize, stop)."""


@fleet.command("status")
@broker_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fleet_status(broker: str, as_json: bool) -> None:
    """List every worker, the photos each has done and failed, and the batches waiting."""
    with library_errors():
        status = _fleet().fleet_status(broker)
    if as_json:
        click.echo(json.dumps(asdict(status)))
        return
    columns = ("worker", "host", "pid", "pool", "processes", "alive", "busy", "photos")
    table = Table(*columns, "failures", "paused")
    for w in status.workers:
        alive, paused = ("yes" if w.alive else "NO"), ("yes" if w.paused else "")
        row = (w.name, w.host, str(w.pid or ""), w.pool, str(w.concurrency), alive, str(w.busy))
        table.add_row(*row, str(w.photos_done), str(w.photos_failed), paused)
    out.print(table)
    out.print(f"queue: {status.queue_depth} batches waiting")


@fleet.command("pause")
@broker_option
@worker_names_option
def fleet_pause(broker: str, workers: tuple[str, ...]) -> None:
    """Stop taking batches (running ones finish)."""
    with library_errors():
        _print_replies(_fleet().pause_workers(broker, workers))


@fleet.command("resume")
@broker_option
@worker_names_option
def fleet_resume(broker: str, workers: tuple[str, ...]) -> None:
    """Take batches again."""
    with library_errors():
        _print_replies(_fleet().resume_workers(broker, workers))


@fleet.command("resize")
@click.argument("processes", type=click.IntRange(1))
@broker_option
@worker_names_option
def fleet_resize(processes: int, broker: str, workers: tuple[str, ...]) -> None:
    """Give each worker PROCESSES pool processes."""
    with library_errors():
        _print_replies(_fleet().resize_workers(broker, processes, workers))


@fleet.command("stop")
@broker_option
@worker_names_option
def fleet_stop(broker: str, workers: tuple[str, ...]) -> None:
    """Stop workers once their running batches are done."""
    with library_errors():
        _print_replies(_fleet().stop_workers(broker, workers))


def hosts_file_option(command: F) -> F:
    """--hosts: the file naming the machines `fleet up/down` reach over SSH."""
    return click.option(
        "--hosts",
        "hosts_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The hosts file [default: $IDDETECTIVE_HOSTS, else ~/.config/iddetective/hosts.toml].",
    )(command)


@fleet.command("up")
@click.option(
    "--host", "host_name", required=True, metavar="NAME", help="A host of the hosts file."
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Worker processes to start there.",
)
@click.option(
    "--broker",
    metavar="URL",
    default=None,
    help="The workers' Redis as that host reaches it [default: IDDETECTIVE_BROKER of its env].",
)
@click.option(
    "--db",
    metavar="URL",
    default=None,
    help="The catalogue as that host reaches it [default: IDDETECTIVE_DB of its env].",
)
@hosts_file_option
def fleet_up(
    host_name: str, workers: int, broker: str | None, db: str | None, hosts_file: Path | None
) -> None:
    """Start ingestion workers on a host of the hosts file, over SSH."""
    from .ingest.fleet.remote_hosts import fleet_up as start_workers

    with library_errors():
        hosts = hosts_file or default_hosts_file(os.environ)
        started = start_workers(hosts, host_name, workers, broker, db)
    for worker in started:
        when = worker.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        out.print(f"{worker.host}: worker {worker.pid} started {when}, log {worker.log}")


@fleet.command("down")
@click.option(
    "--host", "host_name", required=True, metavar="NAME", help="A host of the hosts file."
)
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds the workers get to finish their batches before SIGKILL.",
)
@hosts_file_option
def fleet_down(host_name: str, grace: float, hosts_file: Path | None) -> None:
    """Stop the workers that `fleet up` started on a host, over SSH."""
    from .ingest.fleet.remote_hosts import fleet_down as stop_workers

    with library_errors():
        stopped = stop_workers(hosts_file or default_hosts_file(os.environ), host_name, grace)
    listed = f" ({', '.join(map(str, stopped))})" if stopped else ""
    out.print(f"{host_name}: stopped {len(stopped)} workers{listed}")


def _print_replies(replies: list[Any]) -> None:
    if not replies:
        err.print("no worker answered")
        sys.exit(1)
    for reply in replies:
        out.print(f"{reply.name}: {reply.message}")
    if not all(reply.ok for reply in replies):
        sys.exit(1)
