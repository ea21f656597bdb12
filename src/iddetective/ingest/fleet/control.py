"""Watch and steer the workers through Celery's remote control: one function per action.

Each returns plain dataclasses, so the command line and a web page show the same thing. The
photos each worker has done are not Celery's: the ingest task counts them in Redis
(`tasks.WORKER_COUNTS`), where they outlive the worker's restarts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from celery import Celery

from .app import QUEUE, TASK_NAME, fleet_app, queue_depth
from .tasks import WORKER_COUNTS
from .worker import REGISTRY

__all__ = [
    "FleetStatus",
    "WorkerReply",
    "WorkerStatus",
    "fleet_status",
    "pause_workers",
    "queue_depth",
    "resize_workers",
    "resume_workers",
    "stop_workers",
]

#: Seconds to wait for the answers of workers that announced themselves (the wait ends as
#: soon as all have answered), and for those of any others when none did.
REPLY_SECONDS = 5.0
SEARCH_SECONDS = 1.5
#: Seconds a ping waits for announced workers; those silent by then are shown as not alive.
PING_SECONDS = 2.0


@dataclass(frozen=True)
class WorkerStatus:
    """One worker: alive when it answered now; otherwise it announced itself and went silent."""

    name: str
    host: str
    pid: int | None
    pool: str  # prefork | solo ("" when silent)
    concurrency: int  # pool processes
    alive: bool
    busy: int  # batches running now
    tasks_done: int  # batches done since it started (Celery's count)
    paused: bool  # alive but not consuming the ingestion queue
    photos_done: int = 0  # photos its batches finished, failed ones included, across restarts
    photos_failed: int = 0  # of those, the photos recorded as failed
    last_batch_at: float | None = None  # Unix time it last stored a batch; None: never


@dataclass(frozen=True)
class FleetStatus:
    """The workers and the batches waiting in the queue."""

    workers: tuple[WorkerStatus, ...]
    queue_depth: int


@dataclass(frozen=True)
class WorkerReply:
    """What one worker answered to an action."""

    name: str
    ok: bool
    message: str


def fleet_status(broker: str, *, timeout: float = REPLY_SECONDS) -> FleetStatus:
    """Every worker (alive or announced and silent) and the queue depth."""
    app = fleet_app(broker)
    announced = _announced(app)
    stats: dict[str, Any] = {}
    active: dict[str, Any] = {}
    queues: dict[str, Any] = {}
    # A connection of its own: kombu's shared pool may hold ones the broker closed (a restart).
    with app.connection_for_write() as connection:
        alive = _alive_names(app, connection, announced, None)
        if alive:
            inspect = app.control.inspect(
                destination=alive, timeout=timeout, limit=len(alive), connection=connection
            )
            stats, active = inspect.stats() or {}, inspect.active() or {}
            queues = inspect.active_queues() or {}
    workers = [
        _alive(name, stats[name], active.get(name, []), queues.get(name, []), announced)
        for name in sorted(stats)
    ]
    workers += [_silent(name, announced[name]) for name in sorted(set(announced) - set(stats))]
    counts = _photo_counts(app, [worker.name for worker in workers])
    return FleetStatus(tuple(replace(w, **counts[w.name]) for w in workers), queue_depth(app))


def _photo_counts(app: Celery, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each worker's photo counts (`tasks.WORKER_COUNTS`), in one round trip for all."""
    with app.backend.client.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.hgetall(WORKER_COUNTS.format(name=name))
        answers = pipeline.execute()  # no round trip at all for no names
    counts = {}
    for name, answer in zip(names, answers, strict=True):
        fields = {_text(key): _text(value) for key, value in answer.items()}
        last = fields.get("last_batch_at")
        counts[name] = {
            "photos_done": int(fields.get("photos", 0)),
            "photos_failed": int(fields.get("failures", 0)),
            "last_batch_at": float(last) if last is not None else None,
        }
    return counts


def _alive_names(
    app: Celery,
    connection: Any,
    announced: dict[str, dict[str, Any]],
    chosen: Sequence[str] | None,
) -> list[str]:
    """The names of the workers (of `chosen`, default all) that answer a ping now.

    With workers announced, the ping ends once all have answered (or after PING_SECONDS);
    with none (the registry lost with the broker's data) it waits SEARCH_SECONDS for any.
    """
    expected = [n for n in announced if not chosen or n in chosen]
    limit = len(expected) if expected else None
    timeout = PING_SECONDS if expected else SEARCH_SECONDS
    replies = app.control.ping(
        destination=_names(chosen), timeout=timeout, limit=limit, connection=connection
    )
    return sorted(name for reply in replies or [] for name in reply)


