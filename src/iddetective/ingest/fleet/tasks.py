"""The ingestion task: a batch of photo jobs analysed and stored by a worker.

Each worker process opens the catalogue once and loads the models once (`warm_up`), then
runs batches: every photo goes through `ingest.analyse_file` (the same pipeline as a local
run), the batch is stored in one `Store.save` transaction (idempotent by SHA-256) and the
per-photo results go back through the result store.

Transient trouble (the database or the broker unreachable, the catalogue locked) raises, and
Celery runs the batch again later with exponential backoff and jitter, at most
`MAX_RETRIES` times. A photo that cannot be used is a `FailedPhoto` with its reason, stored
like any result. A photo that kills the worker process (a crash in native code) is found by
the marker each batch keeps in Redis of the photo it is analysing: when a batch comes back
after its process died `CRASH_LIMIT` times on the same photo, that photo is recorded as
failed instead of being analysed again, so a poisonous photo is never retried forever.

Once a batch is stored, its photos are counted in Redis under the worker's name
(`WORKER_COUNTS`: every photo the batch finished, and those recorded as failed), once per
batch: a batch stored twice (its worker killed before it was acknowledged) counts once.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from celery import Celery, Task

from ...entities import (
    Box,
    FailedPhoto,
    FileStat,
    IndexedPhoto,
    KnownPhoto,
    Outcome,
    Provenance,
    SaveResult,
)
from ...errors import StoreError
from ...faces.model_cards import ModelCard
from ...faces.pipeline import PipelineSettings, pipeline_for, prepared
from ...sources.paths import PhotoJob
from ...store import Store
from ..indexing import CRASHED, analyse_file

__all__ = [
    "CRASHED",
    "MAX_RETRIES",
    "WORKER_COUNTS",
    "job_from_json",
    "job_to_json",
    "register",
    "use_catalogue",
    "use_model_cache",
    "warm_up",
]

MAX_RETRIES = 10
#: Longest wait between two tries of a batch (seconds); below the visibility timeout.
RETRY_BACKOFF_MAX = 60
#: Deaths of a worker process while analysing the same photo before it is recorded as failed.
CRASH_LIMIT = 2
_MARKER_SECONDS = 7 * 24 * 3600
#: The Redis hash of one worker's counts, by its name: `photos` (every photo its batches
#: finished, failed ones included), `failures` (those recorded as failed), `last_batch_at`.
WORKER_COUNTS = "iddetective:fleet:worker:{name}"
#: Seconds a worker's counts outlive its last batch, and a batch's mark of being counted.
_COUNTS_SECONDS = 7 * 24 * 3600


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth trying the batch again for: connections and locks, not bad photos."""
    import redis.exceptions
    from kombu.exceptions import OperationalError

    errors: list[type[BaseException]] = [
        StoreError,
        sqlite3.OperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        OperationalError,
        ConnectionError,
        TimeoutError,
    ]
    try:
        import psycopg
    except ImportError:
        pass
    else:
        errors.append(psycopg.OperationalError)
    return tuple(errors)


def register(app: Celery) -> None:
    """Register the ingest task on `app`."""
    app.task(
        name="iddetective.ingest_batch",
        bind=True,
        autoretry_for=_transient_errors(),
        retry_backoff=True,
        retry_backoff_max=RETRY_BACKOFF_MAX,
        retry_jitter=True,
        max_retries=MAX_RETRIES,
    )(_ingest_batch)


# -- the worker process's catalogue and models ----------------------------------------------

_location: str | Path | None = None
_store: Store | None = None
_store_pid = 0
#: Where this worker keeps checked models (None: the default's, the user's cache).
_model_cache: Path | None = None
#: Embedders this worker runs on another runtime of the same model (it could not build or
#: check the first one): the batch's embedder -> the runtime used.
_runtimes: dict[str, str] = {}


def use_catalogue(location: str | Path) -> None:
    """Name the catalogue this worker stores into: a PostgreSQL URL or a SQLite file path."""
    global _location
    _location = location


def use_model_cache(model_cache: Path | None) -> None:
    """Keep this worker's checked models in `model_cache` (None: the user's cache), and make
    the default embedder ready now: called in the worker's main process before its pool
    processes start, so they find the graph cached, or, if it could not be built or checked
    here, run the other runtime of the same model without trying again."""
    global _model_cache
    _model_cache = model_cache
    default = _own(PipelineSettings())
    ready = prepared(default)
    if ready.embedder != default.embedder:
        _runtimes[default.embedder] = ready.embedder


def _pipeline_settings(sent: dict[str, Any]) -> PipelineSettings:
    """The pipeline settings a batch was sent with (its model card, if any, as JSON)."""
    card = sent.get("card")
    return PipelineSettings(
        **{**sent, "card": ModelCard.from_json(card, "the batch's model card") if card else None}
    )


def _own(settings: PipelineSettings) -> PipelineSettings:
    """A batch's pipeline settings as this worker runs them: its own model cache, and the
    runtime it fell back to, if it did."""
    if _model_cache is not None:
        settings = replace(settings, model_cache=_model_cache)
    return replace(settings, embedder=_runtimes.get(settings.embedder, settings.embedder))


