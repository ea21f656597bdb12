"""Index through the fleet: plan here, send batches to the workers, gather their results.

The run is planned exactly as a local one (`ingest`): files unchanged since they were stored
are skipped without being read, bad manifest rows are recorded here. The other jobs go to the
queue in batches; workers analyse and store them, and their results feed the same
`IndexReport` and progress callback as a local run. Afterwards the new faces are clustered
and the vector index is caught up, as after a local run.

Results are read from Redis. If Redis restarts (its `run_id` changes) the batches not
answered yet are sent again: a Redis that keeps nothing on disk has lost them, and one that
does merely runs them twice, which stores nothing twice (photos stored before the restart
are then counted as unchanged).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from celery import Celery

from ..catalogue import CLI_ACTOR, Catalogue
from ..entities import FailedPhoto, FileStat, Provenance, SaveResult
from ..errors import UsageError
from ..ingest import BatchWriter, IndexReport, ProgressCallback, changed_jobs
from ..sources import PhotoJob, manifest_rows, plan_sources
from .app import PUBLISH_RETRY, QUEUE, TASK_NAME, fleet_app
from .tasks import job_to_json

__all__ = ["BATCH_PHOTOS", "index_on_fleet"]

#: Photos per batch (task): small enough that a lost batch costs little to redo.
BATCH_PHOTOS = 8
#: Batches whose results are looked for per poll (the oldest first).
_WINDOW = 256


def index_on_fleet(
    catalogue: Catalogue,
    paths: Sequence[str],
    *,
    broker: str,
    people: str | None = None,
    people_from_folders: bool = False,
    prune: bool = False,
    retry_failed: bool = False,
    basis: str = "",
    actor: str = CLI_ACTOR,
    batch: int = BATCH_PHOTOS,
    progress: ProgressCallback | None = None,
    poll_seconds: float = 0.2,
) -> IndexReport:
    """Index like `Catalogue.index`, with the photos analysed by the workers on `broker`.

    The workers must store into the same catalogue as `catalogue`. Ctrl-C stops waiting
    (the report says it was interrupted); batches already queued are still done.
    """
    if batch < 1:
        raise UsageError(f"--batch must be at least 1, not {batch}")
    app = fleet_app(broker)
    plan = plan_sources(paths, people, people_from_folders)
    origin = Provenance(added_by=actor, basis=basis)
    plan.jobs = [replace(job, provenance=job.provenance or origin) for job in plan.jobs]
    started = time.monotonic()
    report = IndexReport(total=len(plan.jobs) + len(plan.problems), not_photos=plan.not_photos)
    # The local run's own planning and writer: unchanged files skipped, bad rows recorded.
    writer = BatchWriter(catalogue.store, report, progress)
    if plan.manifest:
        catalogue.store.forget_failures(manifest_rows(plan.manifest))
    writer.extend(plan.problems)
    todo = changed_jobs(catalogue.store, plan.jobs, writer, retry_failed)
    writer.flush()
    run = _FleetRun(app, asdict(catalogue.pipeline), batch)
    try:
        run.send(todo)
        while run.pending:
            for result in run.collect(poll_seconds):
                _tell(writer, result)
            for job, reason in run.given_up:
                writer.add(FailedPhoto(FileStat(job.path, -1, -1), reason))
            run.given_up.clear()
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        writer.flush()
        report.seconds = time.monotonic() - started
    if prune and not report.interrupted:
        report.pruned = catalogue.store.forget_missing_files(plan.roots)
    report.clustering = catalogue.cluster()  # catches the vector index up first
    return report


def _tell(writer: BatchWriter, result: SaveResult) -> None:
    """Count a result a worker stored, and report progress, as the local writer does."""
    writer.report.count(result)
    writer.done += 1
    if writer.progress:
        writer.progress(writer.done, writer.report.total, result)


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