def _announced(app: Celery) -> dict[str, dict[str, Any]]:
    entries = app.backend.client.hgetall(REGISTRY)
    return {_text(name): json.loads(_text(entry)) for name, entry in entries.items()}


def _alive(
    name: str,
    stats: dict[str, Any],
    active: list[Any],
    queues: list[dict[str, Any]],
    announced: dict[str, dict[str, Any]],
) -> WorkerStatus:
    pool = stats.get("pool") or {}
    processes = pool.get("processes")
    concurrency = len(processes) if isinstance(processes, list) else pool.get("max-concurrency", 1)
    host = announced.get(name, {}).get("host") or name.partition("@")[2]
    return WorkerStatus(
        name=name,
        host=host,
        pid=stats.get("pid"),
        pool="solo" if "solo" in str(pool.get("implementation")) else "prefork",
        concurrency=int(concurrency),
        alive=True,
        busy=len(active),
        tasks_done=int((stats.get("total") or {}).get(TASK_NAME, 0)),
        paused=not any(queue.get("name") == QUEUE for queue in queues),
    )


def _silent(name: str, entry: dict[str, Any]) -> WorkerStatus:
    host = entry.get("host") or name.partition("@")[2]
    return WorkerStatus(name, host, entry.get("pid"), "", 0, False, 0, 0, False)


def pause_workers(
    broker: str, workers: Sequence[str] | None = None, *, timeout: float = REPLY_SECONDS
) -> list[WorkerReply]:
    """Stop taking batches (those running finish); `workers` names some, default all."""
    return _tell(broker, "cancel_consumer", workers, timeout, queue=QUEUE)


def resume_workers(
    broker: str, workers: Sequence[str] | None = None, *, timeout: float = REPLY_SECONDS
) -> list[WorkerReply]:
    """Take batches again after a pause."""
    return _tell(broker, "add_consumer", workers, timeout, queue=QUEUE)


def _tell(
    broker: str, command: str, workers: Sequence[str] | None, timeout: float, **arguments: Any
) -> list[WorkerReply]:
    """Send a remote-control command to the live workers and gather their answers."""
    app = fleet_app(broker)
    with app.connection_for_write() as connection:
        alive = _alive_names(app, connection, _announced(app), workers)
        if not alive:
            return []
        replies = app.control.broadcast(
            command,
            arguments=arguments,
            destination=alive,
            reply=True,
            timeout=timeout,
            limit=len(alive),
            connection=connection,
        )
    return _replies(replies)


def resize_workers(
    broker: str,
    processes: int,
    workers: Sequence[str] | None = None,
    *,
    timeout: float = REPLY_SECONDS,
) -> list[WorkerReply]:
    """Give each worker `processes` pool processes (prefork pools only; grows or shrinks)."""
    from ...errors import UsageError

    if processes < 1:
        raise UsageError(f"a worker needs at least 1 process, not {processes}")
    status = fleet_status(broker, timeout=timeout)
    chosen = [w for w in status.workers if w.alive and (not workers or w.name in workers)]
    answers: list[WorkerReply] = []
    for worker in chosen:
        change = processes - worker.concurrency
        if worker.pool == "solo":
            answers.append(WorkerReply(worker.name, False, "a solo pool cannot be resized"))
        elif change == 0:
            answers.append(WorkerReply(worker.name, True, f"has {processes} processes already"))
        else:
            command = "pool_grow" if change > 0 else "pool_shrink"
            reply = _tell(broker, command, [worker.name], timeout, n=abs(change))
            answers += [
                replace(r, message=f"{worker.concurrency} -> {processes} processes") if r.ok else r
                for r in reply
            ]
    return answers


def stop_workers(
    broker: str, workers: Sequence[str] | None = None, *, timeout: float = REPLY_SECONDS
) -> list[WorkerReply]:
    """Stop workers warmly: each finishes the batches it is running, then exits."""
    app = fleet_app(broker)
    with app.connection_for_write() as connection:
        alive = _alive_names(app, connection, _announced(app), workers)
        if alive:
            app.control.shutdown(destination=alive, connection=connection)
    return [WorkerReply(name, True, "stopping") for name in alive]


def _names(workers: Sequence[str] | None) -> list[str] | None:
    return list(workers) if workers else None


def _replies(replies: list[dict[str, dict[str, Any]]] | None) -> list[WorkerReply]:
    answers = []
    for reply in replies or []:
        for name, answer in reply.items():
            ok = "ok" in answer
            answers.append(WorkerReply(name, ok, str(answer.get("ok") or answer.get("error"))))
    return sorted(answers, key=lambda answer: answer.name)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
