"""Run an ingestion worker: a Celery worker consuming the fleet's queue into one catalogue.

A worker announces itself in a Redis hash (`REGISTRY`) when it is ready and leaves it when
it stops, so `fleet status` also lists workers that died without stopping.

A `burst` worker drains the queue, then exits (as rq's burst mode; what tests and one-off
catch-up runs want): once the queue is empty and the worker has no batch running or
reserved at `BURST_IDLE_LOOKS` looks in a row, `BURST_POLL_SECONDS` apart, it stops as on
SIGTERM (warm: nothing is cut short) and exits 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from celery import signals

from ...errors import UsageError
from ...processes.children import die_with_parent
from .app import DEFAULT_VISIBILITY_TIMEOUT, QUEUE, fleet_app, queue_depth
from .tasks import use_catalogue, use_model_cache, warm_up

__all__ = [
    "BURST_IDLE_LOOKS",
    "BURST_POLL_SECONDS",
    "POOLS",
    "REGISTRY",
    "default_worker_name",
    "run_worker",
]

POOLS = ("prefork", "solo")
#: The Redis hash of workers that announced themselves: name -> JSON (host, pid, started).
REGISTRY = "iddetective:workers"
#: A burst worker looks at the queue this often (seconds) ...
BURST_POLL_SECONDS = 0.5
#: ... and stops after this many looks in a row found nothing to do: a batch taken from
#: the queue between two looks is seen running or reserved at the next.
BURST_IDLE_LOOKS = 3


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
    burst: bool = False,
    model_cache: Path | None = None,
) -> None:
    """Consume ingestion batches from `broker` into `catalogue` until stopped (with `burst`,
    until the queue is drained).

    `concurrency` worker processes (default: one per CPU; `pool="solo"` runs batches in
    this process) each load the models and open the catalogue once; checked models are
    kept in `model_cache` (None: the user's cache), made ready here before they start.
    """
    if pool not in POOLS:
        raise UsageError(f"the pool must be one of {', '.join(POOLS)}, not {pool!r}")
    if concurrency is not None and concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, not {concurrency}")
    app = fleet_app(broker, visibility_timeout=visibility_timeout)
    use_catalogue(catalogue)
    use_model_cache(model_cache)
    # Sent in each pool process as it starts (by the solo pool too, in this process).
    signals.worker_process_init.connect(warm_up, weak=False)
    if pool == "prefork":
        signals.worker_process_init.connect(_die_with_worker, weak=False)
    signals.worker_ready.connect(_announce, weak=False)
    signals.worker_shutdown.connect(_withdraw, weak=False)
    if burst:
        signals.worker_ready.connect(_stop_when_drained, weak=False)
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


def _stop_when_drained(sender: Any = None, **_: object) -> None:
    # The sender is the worker's consumer; it runs in the worker's main process.
    watcher = threading.Thread(
        target=_watch_queue, args=(sender.app,), name="burst", daemon=True
    )
    watcher.start()


def _watch_queue(app: Any) -> None:
    idle = 0
    while idle < BURST_IDLE_LOOKS:
        time.sleep(BURST_POLL_SECONDS)
        idle = 0 if _busy(app) else idle + 1
    os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown: what runs is finished


def _busy(app: Any) -> bool:
    """Whether a batch waits in the queue, runs here or is reserved here (its retry or a
    prefetched one); a broker that cannot be asked counts as busy."""
    from celery.worker import state

    if state.active_requests or state.reserved_requests:
        return True
    try:
        return queue_depth(app) > 0
    except Exception:  # the broker restarting: look again later
        return True
