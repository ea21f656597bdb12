"""Commands of the ingestion workers: worker, fleet (docs/scaling.md)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..catalogue import CATALOG_FILE
from ..settings import (
    BROKER_ENV,
    default_hosts_file,
)
from .common import F, data_option, err, fleet_package, library_errors, main, out, settings_for

#: Nothing to import: the commands register themselves on `main`.
__all__: list[str] = []


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
        settings = settings_for(data_dir)
        catalogue = settings.db or data_dir / CATALOG_FILE
        fleet_package().run_worker(
            broker,
            catalogue,
            concurrency=concurrency,
            pool=pool,
            name=name,
            visibility_timeout=visibility_timeout,
            burst=burst,
            model_cache=settings.pipeline.model_cache,
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
        status = fleet_package().fleet_status(broker)
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
        _print_replies(fleet_package().pause_workers(broker, workers))


@fleet.command("resume")
@broker_option
@worker_names_option
def fleet_resume(broker: str, workers: tuple[str, ...]) -> None:
    """Take batches again."""
    with library_errors():
        _print_replies(fleet_package().resume_workers(broker, workers))


@fleet.command("resize")
@click.argument("processes", type=click.IntRange(1))
@broker_option
@worker_names_option
def fleet_resize(processes: int, broker: str, workers: tuple[str, ...]) -> None:
    """Give each worker PROCESSES pool processes."""
    with library_errors():
        _print_replies(fleet_package().resize_workers(broker, processes, workers))


@fleet.command("stop")
@broker_option
@worker_names_option
def fleet_stop(broker: str, workers: tuple[str, ...]) -> None:
    """Stop workers once their running batches are done."""
    with library_errors():
        _print_replies(fleet_package().stop_workers(broker, workers))


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
    from ..ingest.fleet.remote_hosts import fleet_up as start_workers

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
    from ..ingest.fleet.remote_hosts import fleet_down as stop_workers

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
