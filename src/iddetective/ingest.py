"""Index photo jobs: analyse them in a process pool, store results with one writer in batches.

Files whose path, size and mtime match what the store recorded are skipped without being
read. Workers hash each file first and skip the face pipeline for bytes the catalogue already
holds. Results are committed in small transactions, so a run killed at any moment (SIGKILL
included) leaves a consistent catalogue, and running it again finishes the job.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field

from .child_processes import spawn_pool
from .discovery import ClusterReport
from .entities import (
    FailedPhoto,
    FileStat,
    IndexedPhoto,
    KnownPhoto,
    Outcome,
    SaveResult,
)
from .errors import BadImage
from .faces import PipelineSettings, pipeline_for
from .sources import PhotoJob, Plan, manifest_rows
from .store import Store

__all__ = ["BatchWriter", "IndexReport", "analyse_file", "changed_jobs", "index_plan"]

#: Outcomes are committed at least this often (count or seconds), whichever comes first.
BATCH_SIZE = 32
BATCH_SECONDS = 2.0

ProgressCallback = Callable[[int, int, SaveResult | None], None]
KnownCheck = Callable[[str], bool]

_CRASHED = "the face pipeline crashed the worker process on this photo"


@dataclass
class IndexReport:
    """What an index run did."""

    total: int = 0
    indexed: int = 0
    no_face: int = 0
    duplicates: int = 0
    unchanged: int = 0
    faces: int = 0
    pruned: int = 0
    not_photos: int = 0
    seconds: float = 0.0
    failed: list[SaveResult] = field(default_factory=list)
    reviews: list[SaveResult] = field(default_factory=list)
    interrupted: bool = False
    #: What placing the new faces in clusters did (the catalogue runs it after indexing).
    clustering: ClusterReport | None = None

    @property
    def photos_per_second(self) -> float:
        done = self.indexed + self.no_face + self.duplicates + len(self.failed)
        return done / self.seconds if self.seconds > 0 else 0.0

    def count(self, result: SaveResult) -> None:
        """Add one stored outcome to the tallies."""
        if result.status == "failed":
            self.failed.append(result)
        elif result.status == "indexed":
            self.indexed += 1
            self.faces += result.faces
        elif result.status == "no_face":
            self.no_face += 1
        elif result.status == "duplicate":
            self.duplicates += 1
        else:
            self.unchanged += 1
        if result.review:
            self.reviews.append(result)


def analyse_file(
    job: PhotoJob, settings: PipelineSettings, is_known: KnownCheck | None = None
) -> Outcome:
    """Read, hash and analyse one file; every problem becomes a `FailedPhoto`, never a raise."""
    try:
        stat, data = _read(job.path)
    except BadImage as error:
        return FailedPhoto(FileStat(job.path, -1, -1), error.reason)
    sha256 = hashlib.sha256(data).hexdigest()
    if is_known is not None and is_known(sha256):
        return KnownPhoto(stat, sha256, job.label)
    try:
        analysis = pipeline_for(settings).analyse(data, job.path)
    except BadImage as error:
        return FailedPhoto(stat, error.reason)
    except Exception as error:  # a crash in one photo must not end the run
        return FailedPhoto(stat, f"the face pipeline failed: {type(error).__name__}: {error}")
    return IndexedPhoto(stat, sha256, analysis, job.label, job.provenance)


def _read(path: str) -> tuple[FileStat, bytes]:
    from .imaging import MAX_FILE_BYTES, read_photo_bytes

    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise BadImage(path, _missing_reason(path)) from None
    except OSError as error:
        raise BadImage(path, f"cannot read the file: {error.strerror}") from None
    data = read_photo_bytes(path, MAX_FILE_BYTES)
    return FileStat(path, stat.st_size, stat.st_mtime_ns), data


def _missing_reason(path: str) -> str:
    """Why `path` cannot be found: it is gone, or it is a symbolic link to nothing."""
    if not os.path.islink(path):
        return "file does not exist"
    try:
        target = os.path.join(os.path.dirname(path), os.readlink(path))
    except OSError:
        return "broken symbolic link"
    return f"broken symbolic link: it points to {os.path.normpath(target)}, which is missing"


def index_plan(
    store: Store,
    plan: Plan,
    settings: PipelineSettings,
    *,
    workers: int = 1,
    store_opener: Callable[[], Store] | None = None,
    retry_failed: bool = False,
    progress: ProgressCallback | None = None,
) -> IndexReport:
    """Index every job of `plan` into `store`; returns the run's report.

    `store_opener` opens a read-only store in each worker process so workers can skip bytes
    the catalogue already holds (it must be picklable). Ctrl-C stops the run after committing
    what is done; the report says it was interrupted.
    """
    started = time.monotonic()
    report = IndexReport(total=len(plan.jobs) + len(plan.problems), not_photos=plan.not_photos)
    writer = BatchWriter(store, report, progress)
    if plan.manifest:
        store.forget_failures(manifest_rows(plan.manifest))
    writer.extend(plan.problems)
    todo = changed_jobs(store, plan.jobs, writer, retry_failed)
    try:
        for outcome in _analyse_all(todo, settings, workers, store, store_opener):
            writer.add(outcome)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        writer.flush()
        report.seconds = time.monotonic() - started
    return report


def changed_jobs(
    store: Store, jobs: Sequence[PhotoJob], writer: BatchWriter, retry_failed: bool
) -> list[PhotoJob]:
    """The jobs whose files are new or changed since they were stored (or failed, with
    `retry_failed`); the others are told to `writer` as unchanged. Local runs and the
    fleet (fleet/enqueue.py) plan the same way."""
    todo: list[PhotoJob] = []
    for job in jobs:
        record = store.file_record(job.path)
        if record is None or not _unchanged(record.stat) or (retry_failed and not record.sha256):
            todo.append(job)
        elif record.sha256 and job.label:
            writer.add(KnownPhoto(record.stat, record.sha256, job.label))
        else:
            writer.skip()
    return todo


def _unchanged(recorded: FileStat) -> bool:
    try:
        stat = os.stat(recorded.path)
    except OSError:
        return False
    return stat.st_size == recorded.size and stat.st_mtime_ns == recorded.mtime_ns


def _analyse_all(
    jobs: list[PhotoJob],
    settings: PipelineSettings,
    workers: int,
    store: Store,
    store_opener: Callable[[], Store] | None,
) -> Iterator[Outcome]:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield analyse_file(job, settings, store.has_photo)
        return
    remaining = deque(jobs)
    while remaining:
        try:
            with _pool(workers, store_opener) as pool:
                yield from _bounded_map(pool, remaining, settings, window=workers * 4)
        except _PoolDied as died:
            # A worker process died (a crash inside a native library): run each photo that
            # was in flight alone to find the one that kills it, then go on with the rest.
            yield from _analyse_one_by_one(died.in_flight, settings, store_opener)


class _PoolDied(Exception):
    def __init__(self, in_flight: list[PhotoJob]) -> None:
        super().__init__(f"a worker process died with {len(in_flight)} photos in flight")
        self.in_flight = in_flight


@contextmanager
def _pool(workers: int, store_opener: Callable[[], Store] | None) -> Iterator[ProcessPoolExecutor]:
    pool = spawn_pool(workers, _start_worker, (store_opener,))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _analyse_one_by_one(
    jobs: list[PhotoJob], settings: PipelineSettings, store_opener: Callable[[], Store] | None
) -> Iterator[Outcome]:
    """Analyse jobs one at a time in a one-process pool, replaced only when a job kills it."""
    queue = deque(jobs)
    while queue:
        with _pool(1, store_opener) as pool:
            while queue:
                job = queue.popleft()
                try:
                    outcome = pool.submit(_worker_analyse, job, settings).result()
                except BrokenProcessPool:
                    yield FailedPhoto(FileStat(job.path, -1, -1), _CRASHED)
                    break  # this pool is dead: start another for the rest
                yield outcome


def _bounded_map(
    pool: ProcessPoolExecutor, queue: deque[PhotoJob], settings: PipelineSettings, window: int
) -> Iterator[Outcome]:
    """Analyse jobs taken from `queue`, at most `window` in flight; raises _PoolDied."""
    pending: dict[Future[Outcome], PhotoJob] = {}
    while queue or pending:
        while queue and len(pending) < window:
            job = queue.popleft()
            pending[pool.submit(_worker_analyse, job, settings)] = job
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        try:
            outcomes = [future.result() for future in done]
        except BrokenProcessPool:
            raise _PoolDied(list(pending.values())) from None
        for future in done:
            del pending[future]
        yield from outcomes


_worker_store: Store | None = None


def _start_worker(store_opener: Callable[[], Store] | None) -> None:
    global _worker_store
    _worker_store = store_opener() if store_opener else None


def _worker_analyse(job: PhotoJob, settings: PipelineSettings) -> Outcome:
    known = _worker_store.has_photo if _worker_store is not None else None
    return analyse_file(job, settings, known)


class BatchWriter:
    """The run's single writer: commits outcomes in small transactions."""

    def __init__(self, store: Store, report: IndexReport, progress: ProgressCallback | None):
        self.store, self.report, self.progress = store, report, progress
        self.pending: list[Outcome] = []
        self.last_flush = time.monotonic()
        self.done = 0

    def add(self, outcome: Outcome) -> None:
        self.pending.append(outcome)
        if len(self.pending) >= BATCH_SIZE or time.monotonic() - self.last_flush > BATCH_SECONDS:
            self.flush()

    def extend(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            self.add(outcome)

    def skip(self) -> None:
        self.report.unchanged += 1
        self._advance(None)

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        for result in self.store.save(batch) if batch else []:
            self.report.count(result)
            self._advance(result)

    def _advance(self, result: SaveResult | None) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.report.total, result)
