"""retried(): tries again after the errors its wait function names, within its limits, and
raises the last error as it is (the store's and the fetcher's own tests run it for real:
tests/test_postgres_restart.py, tests/test_fetch.py)."""

from __future__ import annotations

import time

import pytest

from iddetective.retrying import Backoff, retried


class Flaky:
    """Fails `failures` times with OSError("try N"), then returns "done"."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(f"try {self.calls}")
        return "done"


def no_wait(error: Exception, retry: int) -> float | None:
    return 0.0 if isinstance(error, OSError) else None


def test_tries_again_until_it_works() -> None:
    work = Flaky(3)
    assert retried(work, no_wait, attempts=4) == "done" and work.calls == 4


def test_gives_up_after_its_attempts_with_the_last_error() -> None:
    work = Flaky(9)
    with pytest.raises(OSError, match="try 3"):
        retried(work, no_wait, attempts=3)
    assert work.calls == 3


def test_an_error_not_to_retry_is_raised_at_once() -> None:
    def broken() -> str:
        raise KeyError("no")

    with pytest.raises(KeyError):
        retried(broken, no_wait, attempts=5)


def test_never_sleeps_past_its_seconds() -> None:
    work = Flaky(100)
    started = time.monotonic()
    with pytest.raises(OSError):
        retried(work, lambda error, retry: 0.1, seconds=0.35)
    assert 0.25 <= time.monotonic() - started < 0.5 and work.calls == 4


def test_waits_as_told_between_tries() -> None:
    waits: list[int] = []

    def wait(error: Exception, retry: int) -> float:
        waits.append(retry)
        return 0.05

    started = time.monotonic()
    assert retried(Flaky(2), wait, attempts=3) == "done"
    assert waits == [0, 1] and time.monotonic() - started >= 0.1


def test_a_limit_is_required() -> None:
    with pytest.raises(ValueError, match="needs a limit"):
        retried(Flaky(0), no_wait)


def test_backoff_doubles_up_to_its_longest_with_jitter_below_the_delay() -> None:
    assert [Backoff(0.1, longest=0.5).delay(n) for n in range(5)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.5, 0.5]
    )
    jittered = [Backoff(1.0, jitter=True).delay(2) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in jittered) and len(set(jittered)) > 100
