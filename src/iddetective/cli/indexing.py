"""Commands that fill the catalogue: index, import, remove, failures, reindex."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from ..entities import SaveResult
from ..faces.pipeline import PipelineSettings
from ..ingest.indexing import BATCH_PHOTOS, IndexReport
from ..settings import (
    BROKER_ENV,
)
from ..sources.fetch import FetchSettings
from .common import (
    EXIT_INTERRUPTED,
    EXIT_PARTIAL,
    catalogue_for,
    data_option,
    err,
    fallback_option,
    fleet_package,
    library_errors,
    main,
    opened,
    out,
    pipeline_settings,
    progress_bar,
)
from .curation import print_clustering

#: Nothing to import: the commands register themselves on `main`.
__all__: list[str] = []


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
        opened(
            data_dir, create=True, pipeline=pipeline_settings(upsample, fallback_detector)
        ) as catalogue,
    ):
        with progress_bar("indexing", "photos") as update:
            options: dict[str, Any] = {
                "people": people,
                "people_from_folders": people_from_folders,
                "prune": prune,
                "retry_failed": retry_failed,
                "basis": basis,
                "progress": _report_failures(update),
            }
            if broker:
                options["runner"] = fleet_package().FleetRunner(broker, batch=batch)
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
        opened(data_dir, create=True) as catalogue,
        progress_bar("indexing", "photos") as update,
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


def _report_failures(
    update: Callable[[int, int], None],
) -> Callable[[int, int, SaveResult | None], None]:
    def on_photo(done: int, total: int, result: SaveResult | None) -> None:
        update(done, total)
        if result is not None and result.status == "failed":
            failed = Text("failed: ", style="yellow") + Text(f"{result.path}: {result.reason}")
            err.print(failed)

    return on_photo


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
        print_clustering(report.clustering)
    if report.reviews:
        out.print(
            f"{len(report.reviews)} labelled photos to review: iddetective review --data {data_dir}"
        )


@main.command()
@click.argument("photo")
@data_option
def remove(photo: str, data_dir: Path) -> None:
    """Remove one PHOTO (a path it was indexed from, or its SHA-256) and its faces."""
    with library_errors(), opened(data_dir) as catalogue:
        removed = catalogue.remove_photo(photo)
    out.print(f"removed photo {removed.sha256} ({', '.join(removed.paths) or 'no path'})")


@main.command()
@data_option
def failures(data_dir: Path) -> None:
    """List files and manifest rows that could not be indexed, with the reason."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        found = catalogue.failures()
    for failure in found:
        out.print(f"{failure.path}: {failure.reason}  ({failure.failed_at})")
    if not found:
        out.print("no failures")


@main.command()
@data_option
def reindex(data_dir: Path) -> None:
    """Rebuild the vector index from the catalogue (it is otherwise kept up to date)."""
    with library_errors(), opened(data_dir) as catalogue:
        faces = catalogue.reindex()
    out.print(f"the vector index holds {faces} faces")
