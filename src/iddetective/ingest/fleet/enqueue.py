"""Index through the fleet: the `FleetRunner` sends batches to the workers, gathers their results.

`Catalogue.index(..., runner=FleetRunner(broker))` plans the run exactly as a local one
(`ingest.index_plan`): files unchanged since they were stored are skipped without being read,
bad manifest rows are recorded here. The other jobs go to the queue in batches; workers
analyse and store them, and their results feed the same `IndexReport` and progress callback
as a local run. Afterwards the new faces are clustered and the vector index is caught up,
as after a local run.

Results are read from Redis. If Redis restarts (its `run_id` changes) the batches not
answered yet are sent again: a Redis that keeps nothing on disk has lost them, and one that
does merely runs them twice, which stores nothing twice (photos stored before the restart
are then counted as unchanged).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from celery import Celery

from ...catalogue import Catalogue
from ...entities import FailedPhoto, FileStat, SaveResult
from ...errors import UsageError
from ...faces.pipeline import PipelineSettings
from ...sources.paths import PhotoJob
from ..indexing import BATCH_PHOTOS, BatchWriter, IndexReport
from .app import PUBLISH_RETRY, QUEUE, TASK_NAME, fleet_app
from .tasks import job_to_json

__all__ = ["BATCH_PHOTOS", "FleetRunner", "index_on_fleet", "sent_settings"]

#: Batches whose results are looked for per poll (the oldest first).
_WINDOW = 256


class FleetRunner:
    """The `Runner` of a fleet: batches of `batch` photos sent to the workers on `broker`,
    their stored results gathered (polling every `poll_seconds`). The workers must store
    into the catalogue the run is planned in. Ctrl-C stops waiting; batches already queued
    are still done."""

    def __init__(self, broker: str, *, batch: int = BATCH_PHOTOS, poll_seconds: float = 0.2):
        if batch < 1:
            raise UsageError(f"--batch must be at least 1, not {batch}")
        self.app = fleet_app(broker)
        self.batch, self.poll_seconds = batch, poll_seconds

    def run(
        self, jobs: Sequence[PhotoJob], settings: PipelineSettings, writer: BatchWriter
    ) -> None:
        """Send `jobs` to the workers and tell `writer` each result they stored."""
        run = _FleetRun(self.app, sent_settings(settings), self.batch)
        run.send(jobs)
        while run.pending:
            for result in run.collect(self.poll_seconds):
                writer.tell(result)
            for job, reason in run.given_up:
                writer.add(FailedPhoto(FileStat(job.path, -1, -1), reason))
            run.given_up.clear()


def sent_settings(settings: PipelineSettings) -> dict[str, Any]:
    """The pipeline settings as they travel with every batch (JSON), read back by the
    worker (tasks.py). Where models are kept is each worker's own (a path on this machine
    means nothing there). A model card travels as its JSON; its file is read at the path it
    records, which the worker's machine must have too (else the embedder says it cannot)."""
    sent = {k: v for k, v in asdict(settings).items() if k != "model_cache"}
    sent["card"] = settings.card.to_json() if settings.card is not None else None
    return sent


def index_on_fleet(
    catalogue: Catalogue,
    paths: Sequence[str],
    *,
    broker: str,
    batch: int = BATCH_PHOTOS,
    poll_seconds: float = 0.2,
    **options: Any,
) -> IndexReport:
    """`catalogue.index(paths, **options)` with a `FleetRunner` on `broker`: the photos
    analysed and stored by the workers there."""
    runner = FleetRunner(broker, batch=batch, poll_seconds=poll_seconds)
    return catalogue.index(paths, runner=runner, **options)


class _FleetRun:
    """The batches of one run that have not answered yet."""

    def __init__(self, app: Celery, settings: dict[str, Any], batch: int) -> None:
        self.app, self.settings, self.batch = app, settings, batch
        self.pending: dict[str, list[PhotoJob]] = {}
        #: Jobs of batches the workers gave up on, with why (recorded as failures here).
        self.given_up: list[tuple[PhotoJob, str]] = []
        self.client = app.backend.client
        self.broker_run = self._broker_run()

    def send(self, jobs: Sequence[PhotoJob]) -> None:
        for start in range(0, len(jobs), self.batch):
            chunk = list(jobs[start : start + self.batch])
            task_id = f"iddetective-{uuid.uuid4()}"
            self.app.send_task(
                TASK_NAME,
                args=[[job_to_json(job) for job in chunk], self.settings],
                task_id=task_id,
                queue=QUEUE,
                retry=True,
                retry_policy=PUBLISH_RETRY,
            )
            self.pending[task_id] = chunk

    def collect(self, wait: float) -> list[SaveResult]:
        """Results of the batches answered since the last call (waits `wait` if none)."""
        import redis.exceptions

        try:
            found = self._answered()
            if not found:
                self._resend_if_broker_restarted()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            found = []  # the broker is restarting: look again shortly
        if not found:
            time.sleep(wait)
        return found

    def _answered(self) -> list[SaveResult]:
        backend = self.app.backend
        ids = list(self.pending)[:_WINDOW]
        values = backend.mget([backend.get_key_for_task(task_id) for task_id in ids])
        results: list[SaveResult] = []
        for task_id, value in zip(ids, values, strict=True):
            meta = backend.decode_result(value) if value else None
            if meta is None or meta.get("status") not in ("SUCCESS", "FAILURE", "REVOKED"):
                continue
            jobs = self.pending.pop(task_id)
            if meta["status"] == "SUCCESS":
                results += [_save_result(item) for item in meta["result"]]
            else:
                reason = f"a worker gave up on it: {_error_text(meta.get('result'))}"
                self.given_up += [(job, reason) for job in jobs]
            backend.forget(task_id)
        return results

    def _broker_run(self) -> str:
        return str(self.client.info("server")["run_id"])

    def _resend_if_broker_restarted(self) -> None:
        run = self._broker_run()
        if run == self.broker_run:
            return
        self.broker_run = run
        lost = [job for jobs in self.pending.values() for job in jobs]
        self.pending.clear()
        self.send(lost)


def _save_result(item: dict[str, Any]) -> SaveResult:
    fields = {key: item.get(key) for key in ("path", "status", "review", "reason")}
    return SaveResult(faces=int(item.get("faces") or 0), **fields)  # type: ignore[arg-type]


def _error_text(error: Any) -> str:
    if isinstance(error, dict) and "exc_type" in error:
        message = error.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(part) for part in message)
        return f"{error['exc_type']}: {message}"
    return str(error)
