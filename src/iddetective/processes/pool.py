"""Work in spawned worker processes, with one crash rule: an item that kills its worker fails
alone, and the rest go on.

`WorkerPool` is the one pool: `workers` spawned processes that die with this one
(processes/children.py), each running `initializer(*initargs)` once (loading the face models,
say) and then `function(item, *arguments)` on one item at a time. Because a worker holds one
item at a time, the item that killed it is known: it gets `WorkerCrashed`, and one that takes
longer than the pool's time bound gets `WorkerTimedOut` (its worker is killed); either way a
fresh process takes that worker's place, and the items other workers hold never notice.
Nothing is run twice.

Indexing (ingest/local.py), the evaluation's embedding and its detector comparison use it
through `map_in_processes` (every item's result as it is done; `crashed(item)` for an item
that killed its worker); the web server's photo analysis (web/analysis.py) submits one photo
per request, with a time bound.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Generic, TypeVar

from .children import child_context, prepare_child

__all__ = [
    "IN_FLIGHT_PER_WORKER",
    "STARTUP_SECONDS",
    "RemoteTraceback",
    "WorkerCrashed",
    "WorkerFailed",
    "WorkerPool",
    "WorkerTimedOut",
    "map_in_processes",
    "travels",
]

log = logging.getLogger("iddetective")

#: Items `map_in_processes` hands the pool per worker at a time: the next one waits here,
#: so no worker waits for work, and few are queued when the caller stops.
IN_FLIGHT_PER_WORKER = 2
#: How long a new worker process may take to start and run its initializer.
STARTUP_SECONDS = 120.0
#: How long a worker that failed to start waits before the next try.
_RETRY_SECONDS = 5.0
#: How long an idle worker has to leave on its own when the pool closes.
_EXIT_SECONDS = 1.0

Item = TypeVar("Item")
Result = TypeVar("Result")
Initializer = Callable[..., object]


class WorkerCrashed(Exception):
    """The worker process running the item died before it answered (a crash in native code,
    a kill), or the pool was closed meanwhile."""

    def __init__(self) -> None:
        super().__init__("the worker process died while running this item")


class WorkerTimedOut(Exception):
    """The item ran longer than the pool's time bound; its worker process was killed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the item ran longer than {seconds:g} s; its worker was killed")
        self.seconds = seconds


class WorkerFailed(RuntimeError):
    """What went wrong in a worker process, told here as text (with its traceback there): its
    initializer failed, or an item's call raised or returned what cannot travel back."""


class RemoteTraceback(Exception):
    """The traceback, in the worker process, of an item's exception (its `__cause__` here)."""

    def __str__(self) -> str:
        return str(self.args[0])


def travels(value: object) -> bool:
    """Whether `value` survives the trip between processes (a pickle round trip)."""
    try:
        pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class _Work:
    """What every worker process of a pool runs: sent to each as it starts."""

    function: Callable[..., Any]
    arguments: tuple[Any, ...]
    initializer: Initializer | None
    initargs: tuple[Any, ...]


@dataclass(frozen=True)
class _Task:
    item: Any
    future: Future[Any]


