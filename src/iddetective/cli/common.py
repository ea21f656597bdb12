"""What every command shares: the group, the options every command takes, the consoles,
errors turned into exit codes (cli/__init__.py lists them), progress bars.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from rich.text import Text

from ..catalogue import POSTGRES_SCHEMES, Catalogue
from ..errors import IDDetectiveError, UsageError, from_os_error
from ..faces.pipeline import PipelineSettings
from ..settings import (
    DB_ENV,
    Settings,
    default_data_dir,
)

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_PARTIAL",
    "F",
    "catalogue_for",
    "confirm_or_refuse",
    "data_option",
    "err",
    "fallback_option",
    "fleet_package",
    "library_errors",
    "main",
    "opened",
    "out",
    "pipeline_settings",
    "progress_bar",
    "settings_for",
    "threshold_options",
]


EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130
#: Where --db's value waits in the click context for `settings_for`.
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
    # Kept for `settings_for`: every command opens its catalogue through it.
    if value is not None:
        if not value.startswith(POSTGRES_SCHEMES):
            raise click.BadParameter("give a postgresql:// URL", context, parameter)
        context.meta[_DB_OPTION] = value


def settings_for(data_dir: Path, **options: Any) -> Settings:
    """This run's settings: the options given (--data, --db, ...), else the environment."""
    context = click.get_current_context(silent=True)
    db = context.meta.get(_DB_OPTION) if context is not None else None
    return Settings.from_environment(os.environ, data_dir=data_dir, db=db, **options)


def catalogue_for(
    data_dir: Path, *, pipeline: PipelineSettings | None = None, **options: Any
) -> Catalogue:
    """The catalogue this run's settings name, analysing with `pipeline` (the options'
    settings; where models are kept comes from the environment); `options` as
    `Catalogue.from_settings`'s."""
    return Catalogue.from_settings(settings_for(data_dir, pipeline=pipeline), **options)


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
        help="Largest distance that counts as a match [default: the model's, from its "
        "calibration table: 0.383 for dlib-resnet-v1].",
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


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"-- {self.unit}/s")


@contextmanager
def progress_bar(label: str, unit: str) -> Iterator[Callable[[int, int], None]]:
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


@contextmanager
def opened(data_dir: Path, **options: Any) -> Iterator[Catalogue]:
    """The catalogue, with a progress bar whenever its vector index must be rebuilt."""
    with (
        progress_bar("updating the vector index", "faces") as update,
        catalogue_for(data_dir, index_progress=update, **options) as catalogue,
    ):
        yield catalogue


def pipeline_settings(upsample: int, fallback_detector: str | None) -> PipelineSettings:
    """The face pipeline's settings from the --upsample and --fallback-detector options."""
    return PipelineSettings(upsample=upsample, fallback_detector=fallback_detector)


def confirm_or_refuse(question: str, yes: bool, command: str) -> None:
    """Ask before a destructive step; without a terminal, refuse unless --yes was given."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"{command} erases for good and asks first, but there is no terminal to ask on; "
            "check what it lists above and pass --yes"
        )
    click.confirm(question, abort=True, err=True)


# -- ingestion workers (ingest/fleet/, docs/scaling.md) --------------------------------------------


def fleet_package() -> Any:
    """The fleet package, imported on use: celery comes with the `server` extra."""
    try:
        from ..ingest import fleet
    except ImportError as error:
        raise UsageError(
            f"ingestion workers need celery[redis] ({error}): pip install 'iddetective[server]'"
        ) from None
    return fleet
