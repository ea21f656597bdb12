"""Index photo jobs: plan, have a `Runner` analyse them, store results with one writer in batches.

An index run is orchestrated here once, whoever analyses the photos: the `Runner` seam is a
local pool of processes (`ingest/local.py`'s `LocalRunner`, the default) or the ingestion
workers of a fleet (`fleet.enqueue.FleetRunner`). Either way the run is planned here
(unchanged files skipped, bad manifest rows recorded) and its results feed one `IndexReport` and
progress callback.

Files whose path, size and mtime match what the store recorded are skipped without being
read. Workers hash each file first and skip the face pipeline for bytes the catalogue already
holds. Results are committed in small transactions, so a run killed at any moment (SIGKILL
included) leaves a consistent catalogue, and running it again finishes the job.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..entities import (
    FailedPhoto,
    FileStat,
    IndexedPhoto,
    KnownPhoto,
    Outcome,
    PhotoAnalysis,
    SaveResult,
)
from ..errors import BadImage
from ..faces.imaging import DecodedImage, decode_image
from ..faces.pipeline import FacePipeline, PipelineSettings, pipeline_for
from ..people.discovery import ClusterReport
from ..sources.paths import PhotoJob, Plan, manifest_rows
from ..store import Store

__all__ = [
    "BATCH_PHOTOS",
    "CRASHED",
    "PHOTOS_AT_ONCE",
    "BatchWriter",
    "IndexReport",
    "Runner",
    "analyse_file",
    "analyse_files",
    "changed_jobs",
    "index_plan",
]

#: Outcomes are committed at least this often (count or seconds), whichever comes first.
BATCH_SIZE = 32
BATCH_SECONDS = 2.0
#: Photos per batch sent to a fleet's workers: small enough that a lost batch costs little.
BATCH_PHOTOS = 8
#: Photos a process analysing several in a row takes at once (`analyse_files`), their faces
#: embedded in one batch: ONNX Runtime's time per face is near its best from about 8 faces
#: (6.0 ms alone, 5.1 ms in eights here), and 8 decoded photos are at most ~50 MB.
PHOTOS_AT_ONCE = 8
#: The reason recorded for a photo whose analysis killed the process analysing it.
CRASHED = "the face pipeline crashed the worker process on this photo"

ProgressCallback = Callable[[int, int, SaveResult | None], None]
KnownCheck = Callable[[str], bool]


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
    return analyse_files([job], settings, is_known)[0]


def analyse_files(
    jobs: Sequence[PhotoJob], settings: PipelineSettings, is_known: KnownCheck | None = None
) -> list[Outcome]:
    """`analyse_file` of each job, the faces of all their photos embedded in one batch (what
    a process analysing photos in a row does: ONNX Runtime is faster per face in batches).
    A photo whose analysis fails fails alone, with its reason."""
    pipeline = pipeline_for(settings)
    outcomes: list[Outcome | None] = []
    opened: list[tuple[int, _Opened]] = []
    for job in jobs:
        found = _open(job, settings, is_known)
        if isinstance(found, _Opened):
            opened.append((len(outcomes), found))
        outcomes.append(None if isinstance(found, _Opened) else found)
    images = [item.image for _, item in opened]
    try:
        analysed: list[PhotoAnalysis | str] = list(
            pipeline.analyse_images(images, names=[item.job.path for _, item in opened])
        )
    except Exception:  # one photo's trouble: analysed one by one, only that one fails
        analysed = [_analysed_alone(pipeline, item) for _, item in opened]
    for (at, item), analysis in zip(opened, analysed, strict=True):
        outcomes[at] = (
            FailedPhoto(item.stat, analysis)
            if isinstance(analysis, str)
            else IndexedPhoto(item.stat, item.sha256, analysis, item.job.label, item.job.provenance)
        )
    return [outcome for outcome in outcomes if outcome is not None]


@dataclass(frozen=True)
class _Opened:
    """A file read, hashed and decoded: ready for detection."""

    job: PhotoJob
    stat: FileStat
    sha256: str
    image: DecodedImage


def _open(
    job: PhotoJob, settings: PipelineSettings, is_known: KnownCheck | None
) -> Outcome | _Opened:
    """The file read, hashed and decoded; or what it is without the pipeline (a failure, or
    bytes the catalogue already holds)."""
    try:
        stat, data = _read(job.path)
    except BadImage as error:
        return FailedPhoto(FileStat(job.path, -1, -1), error.reason)
    sha256 = hashlib.sha256(data).hexdigest()
    if is_known is not None and is_known(sha256):
        return KnownPhoto(stat, sha256, job.label)
    try:
        image = decode_image(data, job.path, settings.max_side)
    except BadImage as error:
        return FailedPhoto(stat, error.reason)
    except Exception as error:  # a crash in one photo must not end the run
        return FailedPhoto(stat, _pipeline_failed(error))
    return _Opened(job, stat, sha256, image)


def _analysed_alone(pipeline: FacePipeline, item: _Opened) -> PhotoAnalysis | str:
    """One photo's analysis, or why it failed."""
    try:
        return pipeline.analyse_image(item.image, name=item.job.path)
    except BadImage as error:
        return error.reason
    except Exception as error:
        return _pipeline_failed(error)


def _pipeline_failed(error: Exception) -> str:
    return f"the face pipeline failed: {type(error).__name__}: {error}"


def _read(path: str) -> tuple[FileStat, bytes]:
    from ..faces.imaging import MAX_FILE_BYTES, read_photo_bytes

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


class Runner(Protocol):
    """What analyses and stores the photos of an index run (the seam between planning an
    index run and doing it): a local process pool, or a fleet's workers."""

    def run(
        self, jobs: Sequence[PhotoJob], settings: PipelineSettings, writer: BatchWriter
    ) -> None:
        """Analyse every job with `settings` and tell `writer` of each: an outcome for it to
        store (`writer.add`), or a result stored elsewhere (`writer.tell`). Ctrl-C
        (KeyboardInterrupt) may end it; what was told is kept."""


def index_plan(
    store: Store,
    plan: Plan,
    settings: PipelineSettings,
    runner: Runner,
    *,
    retry_failed: bool = False,
    progress: ProgressCallback | None = None,
) -> IndexReport:
    """Index every job of `plan` into `store`, the photos analysed by `runner`; returns the
    run's report. Ctrl-C stops the run after committing what is done; the report says it
    was interrupted.
    """
    started = time.monotonic()
    report = IndexReport(total=len(plan.jobs) + len(plan.problems), not_photos=plan.not_photos)
    writer = BatchWriter(store, report, progress)
    if plan.manifest:
        store.forget_failures(manifest_rows(plan.manifest))
    writer.extend(plan.problems)
    todo = changed_jobs(store, plan.jobs, writer, retry_failed)
    writer.flush()
    try:
        runner.run(todo, settings, writer)
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
    `retry_failed`); the others are told to `writer` as unchanged."""
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

    def tell(self, result: SaveResult) -> None:
        """Count a result stored elsewhere (by a fleet's worker), and report progress."""
        self.report.count(result)
        self._advance(result)

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