class WorkerPool(Generic[Result]):
    """`workers` persistent worker processes, each running `function(item, *arguments)` on
    one item at a time after `initializer(*initargs)`; `function` and the initializer must be
    picklable (module-level). With `seconds`, an item's call may take that long from the
    moment a worker takes it. Ready when built: every worker has run its initializer
    (`WorkerFailed` if one cannot).
    """

    def __init__(
        self,
        function: Callable[..., Result],
        workers: int,
        *,
        arguments: tuple[Any, ...] = (),
        initializer: Initializer | None = None,
        initargs: tuple[Any, ...] = (),
        seconds: float | None = None,
        name: str = "iddetective-worker",
    ) -> None:
        if workers < 1:
            raise ValueError(f"a worker pool needs at least 1 worker, not {workers}")
        self.seconds = seconds
        self._work = _Work(function, arguments, initializer, initargs)
        self._name = name
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._slots = [_Slot(worker) for worker in _start_workers(self._work, workers, name)]
        self._threads = [
            threading.Thread(target=self._keep, args=(slot,), name=f"{name}-slot", daemon=True)
            for slot in self._slots
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, item: Any) -> Future[Result]:
        """Run `function(item, *arguments)` in the next free worker: the future of its result,
        or of its exception (raised from a `RemoteTraceback`), `WorkerCrashed` or
        `WorkerTimedOut`."""
        future: Future[Result] = Future()
        with self._lock:
            if self._closing.is_set():
                raise RuntimeError("the worker pool is closed")
            self._tasks.put(_Task(item, future))
        return future

    def worker_pids(self) -> list[int]:
        """The process ids of the ready workers (fewer than `workers` while one is replaced)."""
        with self._lock:
            return sorted(slot.worker.pid for slot in self._slots if slot.ready)

    def close(self) -> None:
        """End the workers: idle ones leave, busy ones are killed (their items get
        `WorkerCrashed`); items not started yet are cancelled."""
        with self._lock:
            if self._closing.is_set():
                return
            self._closing.set()
            busy = [slot.worker for slot in self._slots if not slot.idle]
        for worker in busy:
            worker.kill()
        self._cancel_waiting()
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> WorkerPool[Result]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _cancel_waiting(self) -> None:
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                return
            if task is not None:
                task.future.cancel()

    def _keep(self, slot: _Slot) -> None:
        """A slot's life: its worker runs one task at a time, and is replaced when it dies
        or overruns, until the pool closes."""
        try:
            while (task := self._take(slot)) is not None:
                self._run(slot, task)
                with self._lock:
                    slot.idle = True
        finally:
            slot.worker.stop(_EXIT_SECONDS)

    def _take(self, slot: _Slot) -> _Task | None:
        """The next task for `slot` (no longer idle), or None once the pool is closing."""
        while True:
            task = self._tasks.get()
            with self._lock:
                if task is None or self._closing.is_set():
                    if task is not None:
                        task.future.cancel()
                    return None
                if task.future.set_running_or_notify_cancel():
                    slot.idle = False
                    return task

    def _run(self, slot: _Slot, task: _Task) -> None:
        if not slot.worker.alive():  # it died idle: not this item's doing
            self._retire(slot)
            if not self._replace(slot):
                task.future.set_exception(WorkerCrashed())
                return
        try:
            answer = slot.worker.run(task.item, self.seconds)
        except (WorkerCrashed, WorkerTimedOut) as error:
            self._retire(slot)  # gone from worker_pids() before the item's caller hears
            task.future.set_exception(error)
            self._replace(slot)
        except Exception as error:  # the item cannot be pickled: the worker never saw it
            task.future.set_exception(error)
        else:
            _settle(task.future, answer)

    def _retire(self, slot: _Slot) -> None:
        """End the slot's worker (killed and reaped)."""
        with self._lock:
            slot.ready = False
        slot.worker.stop()

    def _replace(self, slot: _Slot) -> bool:
        """Start a worker for the slot, trying again until one starts or the pool closes;
        whether one did."""
        while not self._closing.is_set():
            worker = self._started_worker(slot)
            if worker is None:
                self._closing.wait(_RETRY_SECONDS)
                continue
            try:
                worker.wait_ready(time.monotonic() + STARTUP_SECONDS)
            except WorkerFailed:
                if self._closing.is_set():
                    break
                log.exception("cannot start a worker process; trying again in %g s", _RETRY_SECONDS)
                worker.stop()
                self._closing.wait(_RETRY_SECONDS)
                continue
            with self._lock:
                slot.ready = True
            return True
        return False

    def _started_worker(self, slot: _Slot) -> _Worker | None:
        """A new worker process, now the slot's (close() kills it), or None if none starts."""
        try:
            worker = _Worker(self._work, self._name)
        except Exception:
            log.exception("cannot start a worker process; trying again in %g s", _RETRY_SECONDS)
            return None
        with self._lock:
            slot.worker = worker
            if self._closing.is_set():  # close() did not see it: end it here
                worker.kill()
        return worker


class _Slot:
    """A place in the pool: the worker holding it, whether it is ready, whether it is idle
    (waiting for a task: close() lets it leave rather than killing it)."""

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.ready = True
        self.idle = True


class _Worker:
    """One worker process and this end of the pipe to it."""

    def __init__(self, work: _Work, name: str) -> None:
        context = child_context()
        ours, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs, work), name=name, daemon=True)
        self.process.start()
        theirs.close()
        self.connection = ours
        self.pid = self.process.pid or 0

    def wait_ready(self, deadline: float) -> None:
        """Wait until the process has run its initializer; `WorkerFailed` if it cannot."""
        try:
            if not self.connection.poll(max(0.0, deadline - time.monotonic())):
                raise WorkerFailed(f"a worker process did not start within {STARTUP_SECONDS:g} s")
            kind, _, text = pickle.loads(self.connection.recv_bytes())
        except (EOFError, OSError):
            raise WorkerFailed("a worker process died as it started") from None
        if kind != "ready":
            raise WorkerFailed(f"a worker process could not start:\n{text}")

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.is_alive()

    def run(self, item: Any, seconds: float | None) -> bytes:
        """The worker's pickled answer for `item`; `WorkerCrashed` if the process died,
        `WorkerTimedOut` after `seconds` (the caller replaces this worker for either)."""
        request = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
        try:
            self.connection.send_bytes(request)
            if not self.connection.poll(seconds):
                raise WorkerTimedOut(seconds or 0.0)
            return self.connection.recv_bytes()
        except (EOFError, OSError):
            raise WorkerCrashed() from None

    def kill(self) -> None:
        """Kill the process (from any thread; the slot's thread reaps it)."""
        if self.process.is_alive():
            self.process.kill()

    def stop(self, grace: float = 0.0) -> None:
        """End the process: it has `grace` seconds to leave once its pipe is closed, then it
        is killed (it may be stuck in native code); reaped either way."""
        self.connection.close()
        self.process.join(grace)
        self.kill()
        self.process.join(10)


