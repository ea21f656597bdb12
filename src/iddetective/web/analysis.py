"""The face pipeline behind the web app: worker processes the server owns, or the calling thread.

Detecting and embedding a query photo takes a few hundred milliseconds of CPU, and dlib holds
the GIL for much of it, so the server analyses photos in worker processes (models loaded once
per process). Admission is bounded: at most `workers + queue` photos are in the pool at once;
the next request gets `Busy` (HTTP 503 with Retry-After) instead of growing a backlog.

The workers are the project's one pool (`processes.WorkerPool`, with its crash rule): each
is a process of its own with one photo at a time, so whatever happens to a photo happens to
its request alone: an error comes back as the typed error it is; a worker that dies (a crash
in native code) fails only the photo it held (`PipelineCrashed`), and one that takes longer
than `AnalysisLimits.seconds` is killed (`AnalysisTimeout`): either way a fresh process takes
the slot, and the other photos in flight, held by other workers, never notice. A photo
waiting for a worker waits in the pool's queue, holding no thread.
`AnalysisLimits` also bounds the pixels a photo may declare and the faces it may have.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..entities import Box, PhotoAnalysis
from ..errors import BadImage, IDDetectiveError
from ..faces.pipeline import PipelineSettings, pipeline_for, prepared
from ..processes.pool import RemoteTraceback, WorkerCrashed, WorkerPool, WorkerTimedOut, travels

__all__ = [
    "AnalysisLimits",
    "AnalysisPool",
    "AnalysisTimeout",
    "Busy",
    "PipelineCrashed",
]


@dataclass(frozen=True)
class AnalysisLimits:
    """What one photo sent to the server may cost. Defaults are sized so that the worst
    photo within them takes a few seconds of one worker (docs/web.md, "Limits")."""

    #: Pixels a photo may declare (width x height), checked before decoding: a 50 MP
    #: photo (8660 x 5773; a 48 MP phone's full resolution) passes.
    max_pixels: int = 50_000_000
    #: Faces a photo may have; more are refused before any is embedded.
    max_faces: int = 40
    #: Seconds one photo's analysis may take in a worker process (timed from the moment a
    #: worker takes it, not while it waits); past that the worker is killed and replaced.
    #: Not applied with `workers=0`: a thread cannot be stopped.
    seconds: float = 15.0


class Busy(IDDetectiveError):
    """Every analysis slot is taken; try again shortly."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the server is analysing as many photos as it can; retry shortly")
        self.retry_after = retry_after


class PipelineCrashed(BadImage):
    """The worker process analysing the photo died (a crash in native code)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "the face pipeline crashed while analysing this photo")


class AnalysisTimeout(BadImage):
    """The photo's analysis took longer than the server allows; its worker was replaced."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(
            name,
            f"analysing this photo took longer than the server's {seconds:g} s limit; "
            "send a smaller photo",
        )
        self.seconds = seconds


class AnalysisPool:
    """Analyse photo bytes with the face pipeline, `workers` at a time, `queue` more waiting.

    `workers=0` analyses in the calling thread, one photo at a time (for tests and tiny
    installs): no processes to start, same answers, no time bound.
    """

    def __init__(
        self,
        settings: PipelineSettings,
        workers: int,
        queue: int,
        limits: AnalysisLimits | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits or AnalysisLimits()
        self.workers = workers
        self.capacity = max(1, workers) + queue
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._inline_lock = threading.Lock()
        # Ready means warm: the first query photos must not wait for processes and models.
        self._pool: WorkerPool[PhotoAnalysis] | None = None
        if workers > 0:
            # The embedder's graph built and checked once, here, not by every worker.
            settings = prepared(settings)
            self._pool = WorkerPool(
                _analyse_photo,
                workers,
                arguments=(settings, self.limits),
                initializer=_warm_up,
                initargs=(settings,),
                seconds=self.limits.seconds,
                name="iddetective-analysis",
            )

    @property
    def pending(self) -> int:
        """Photos being analysed or waiting for a slot now."""
        return self._pending

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (fewer than `workers` while one is replaced)."""
        return self._pool.worker_pids() if self._pool is not None else []

    async def analyse(self, data: bytes, name: str) -> PhotoAnalysis:
        """Every face in the photo; raises `BadImage` (or a subclass: too many faces, too
        slow, crashed its worker) for a photo that cannot be used, `Busy` when full."""
        with self._pending_lock:
            if self._pending >= self.capacity:
                raise Busy(retry_after=1)
            self._pending += 1
        try:
            if self._pool is None:
                return await run_in_threadpool(self._analyse_inline, data, name)
            return await self._analyse_in_worker(self._pool, data, name)
        finally:
            with self._pending_lock:
                self._pending -= 1

    def _analyse_inline(self, data: bytes, name: str) -> PhotoAnalysis:
        with self._inline_lock:  # dlib's models are not safe to share between threads
            return _analyse(self.settings, self.limits, data, name)

    async def _analyse_in_worker(
        self, pool: WorkerPool[PhotoAnalysis], data: bytes, name: str
    ) -> PhotoAnalysis:
        try:
            return await asyncio.wrap_future(pool.submit((data, name)))
        except WorkerCrashed:
            raise PipelineCrashed(name) from None
        except WorkerTimedOut:
            raise AnalysisTimeout(name, self.limits.seconds) from None
        except IDDetectiveError:
            raise
        except Exception as error:
            trace = error.__cause__ if isinstance(error.__cause__, RemoteTraceback) else error
            raise RuntimeError(f"analysing {name!r} failed in a worker process:\n{trace}") from None

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.close()


# -- in the worker process ------------------------------------------------------------------


def _analyse_photo(
    photo: tuple[bytes, str], settings: PipelineSettings, limits: AnalysisLimits
) -> PhotoAnalysis:
    """One photo's analysis in a worker process; its typed errors travel back as they are."""
    data, name = photo
    try:
        return _analyse(settings, limits, data, name)
    except IDDetectiveError as error:
        if travels(error):
            raise
        # An error of a plugin that cannot travel: keep its message.
        raise IDDetectiveError(str(error)) from None


def _analyse(
    settings: PipelineSettings, limits: AnalysisLimits, data: bytes, name: str
) -> PhotoAnalysis:
    return pipeline_for(settings).analyse(
        data, name, max_pixels=limits.max_pixels, max_faces=limits.max_faces
    )


def _warm_up(settings: PipelineSettings) -> None:
    """Load the models now (they load on first use), so no query photo waits for them."""
    pipeline = pipeline_for(settings)
    grey = np.full((64, 64, 3), 128, np.uint8)
    try:
        pipeline.detector.detect(grey, 0)
        pipeline.embedder.embed(grey, [Box(16, 16, 48, 48)], 0)
    except Exception:  # best effort: a real photo reports whatever is wrong
        pass
