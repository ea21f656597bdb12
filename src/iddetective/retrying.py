"""Trying again with backoff, written once: a store's lost writes and connections, a photo's
download. (The fleet's batches are retried by Celery, ingest/fleet/tasks.py.)

`retried(work, wait)` runs `work` until it returns; after an exception `wait(error, retry)`
says how long to sleep before trying again (None: not again, the error is raised). The last
error is raised as it is once the attempts or the seconds are used up, so the caller turns
it into its own message.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = ["Backoff", "Wait", "retried"]

T = TypeVar("T")


class Wait(Protocol):
    """Told the error of a try and the number of retries made so far: the seconds to wait
    before the next try, or None when the error is not one to try again after."""

    def __call__(self, error: Exception, retry: int, /) -> float | None: ...


@dataclass(frozen=True)
class Backoff:
    """Exponential delays: `first`, multiplied by `factor` for each further retry, at most
    `longest`; with `jitter` each is drawn from [delay / 2, delay], so that clients that
    failed together do not come back together."""

    first: float
    factor: float = 2.0
    longest: float = math.inf
    jitter: bool = False

    def delay(self, retry: int) -> float:
        """The wait before retry number `retry` (0: the first retry)."""
        nominal = min(self.first * self.factor**retry, self.longest)
        return nominal * random.uniform(0.5, 1.0) if self.jitter else nominal


def retried(
    work: Callable[[], T],
    wait: Wait,
    *,
    attempts: int | None = None,
    seconds: float | None = None,
) -> T:
    """`work()`, tried again after each exception `wait` gives a delay for, at most
    `attempts` times in all and never sleeping past `seconds` from now; then the last
    exception is raised."""
    if attempts is None and seconds is None:
        raise ValueError("retried() needs a limit: attempts, seconds or both")
    deadline = math.inf if seconds is None else time.monotonic() + seconds
    retry = 0
    while True:
        try:
            return work()
        except Exception as error:
            delay = wait(error, retry)
            retry += 1
            out_of_attempts = attempts is not None and retry >= attempts
            if delay is None or out_of_attempts or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