def _start_workers(work: _Work, count: int, name: str) -> list[_Worker]:
    """`count` worker processes, started together, once each has run its initializer."""
    workers: list[_Worker] = []
    try:
        for _ in range(count):
            workers.append(_Worker(work, name))
        deadline = time.monotonic() + STARTUP_SECONDS
        for worker in workers:
            worker.wait_ready(deadline)
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return workers


def _settle(future: Future[Any], answer: bytes) -> None:
    """Give `future` what the worker answered: its result, or its exception."""
    try:
        kind, value, text = pickle.loads(answer)
    except Exception as error:
        future.set_exception(WorkerFailed(f"a worker's answer cannot be read here: {error!r}"))
        return
    if kind == "ok":
        future.set_result(value)
    elif kind == "error":
        value.__cause__ = RemoteTraceback(text)
        future.set_exception(value)
    else:
        future.set_exception(WorkerFailed(text))


# -- in the worker process ------------------------------------------------------------------


def _serve(connection: Connection, work: _Work) -> None:
    """A worker's life: run the initializer, then one item at a time until the pipe closes."""
    prepare_child()  # ignore Ctrl-C, die with the parent (SIGKILL included)
    try:
        if work.initializer is not None:
            work.initializer(*work.initargs)
    except Exception:
        connection.send_bytes(pickle.dumps(("failed", None, traceback.format_exc())))
        return
    connection.send_bytes(pickle.dumps(("ready", None, "")))
    while True:
        try:
            request = connection.recv_bytes()
        except (EOFError, OSError):
            return
        connection.send_bytes(_answer(work, request))


def _answer(work: _Work, request: bytes) -> bytes:
    """The pickled answer for one item: ("ok", result, ""), ("error", exception, its
    traceback) or ("failed", None, traceback); whatever happens, readable by the parent."""
    try:
        result = work.function(pickle.loads(request), *work.arguments)
    except Exception as error:
        text = traceback.format_exc()
        if travels(error):
            return pickle.dumps(("error", error, text), pickle.HIGHEST_PROTOCOL)
        return pickle.dumps(("failed", None, text))
    try:
        return pickle.dumps(("ok", result, ""), pickle.HIGHEST_PROTOCOL)
    except Exception:
        return pickle.dumps(
            ("failed", None, f"the result cannot travel:\n{traceback.format_exc()}")
        )


# -- many items ------------------------------------------------------------------------------


def map_in_processes(
    function: Callable[..., Result],
    items: Sequence[Item],
    workers: int,
    *arguments: Any,
    crashed: Callable[[Item], Result],
    initializer: Initializer | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[tuple[int, Result]]:
    """(position in `items`, `function(item, *arguments)`) for every item, in the order they
    are done, in `workers` processes (in this one when `workers` is 1), each of which runs
    `initializer(*initargs)` first. An item whose call kills its process gets
    `crashed(item)` instead (called here); the others are not affected.
    """
    if workers <= 1 or len(items) <= 1:
        for number, item in enumerate(items):
            yield number, function(item, *arguments)
        return
    size = min(workers, len(items))
    pool = WorkerPool(
        function, size, arguments=arguments, initializer=initializer, initargs=initargs
    )
    with pool:
        yield from _as_done(pool, items, crashed, size * IN_FLIGHT_PER_WORKER)


def _as_done(
    pool: WorkerPool[Result],
    items: Sequence[Item],
    crashed: Callable[[Item], Result],
    ahead: int,
) -> Iterator[tuple[int, Result]]:
    """(position, result) of every item as it is done, at most `ahead` handed to the pool."""
    waiting = iter(enumerate(items))
    running: dict[Future[Result], tuple[int, Item]] = {}
    while True:
        for number, item in itertools.islice(waiting, ahead - len(running)):
            running[pool.submit(item)] = (number, item)
        if not running:
            return
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            number, item = running.pop(future)
            yield number, _result(future, item, crashed)


def _result(future: Future[Result], item: Item, crashed: Callable[[Item], Result]) -> Result:
    try:
        return future.result()
    except WorkerCrashed:
        return crashed(item)
