"""The one worker pool (processes.WorkerPool) and `map_in_processes` built on it, with real
spawned processes running tests/support/pool_work.py: an item that kills its worker or overruns the
time bound fails alone, the worker is replaced, and every other item gets its result."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from iddetective.processes.pool import (
    RemoteTraceback,
    WorkerCrashed,
    WorkerFailed,
    WorkerPool,
    WorkerTimedOut,
    map_in_processes,
)

from support.pool_work import (
    POISON,
    SLOW,
    count_initialization,
    fail,
    refuse_to_start,
    work,
)

TIME_BOUND = 1.0


@pytest.fixture()
def pool() -> Iterator[WorkerPool[tuple[int, int, int]]]:
    """Two workers running `work`, each initialized once, with a time bound per item."""
    with WorkerPool(
        work, 2, initializer=count_initialization, seconds=TIME_BOUND, name="test-worker"
    ) as workers:
        yield workers


def wait_until(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """Whether the process has ended and been reaped (a zombie still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def dead(pid: int) -> bool:
    """Whether the process has ended: a zombie whose threads are all gone (its main thread
    shows as a zombie before the others have ended, and it cannot be reaped until then)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] == "Z" and fields[17] == "1"


def crashed(number: int) -> tuple[int, int, int]:
    return (-1, -1, -1)


def test_every_item_gets_its_result_as_it_is_done() -> None:
    done = list(map_in_processes(work, list(range(12)), 2, crashed=crashed))
    assert sorted(number for number, _ in done) == list(range(12))
    assert all(result[0] == number * number for number, result in done)
    assert len({pid for _, (_, pid, _) in done}) <= 2
    assert os.getpid() not in {pid for _, (_, pid, _) in done}


def test_an_item_that_kills_its_worker_fails_alone() -> None:
    items = [1, 2, 3, POISON, 4, 5, 6]
    done = dict(map_in_processes(work, items, 2, crashed=crashed))
    assert done.pop(3) == (-1, -1, -1)
    assert {number: result[0] for number, result in done.items()} == {
        0: 1,
        1: 4,
        2: 9,
        4: 16,
        5: 25,
        6: 36,
    }


def test_the_initializer_runs_once_per_worker_replacements_included() -> None:
    items = [*range(6), POISON, *range(6)]
    done = dict(map_in_processes(work, items, 2, crashed=crashed, initializer=count_initialization))
    assert done.pop(6) == (-1, -1, -1)
    assert {initialized for _, _, initialized in done.values()} == {1}
    assert len({pid for _, pid, _ in done.values()}) >= 2


def test_a_crash_is_that_items_alone_and_the_worker_is_replaced(
    pool: WorkerPool[tuple[int, int, int]],
) -> None:
    before = pool.worker_pids()
    poisoned, *others = [pool.submit(number) for number in (POISON, 2, 3, 4)]
    with pytest.raises(WorkerCrashed):
        poisoned.result(timeout=60)
    assert [future.result(timeout=60)[0] for future in others] == [4, 9, 16]
    wait_until(lambda: len(pool.worker_pids()) == 2)
    after = pool.worker_pids()
    assert len(set(before) - set(after)) == 1
    assert all(gone(pid) for pid in set(before) - set(after))
    assert {pool.submit(7).result(timeout=60)[2] for _ in range(4)} == {1}


def test_an_item_over_the_time_bound_fails_alone_and_its_worker_is_replaced(
    pool: WorkerPool[tuple[int, int, int]],
) -> None:
    before = set(pool.worker_pids())
    started = time.monotonic()
    slow = pool.submit(SLOW)
    quick = [pool.submit(number) for number in range(6)]
    assert [future.result(timeout=60)[0] for future in quick] == [n * n for n in range(6)]
    with pytest.raises(WorkerTimedOut) as timed_out:
        slow.result(timeout=60)
    assert timed_out.value.seconds == TIME_BOUND
    assert TIME_BOUND <= time.monotonic() - started < TIME_BOUND + 30
    wait_until(lambda: len(pool.worker_pids()) == 2)
    stuck = before - set(pool.worker_pids())
    assert len(stuck) == 1 and all(gone(pid) for pid in stuck)  # ended, not left burning


def test_a_worker_that_died_idle_is_replaced_before_it_is_given_an_item(
    pool: WorkerPool[tuple[int, int, int]],
) -> None:
    victim = pool.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: dead(victim))
    time.sleep(0.2)  # the kernel tells the parent just after the last thread is gone
    for _ in range(10):  # until the dead worker's slot takes an item
        results = [pool.submit(number) for number in range(4)]
        assert [future.result(timeout=60)[0] for future in results] == [0, 1, 4, 9]
        if victim not in pool.worker_pids():
            break
    assert victim not in pool.worker_pids() and gone(victim)
    wait_until(lambda: len(pool.worker_pids()) == 2)


def test_an_items_exception_is_raised_here_with_the_workers_traceback() -> None:
    with WorkerPool(fail, 1) as pool:
        with pytest.raises(ValueError, match="2 is even") as even:
            pool.submit(2).result(timeout=60)
        assert isinstance(even.value.__cause__, RemoteTraceback)
        assert "pool_work.py" in str(even.value.__cause__)
        with pytest.raises(WorkerFailed, match="Unpicklable: 3 is odd"):
            pool.submit(3).result(timeout=60)
        with pytest.raises(ValueError, match="4 is even"):  # the worker lives on
            pool.submit(4).result(timeout=60)


def test_a_worker_that_cannot_start_is_an_error_at_once() -> None:
    with pytest.raises(WorkerFailed, match="FileNotFoundError: no model file here"):
        WorkerPool(work, 2, initializer=refuse_to_start)


def test_close_kills_the_busy_workers_and_cancels_the_waiting_items() -> None:
    pool = WorkerPool(work, 1)
    (pid,) = pool.worker_pids()
    running = pool.submit(SLOW)
    wait_until(running.running)
    waiting = pool.submit(2)
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 15
    with pytest.raises(WorkerCrashed):
        running.result(timeout=10)
    assert waiting.cancelled() and gone(pid)
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(3)
