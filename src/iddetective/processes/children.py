"""Worker processes that die with the process that started them, however it ends.

A pool's workers wait on a queue their parent feeds; when the parent is SIGKILLed (or crashes,
or meets the OOM killer) nothing tells them, and they wait forever, reparented to pid 1,
holding models and catalogue connections. Every worker process the project starts calls
`prepare_child` first (ignoring Ctrl-C, then `die_with_parent`): those of the one worker pool
(processes.py), started by hand in `child_context()`, and those of a `spawn_pool`:

- On Linux the kernel kills the worker when its parent ends (`prctl(PR_SET_PDEATHSIG,
  SIGKILL)`). The kernel sends it when the *thread* that started the worker ends, so it is
  asked for only when that thread was the parent's main thread, which lives as long as the
  process (a pool a short-lived thread grows must not lose its workers with that thread).
- Everywhere, a daemon thread watches: the pipe a multiprocessing parent holds open for its
  child (readable once the parent is gone) and the parent's pid (a reparented process has
  another parent). This is what works on other systems, and with workers started by threads.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

__all__ = ["POLL_SECONDS", "child_context", "die_with_parent", "prepare_child", "spawn_pool"]

#: How often the watching thread looks at its parent.
POLL_SECONDS = 0.25

_PR_SET_PDEATHSIG = 1  # linux/prctl.h

Initializer = Callable[..., object]


class _WorkerProcess(SpawnProcess):
    """A spawned process that knows whether the main thread of its parent started it."""

    started_by_main_thread = False

    def start(self) -> None:
        # Pickled with the process object, so the worker reads it in `die_with_parent`.
        self.started_by_main_thread = threading.current_thread() is threading.main_thread()
        super().start()


class _WorkerContext(SpawnContext):
    Process = _WorkerProcess


_CONTEXT = _WorkerContext()


def spawn_pool(
    workers: int, initializer: Initializer | None = None, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes that die with this one and ignore Ctrl-C (the
    parent alone decides what it means); each runs `initializer(*initargs)` first."""
    return ProcessPoolExecutor(
        workers, mp_context=_CONTEXT, initializer=_start_worker, initargs=(initializer, initargs)
    )


def child_context() -> SpawnContext:
    """The multiprocessing context for a worker process started by hand (not in a pool):
    its target calls `prepare_child` first."""
    return _CONTEXT


def prepare_child() -> None:
    """What a worker process does first: ignore Ctrl-C and die with its parent."""
    # Ctrl-C reaches the whole process group: the main process alone decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = multiprocessing.current_process()
    die_with_parent(death_signal=getattr(me, "started_by_main_thread", False))


def _start_worker(initializer: Initializer | None, initargs: tuple[Any, ...]) -> None:
    prepare_child()
    if initializer is not None:
        initializer(*initargs)


def die_with_parent(*, death_signal: bool = True) -> None:
    """End this process (SIGKILL) as soon as its parent ends, however the parent ends.

    With `death_signal` (Linux) the kernel does it at once; a daemon thread watches too
    (within `POLL_SECONDS`, once the thread gets to run). Call it first thing in a child.
    """
    parent = multiprocessing.parent_process()
    parent_pid = parent.pid if parent is not None and parent.pid else os.getppid()
    if death_signal:
        _ask_kernel()
    if os.getppid() != parent_pid:  # the parent was gone before the kernel was asked
        _die()
    sentinel = parent.sentinel if parent is not None else None
    watcher = threading.Thread(
        target=_watch, args=(parent_pid, sentinel), name="die-with-parent", daemon=True
    )
    watcher.start()


def _ask_kernel() -> bool:
    """prctl(PR_SET_PDEATHSIG, SIGKILL) on Linux; whether the kernel took it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, sentinel: int | None) -> None:
    while os.getppid() == parent_pid:
        if sentinel is None:
            time.sleep(POLL_SECONDS)
        elif multiprocessing.connection.wait([sentinel], timeout=POLL_SECONDS):
            break  # the parent's end of the pipe closed: it is gone
    _die()


def _die() -> None:
    kill = getattr(signal, "SIGKILL", None)
    if kill is not None:
        os.kill(os.getpid(), kill)
    os._exit(1)
