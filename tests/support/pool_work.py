"""Small picklable functions for the worker pools of tests/test_processes.py, each
misbehaving on purpose for one kind of item.

`POISON` kills the worker process running it (SIGKILL: what a crash in native code or the
OOM killer does to it); `SLOW` takes an hour, like a detector stuck on a pathological photo.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = [
    "POISON",
    "SLOW",
    "Unpicklable",
    "count_initialization",
    "fail",
    "refuse_to_start",
    "work",
]

POISON = -1
SLOW = -2

_initialized = 0


def count_initialization() -> None:
    """The pools' initializer: counts how many times it ran in this process."""
    global _initialized
    _initialized += 1


def work(number: int) -> tuple[int, int, int]:
    """(`number` squared, the pid of the process that ran it, how many times that process
    was initialized); POISON and SLOW misbehave."""
    if number == POISON:
        os.kill(os.getpid(), signal.SIGKILL)
    if number == SLOW:
        time.sleep(3600)
    return number * number, os.getpid(), _initialized


class Unpicklable(Exception):
    """An exception that pickles but cannot be rebuilt from its pickle (two arguments)."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first} {second}")


def fail(number: int) -> int:
    """Raises ValueError for an even number, `Unpicklable` for an odd one."""
    if number % 2 == 0:
        raise ValueError(f"{number} is even")
    raise Unpicklable(str(number), "is odd")


def refuse_to_start() -> None:
    """An initializer that fails, as loading a missing model file would."""
    raise FileNotFoundError("no model file here")
