"""The JSON API of the ingestion workers (docs/scaling.md): watch and steer them (admin only).

Each endpoint calls the same `iddetective.ingest.fleet.control` function as `iddetective fleet …`,
on the broker of the server's settings (`ServerSettings.broker`). The workers count in Redis
the photos each has done and failed; the photos per second over the last minute are computed
here from the successive answers this server got (`FleetMonitor`, sampled on every status
request, i.e. every poll of the /fleet page), as is when each worker last answered.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request

from ..entities import Stats
from ..errors import UsageError
from ..ingest.fleet import remote_hosts
from ..urls import masked_url
from . import models
from .auth import Caller, requires
from .errors import ERROR_RESPONSES, FleetNotConfigured, FleetUnavailable
from .routing import CheckedRoute

if TYPE_CHECKING:
    from ..ingest.fleet import WorkerReply, WorkerStatus

__all__ = ["RATE_WINDOW", "FleetMonitor", "fleet_totals", "router"]

router = APIRouter(
    prefix="/api/fleet", tags=["fleet"], responses=ERROR_RESPONSES, route_class=CheckedRoute
)

Admin = Annotated[Caller, Depends(requires("admin"))]

#: Seconds of samples the rates are computed over.
RATE_WINDOW = 60.0
#: Seconds the catalogue's size is reused for: it walks the data directory, and every open
#: dashboard asks for it every 2 s.
STATS_SECONDS = 5.0
NO_BROKER = (
    "no broker is configured for the ingestion workers: start the server with "
    "--broker redis://HOST:PORT/DB, or set IDDETECTIVE_BROKER"
)


class FleetMonitor:
    """What this server saw of the workers over time: photos done per worker (for their
    rates over the last `window` seconds), when each last answered, and the catalogue size."""

    def __init__(
        self, window: float = RATE_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self._clock = clock
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self._seen: dict[str, float] = {}
        self._stats: tuple[float, Stats] | None = None
        self._lock = threading.Lock()

    def observe(self, workers: Sequence[WorkerStatus]) -> list[dict[str, Any]]:
        """Record the answer of `fleet_status`; each worker as the API shows it."""
        now, wall = self._clock(), time.time()
        with self._lock:
            for gone in set(self._seen) - {w.name for w in workers}:
                self._forget(gone)
            return [self._observe_one(worker, now, wall) for worker in workers]

    def catalogue_size(self, read: Callable[[], Stats]) -> Stats:
        """The catalogue's size from `read`, reused for STATS_SECONDS."""
        now = self._clock()
        with self._lock:
            if self._stats is not None and now - self._stats[0] < STATS_SECONDS:
                return self._stats[1]
        stats = read()
        with self._lock:
            self._stats = (now, stats)
        return stats

    def _observe_one(self, worker: WorkerStatus, now: float, wall: float) -> dict[str, Any]:
        rate = None
        if worker.alive:
            self._seen[worker.name] = wall
            rate = self._sample(worker, now)
        return {
            **{k: v for k, v in asdict(worker).items() if k != "tasks_done"},
            "photos_per_second": rate,
            "last_seen": self._seen.get(worker.name),
        }

    def _sample(self, worker: WorkerStatus, now: float) -> float | None:
        samples = self._samples.setdefault(worker.name, deque(maxlen=256))
        # The counts live in Redis, across the worker's restarts; they fall only when Redis
        # lost them (a restart without persistence, a week idle): count anew from there.
        if samples and samples[-1][1] > worker.photos_done:
            samples.clear()
        samples.append((now, worker.photos_done))
        while now - samples[0][0] > self.window:
            samples.popleft()
        (first, done_then), (last, done_now) = samples[0], samples[-1]
        return (done_now - done_then) / (last - first) if last > first else None

    def _forget(self, name: str) -> None:
        for table in (self._samples, self._seen):
            table.pop(name, None)


@router.get("", response_model=models.FleetStatusModel)
def fleet_overview(request: Request, caller: Admin) -> dict[str, Any]:
    """Every worker (alive, or announced and now silent), the batches waiting in the queue,
    totals, and the size of the catalogue the workers fill."""
    state = request.app.state
    broker = broker_of(request)
    with reaching(broker):
        status = fleet_module().fleet_status(broker)
    workers = state.fleet_monitor.observe(status.workers)
    stats = state.fleet_monitor.catalogue_size(lambda: _catalogue_stats(request))
    return {
        "workers": workers,
        "queue_depth": status.queue_depth,
        **fleet_totals(workers),
        "catalogue": asdict(stats),
    }


