"""Run an ingestion worker: a Celery worker consuming the fleet's queue into one catalogue.

A worker announces itself in a Redis hash (`REGISTRY`) when it is ready and leaves it when
it stops, so `fleet status` also lists workers that died without stopping.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from celery import signals

from ..child_processes import die_with_parent
from ..errors import UsageError
from .app import DEFAULT_VISIBILITY_TIMEOUT, QUEUE, fleet_app
from .tasks import use_catalogue, warm_up

__all__ = ["POOLS", "REGISTRY", "default_worker_name", "run_worker"]

POOLS = ("prefork", "solo")
#: The Redis hash of workers that announced themselves: name -> JSON (host, pid, started).
REGISTRY = "iddetective:workers"


def default_worker_name() -> str:
    """`iddetective@<host name>`: one worker (of several processes) per machine."""
    return f"iddetective@{socket.gethostname()}"


def run_worker(
    broker: str,
    catalogue: str | Path,
    *,
    concurrency: int | None = None,
    pool: str = "prefork",
    name: str | None = None,
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
    loglevel: str = "INFO",
) -> None:
    """Consume ingestion batches from `broker` into `catalogue` until stopped.

    `concurrency` worker processes (default: one per CPU; `pool="solo"` runs batches in
    this process) each load the models and open the catalogue once.
    """
    if pool not in POOLS:
        raise UsageError(f"the pool must be one of {', '.join(POOLS)}, not {pool!r}")
    if concurrency is not None and concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, not {concurrency}")
    app = fleet_app(broker, visibility_timeout=visibility_timeout)
    use_catalogue(catalogue)
    # Sent in each pool process as it starts (by the solo pool too, in this process).
    signals.worker_process_init.connect(warm_up, weak=False)
    if pool == "prefork":
        signals.worker_process_init.connect(_die_with_worker, weak=False)
    signals.worker_ready.connect(_announce, weak=False)
    signals.worker_shutdown.connect(_withdraw, weak=False)
    arguments = ["worker", f"--pool={pool}", f"--queues={QUEUE}", f"--loglevel={loglevel}"]
    arguments += ["--without-mingle", "--without-gossip"]
    arguments.append(f"--hostname={name or default_worker_name()}")
    if pool == "prefork":
        arguments.append(f"--concurrency={concurrency or os.cpu_count() or 1}")
    app.worker_main(arguments)


def _die_with_worker(**_: object) -> None:
    # Celery asks Linux for the death signal itself (and forks from threads of its own):
    # the watching thread is for the other systems.
    die_with_parent(death_signal=False)


def _announce(sender: Any = None, **_: object) -> None:
    # The sender is the worker's consumer.
    entry = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    sender.app.backend.client.hset(REGISTRY, sender.hostname, json.dumps(entry))


def _withdraw(sender: Any = None, **_: object) -> None:
    # The sender is the worker controller; stopping must not fail because the broker is away.
    with contextlib.suppress(Exception):
        sender.app.backend.client.hdel(REGISTRY, sender.hostname)
