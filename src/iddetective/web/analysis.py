"""The face pipeline behind the web app: a bounded pool of processes, or the calling thread.

Detecting and embedding a query photo takes a few hundred milliseconds of CPU, and dlib holds
the GIL for much of it, so the server analyses photos in worker processes (models loaded once
per process). Admission is bounded: at most `workers + queue` photos are in the pool at once;
the next request gets `Busy` (HTTP 503 with Retry-After) instead of growing a backlog.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..child_processes import spawn_pool
from ..entities import Box, PhotoAnalysis
from ..errors import IDDetectiveError
from ..faces import PipelineSettings, pipeline_for

__all__ = ["AnalysisPool", "Busy"]


class Busy(IDDetectiveError):
    """Every analysis slot is taken; try again shortly."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the server is analysing as many photos as it can; retry shortly")
        self.retry_after = retry_after


class AnalysisPool:
    """Analyse photo bytes with the face pipeline, `workers` at a time, `queue` more waiting.

    `workers=0` analyses in the calling thread, one photo at a time (for tests and tiny
    installs): no processes to start, same answers.
    """

    def __init__(self, settings: PipelineSettings, workers: int, queue: int) -> None:
        self.settings = settings
        self.workers = workers
        self.capacity = max(1, workers) + queue
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._inline_lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        if workers > 0:
            self._executor = self._new_executor()
            # Ready means warm: the first query photos must not wait for processes and models.
            wait([self._executor.submit(_ready) for _ in range(workers)], timeout=120)

    def _new_executor(self) -> ProcessPoolExecutor:
        return spawn_pool(self.workers, _warm_up, (self.settings,))

    @property
    def pending(self) -> int:
        """Photos being analysed or waiting for a slot now."""
        return self._pending

    async def analyse(self, data: bytes, name: str) -> PhotoAnalysis:
        """Every face in the photo; raises `BadImage` for unusable bytes, `Busy` when full."""
        with self._pending_lock:
            if self._pending >= self.capacity:
                raise Busy(retry_after=1)
            self._pending += 1
        try:
            if self._executor is None:
                return await run_in_threadpool(self._analyse_inline, data, name)
            return await self._analyse_in_pool(data, name)
        finally:
            with self._pending_lock:
                self._pending -= 1

    def _analyse_inline(self, data: bytes, name: str) -> PhotoAnalysis:
        with self._inline_lock:  # dlib's models are not safe to share between threads
            return pipeline_for(self.settings).analyse(data, name)

    async def _analyse_in_pool(self, data: bytes, name: str) -> PhotoAnalysis:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, _analyse, self.settings, data, name)
        except BrokenProcessPool:
            # A photo crashed its worker (dlib can): start a fresh pool, report this photo.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            raise IDDetectiveError(
                f"{name}: the face pipeline crashed while analysing this photo"
            ) from None

    def close(self) -> None:
        """Stop the worker processes."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)


def _warm_up(settings: PipelineSettings) -> None:
    """Load the models now (they load on first use), so no query photo waits for them."""
    pipeline = pipeline_for(settings)
    grey = np.full((64, 64, 3), 128, np.uint8)
    try:
        pipeline.detector.detect(grey, 0)
        pipeline.embedder.embed(grey, [Box(16, 16, 48, 48)], 0)
    except Exception:  # best effort: a real photo reports whatever is wrong
        pass


def _ready() -> None:
    """Nothing: one per worker, submitted together, makes every worker start (and warm up)."""


def _analyse(settings: PipelineSettings, data: bytes, name: str) -> PhotoAnalysis:
    return pipeline_for(settings).analyse(data, name)
