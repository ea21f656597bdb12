"""The face pipeline behind the web app: worker processes the server owns, or the calling thread.

Detecting and embedding a query photo takes a few hundred milliseconds of CPU, and dlib holds
the GIL for much of it, so the server analyses photos in worker processes (models loaded once
per process). Admission is bounded: at most `workers + queue` photos are in the pool at once;
the next request gets `Busy` (HTTP 503 with Retry-After) instead of growing a backlog.

Each worker is a process of its own with one photo at a time, so whatever happens to a photo
happens to its request alone: an error comes back as the typed error it is; a worker that
dies (a crash in native code) fails only the photo it held (`PipelineCrashed`), and one that
takes longer than `AnalysisLimits.seconds` is killed (`AnalysisTimeout`): either way a fresh
process takes the slot, and the other photos in flight, held by other workers, never notice.
`AnalysisLimits` also bounds the pixels a photo may declare and the faces it may have.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..entities import Box, PhotoAnalysis
from ..errors import BadImage, IDDetectiveError
from ..faces.pipeline import PipelineSettings, pipeline_for
from ..processes.children import child_context, prepare_child

__all__ = [
    "AnalysisLimits",
    "AnalysisPool",
    "AnalysisTimeout",
    "Busy",
    "PipelineCrashed",
]

log = logging.getLogger("iddetective.web")

#: How long a new worker process may take to start and load its models.
STARTUP_SECONDS = 120.0


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
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._live: set[_Worker] = set()
        self._live_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        if workers > 0:
            # Ready means warm: the first query photos must not wait for processes and models.
            for worker in _start_workers(settings, self.limits, workers):
                self._add(worker)
                self._idle.put_nowait(worker)

    @property
    def pending(self) -> int:
        """Photos being analysed or waiting for a slot now."""
        return self._pending

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (fewer than `workers` while one is replaced)."""
        with self._live_lock:
            return sorted(w.pid for w in self._live)

    async def analyse(self, data: bytes, name: str) -> PhotoAnalysis:
        """Every face in the photo; raises `BadImage` (or a subclass: too many faces, too
        slow, crashed its worker) for a photo that cannot be used, `Busy` when full."""
        with self._pending_lock:
            if self._pending >= self.capacity:
                raise Busy(retry_after=1)
            self._pending += 1
        try:
            if self.workers == 0:
                return await run_in_threadpool(self._analyse_inline, data, name)
            return await self._analyse_in_worker(data, name)
        finally:
            with self._pending_lock:
                self._pending -= 1

    def _analyse_inline(self, data: bytes, name: str) -> PhotoAnalysis:
        with self._inline_lock:  # dlib's models are not safe to share between threads
            return _analyse(self.settings, self.limits, data, name)

    async def _analyse_in_worker(self, data: bytes, name: str) -> PhotoAnalysis:
        self._loop = asyncio.get_running_loop()
        worker = await self._idle.get()
        try:
            kind, value = await run_in_threadpool(worker.exchange, data, name, self.limits.seconds)
        except BaseException:  # dead, stuck, or a pipe in an unknown state: a fresh process
            self._replace(worker)
            raise
        self._idle.put_nowait(worker)
        if kind == "error":
            assert isinstance(value, IDDetectiveError)
            raise value
        if kind == "bug":
            raise RuntimeError(f"analysing {name!r} failed in a worker process:\n{value}")
        assert isinstance(value, PhotoAnalysis)
        return value

    def _add(self, worker: _Worker) -> None:
        with self._live_lock:
            self._live.add(worker)

    def _replace(self, worker: _Worker) -> None:
        """End `worker` and start another in the background; it takes the slot when ready."""
        with self._live_lock:
            self._live.discard(worker)
        worker.stop()
        if not self._closed:
            threading.Thread(target=self._start_replacement, daemon=True).start()

    def _start_replacement(self) -> None:
        while not self._closed:
            try:
                worker = _start_workers(self.settings, self.limits, 1)[0]
            except Exception:  # keep the slot's place: try again rather than lose it
                log.exception("cannot start an analysis worker process; retrying in 5 s")
                time.sleep(5)
                continue
            if self._closed:
                worker.stop()
                return
            self._add(worker)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._idle.put_nowait, worker)
            return

    def close(self) -> None:
        """Stop the worker processes."""
        self._closed = True
        with self._live_lock:
            live, self._live = self._live, set()
        for worker in live:
            worker.stop()


class _Worker:
    """One analysis process and the pipe to it; one photo at a time."""

    def __init__(self, process: BaseProcess, connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.pid = process.pid or 0

    def wait_ready(self, deadline: float) -> None:
        """Wait for the process to say its models are loaded."""
        if not self.connection.poll(max(0.0, deadline - time.monotonic())):
            raise RuntimeError("an analysis worker did not start in time")
        if self.connection.recv_bytes() != b"ready":
            raise RuntimeError("an analysis worker started wrong")

    def exchange(self, data: bytes, name: str, seconds: float) -> tuple[str, object]:
        """The worker's answer for the photo: ("ok", analysis), ("error", typed error) or
        ("bug", traceback); `PipelineCrashed` if the process died, `AnalysisTimeout` after
        `seconds` (the caller replaces this worker for either)."""
        try:
            self.connection.send_bytes(pickle.dumps((data, name), pickle.HIGHEST_PROTOCOL))
            if not self.connection.poll(seconds):
                raise AnalysisTimeout(name, seconds)
            kind, value = pickle.loads(self.connection.recv_bytes())
        except (EOFError, OSError):
            raise PipelineCrashed(name) from None
        return kind, value

    def stop(self) -> None:
        """Kill the process (it may be stuck in native code) and reap it."""
        self.connection.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)


def _start_workers(settings: PipelineSettings, limits: AnalysisLimits, count: int) -> list[_Worker]:
    """`count` worker processes, started together, once each has loaded its models."""
    context = child_context()
    workers = []
    for _ in range(count):
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(theirs, settings, limits),
            name="iddetective-analysis",
            daemon=True,
        )
        process.start()
        theirs.close()
        workers.append(_Worker(process, ours))
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        for worker in workers:
            worker.wait_ready(deadline)
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return workers


# -- in the worker process ------------------------------------------------------------------


def _serve(connection: Connection, settings: PipelineSettings, limits: AnalysisLimits) -> None:
    """A worker's life: load the models, then analyse photos one by one until the pipe ends."""
    prepare_child()  # ignore Ctrl-C, die with the server (SIGKILL included)
    _warm_up(settings)
    connection.send_bytes(b"ready")
    while True:
        try:
            data, name = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError):
            return
        connection.send_bytes(_answer(settings, limits, data, name))


def _answer(settings: PipelineSettings, limits: AnalysisLimits, data: bytes, name: str) -> bytes:
    """The pickled answer for one photo: ("ok", analysis), ("error", typed error) or ("bug",
    traceback text). Whatever the error, the answer can be unpickled by the server."""
    try:
        return pickle.dumps(("ok", _analyse(settings, limits, data, name)))
    except IDDetectiveError as error:
        try:
            answer = pickle.dumps(("error", error))
            pickle.loads(answer)
            return answer
        except Exception:  # an error of a plugin that cannot travel: keep its message
            return pickle.dumps(("error", IDDetectiveError(str(error))))
    except Exception:
        return pickle.dumps(("bug", traceback.format_exc()))


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