def _process_store() -> Store:
    """The store of this process, opened on first use (a forked child opens its own)."""
    global _store, _store_pid
    if _store is None or _store_pid != os.getpid():
        from ...catalogue import open_store

        if _location is None:
            raise StoreError("this worker was started without a catalogue (use_catalogue)")
        _store, _store_pid = open_store(_location), os.getpid()
    return _store


def _forget_store() -> None:
    """Drop this process's store after a transient error: the next try connects again."""
    global _store
    store, _store = _store, None
    if store is not None:
        with contextlib.suppress(Exception):  # a broken connection may not even close
            store.close()


def warm_up(**_: object) -> None:
    """Load the default pipeline's models and open the store now, once per worker process."""
    import numpy as np

    pipeline = pipeline_for(_own(PipelineSettings()))
    grey = np.full((64, 64, 3), 128, dtype=np.uint8)
    pipeline.detect(grey)
    pipeline.embedder.embed(grey, [Box(16, 16, 48, 48)], 0)
    if _location is not None:
        _process_store()


# -- the task ---------------------------------------------------------------------------------


def _ingest_batch(task: Task, jobs: list[dict[str, Any]], settings: dict[str, Any]) -> list[dict]:
    """Analyse and store a batch of photo jobs; returns one result per job, in order."""
    pipeline = _own(_pipeline_settings(settings))
    try:
        store = _process_store()
        crashes = _CrashMarker(task)
        outcomes = [_outcome(job_from_json(job), pipeline, store, crashes) for job in jobs]
        results = store.save(outcomes)
    except _transient_errors():
        _forget_store()
        _CrashMarker.clear(task)  # a retry is not a crash: blame no photo for it
        raise
    _count_photos(task, results)
    _CrashMarker.clear(task)
    return [_result_json(o, r) for o, r in zip(outcomes, results, strict=True)]


def _outcome(
    job: PhotoJob, pipeline: PipelineSettings, store: Store, crashes: _CrashMarker
) -> Outcome:
    if crashes.deaths(job.path) >= CRASH_LIMIT:
        return FailedPhoto(FileStat(job.path, -1, -1), CRASHED)
    crashes.analysing(job.path)
    return analyse_file(job, pipeline, store.has_photo)


class _CrashMarker:
    """What this batch was analysing, kept in Redis so the next delivery knows what killed it."""

    def __init__(self, task: Task) -> None:
        self.client = task.app.backend.client
        self.key = _marker_key(task)
        previous = {_text(k): _text(v) for k, v in self.client.hgetall(self.key).items()}
        died_on = previous.pop("analysing", None)
        self.counts = {path: int(count) for path, count in previous.items()}
        if died_on is not None:  # the previous delivery's process died on this photo
            self.counts[died_on] = self.client.hincrby(self.key, died_on, 1)

    def deaths(self, path: str) -> int:
        return self.counts.get(path, 0)

    def analysing(self, path: str) -> None:
        self.client.hset(self.key, "analysing", path)
        self.client.expire(self.key, _MARKER_SECONDS)

    @staticmethod
    def clear(task: Task) -> None:
        # With the broker away, at worst a later delivery counts one death too many.
        with contextlib.suppress(*_transient_errors()):
            task.app.backend.client.delete(_marker_key(task))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _marker_key(task: Task) -> str:
    return f"iddetective:analysing:{task.request.id}"


# Atomically: the batch's mark (its task id, the same on every delivery), then the counts.
_COUNT_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
  redis.call('HINCRBY', KEYS[1], 'photos', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'failures', ARGV[2])
  redis.call('HSET', KEYS[1], 'last_batch_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"""


def _count_photos(task: Task, results: list[SaveResult]) -> None:
    """Add a stored batch to its worker's counts, unless a delivery of it already did."""
    failed = sum(result.status == "failed" for result in results)
    counts = WORKER_COUNTS.format(name=task.request.hostname)
    counted = f"iddetective:counted:{task.request.id}"
    arguments = (len(results), failed, f"{time.time():.3f}", _COUNTS_SECONDS)
    # The photos are stored: with the broker away, lose the count rather than redo the batch.
    with contextlib.suppress(*_transient_errors()):
        task.app.backend.client.eval(_COUNT_ONCE, 2, counts, counted, *arguments)


# -- plain JSON for messages -------------------------------------------------------------------


def job_to_json(job: PhotoJob) -> dict[str, Any]:
    """A photo job as the JSON a batch message carries."""
    provenance = asdict(job.provenance) if job.provenance is not None else None
    return {"path": job.path, "label": job.label, "provenance": provenance}


def job_from_json(data: dict[str, Any]) -> PhotoJob:
    """The photo job `job_to_json` wrote."""
    provenance = data.get("provenance")
    return PhotoJob(
        path=data["path"],
        label=data.get("label"),
        provenance=Provenance(**provenance) if provenance is not None else None,
    )


def _result_json(outcome: Outcome, result: SaveResult) -> dict[str, Any]:
    sha256 = outcome.sha256 if isinstance(outcome, IndexedPhoto | KnownPhoto) else None
    return {**asdict(result), "sha256": sha256}
