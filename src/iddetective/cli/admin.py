"""Commands that run and guard the catalogue: check, serve, API keys."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from ..settings import (
    BROKER_ENV,
)
from .common import (
    catalogue_for,
    data_option,
    err,
    library_errors,
    main,
    out,
    progress_bar,
    settings_for,
)

#: Nothing to import: the commands register themselves on `main`.
__all__: list[str] = []


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
        catalogue_for(data_dir) as catalogue,
        progress_bar("reading photo files", "files") as update,
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

    from ..web import AnalysisLimits, ServerSettings, create_app, first_admin_key

    run = settings_for(data_dir, broker=broker)
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
        pipeline=run.pipeline,
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
    with library_errors(), catalogue_for(data_dir, create=True) as catalogue:
        secret, key = catalogue.create_key(role, label)
    err.print(f"created {role} key {key.id}; it is shown this once:")
    click.echo(secret)


@keys.command("list")
@data_option
def keys_list(data_dir: Path) -> None:
    """List the keys (ids, roles, labels; never the keys themselves)."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
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
    with library_errors(), catalogue_for(data_dir) as catalogue:
        key = catalogue.revoke_key(key_id)
    out.print(f"revoked {key.role} key {key.id} at {key.revoked_at}")