def fleet_totals(workers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The totals of the workers as `FleetMonitor.observe` shows them: processes, batches
    running and photos per second of the live ones; photos done and failed of all."""
    alive = [w for w in workers if w["alive"]]
    rates = [w["photos_per_second"] for w in alive if w["photos_per_second"] is not None]
    return {
        "alive": len(alive),
        "concurrency": sum(w["concurrency"] for w in alive),
        "busy": sum(w["busy"] for w in alive),
        "photos_done": sum(w["photos_done"] for w in workers),
        "photos_failed": sum(w["photos_failed"] for w in workers),
        "photos_per_second": sum(rates) if rates else None,
    }


@router.post("/pause", response_model=models.FleetReplies)
def pause_fleet(
    request: Request, caller: Admin, body: models.FleetAction | None = None
) -> dict[str, Any]:
    """Stop taking batches (those running finish); `workers` names some, default all."""
    return _act(request, "pause_workers", body or models.FleetAction())


@router.post("/resume", response_model=models.FleetReplies)
def resume_fleet(
    request: Request, caller: Admin, body: models.FleetAction | None = None
) -> dict[str, Any]:
    """Take batches again after a pause."""
    return _act(request, "resume_workers", body or models.FleetAction())


@router.post("/resize", response_model=models.FleetReplies)
def resize_fleet(request: Request, caller: Admin, body: models.FleetResize) -> dict[str, Any]:
    """Give each worker (or those named) `processes` pool processes (prefork pools only)."""
    broker = broker_of(request)
    with reaching(broker):
        replies = fleet_module().resize_workers(broker, body.processes, body.workers)
    return _replies_json(replies)


@router.post("/stop", response_model=models.FleetReplies)
def stop_fleet(
    request: Request, caller: Admin, body: models.FleetAction | None = None
) -> dict[str, Any]:
    """Stop workers warmly: each finishes the batches it is running, then exits."""
    return _act(request, "stop_workers", body or models.FleetAction())


@router.get("/hosts", response_model=models.FleetHosts)
def fleet_hosts(request: Request, caller: Admin) -> dict[str, Any]:
    """The machines of the server's hosts file, which workers can be started on (none while
    there is no hosts file: not an error, the dashboard says where to write one)."""
    path = hosts_file_of(request)
    if not path.exists():
        return {"hosts_file": str(path), "exists": False, "hosts": []}
    hosts = remote_hosts.load_hosts(path)
    return {
        "hosts_file": str(path),
        "exists": True,
        "hosts": [
            {"name": h.name, "address": h.address, "port": h.port, "user": h.user}
            for h in hosts.values()
        ],
    }


@router.post("/hosts/{name}/up", response_model=models.FleetHostWorkers)
def host_up(name: str, body: models.FleetHostUp, request: Request, caller: Admin) -> dict[str, Any]:
    """Start `workers` worker processes on the host over SSH (as `iddetective fleet up`:
    with the broker and catalogue of the host's own environment in the hosts file)."""
    started = remote_hosts.fleet_up(hosts_file_of(request), name, body.workers)
    return {"host": name, "pids": [worker.pid for worker in started]}


@router.post("/hosts/{name}/down", response_model=models.FleetHostWorkers)
def host_down(name: str, request: Request, caller: Admin) -> dict[str, Any]:
    """End the worker processes started on the host (as `iddetective fleet down`)."""
    return {"host": name, "pids": remote_hosts.fleet_down(hosts_file_of(request), name)}


def hosts_file_of(request: Request) -> Path:
    """The server's hosts file."""
    path: Path = request.app.state.settings.hosts_file
    return path


def broker_of(request: Request) -> str:
    """The server's broker URL; `FleetNotConfigured` when it has none."""
    broker: str | None = request.app.state.settings.broker
    if not broker:
        raise FleetNotConfigured(NO_BROKER)
    return broker


def fleet_module() -> ModuleType:
    """`iddetective.ingest.fleet`, imported on use: celery is needed only by servers with a
    broker."""
    try:
        from ..ingest import fleet
    except ImportError as error:
        raise FleetUnavailable(f"the ingestion workers need celery[redis]: {error}") from None
    return fleet


@contextmanager
def reaching(broker: str) -> Iterator[None]:
    """Turn a broker that does not answer (or a malformed broker URL) into `FleetUnavailable`."""
    fleet_module()  # celery[redis] is there, kombu and redis with it
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, OperationalError, OSError) as error:
        where = masked_url(broker)
        raise FleetUnavailable(f"the broker {where} does not answer: {error}") from None
    except UsageError as error:
        raise FleetUnavailable(f"the server's broker setting is wrong: {error}") from None


def _act(request: Request, action: str, body: models.FleetAction) -> dict[str, Any]:
    broker = broker_of(request)
    with reaching(broker):
        replies = getattr(fleet_module(), action)(broker, body.workers)
    return _replies_json(replies)


def _replies_json(replies: Sequence[WorkerReply]) -> dict[str, Any]:
    return {"replies": [asdict(reply) for reply in replies]}


def _catalogue_stats(request: Request) -> Stats:
    stats: Stats = request.app.state.catalogue.stats()
    return stats
