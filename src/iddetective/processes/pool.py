"""Run one function over many photos in spawned worker processes, results as they come.

Indexing (ingest/local.py), the evaluation's embedding and its detector comparison all
spread photos over processes this way, with one crash rule: a photo whose call kills its
worker process (a crash in native code) fails alone, and the rest go on. When a worker dies,
the photos that were in flight are run again one at a time, each in a one-process pool that
is replaced only when a photo kills it; such a photo gets `crashed(item)` as its result, and
the photos not started yet go on in a new pool. The web server's analysis pool
(web/analysis.py) keeps processes of its own, one photo each at a time, for the same rule
plus a time bound per photo.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

from .children import spawn_pool

__all__ = ["IN_FLIGHT_PER_WORKER", "map_in_processes"]

#: Items in flight per worker process: enough to keep each busy, few to run again.
IN_FLIGHT_PER_WORKER = 4

Item = TypeVar("Item")
Result = TypeVar("Result")
_Numbered = tuple[int, Any]
Initializer = Callable[..., object]


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
    remaining: deque[_Numbered] = deque(enumerate(items))
    size = min(workers, len(items))
    while remaining:
        try:
            with _pool(size, initializer, initargs) as pool:
                yield from _bounded_map(pool, function, arguments, remaining, size)
        except _PoolDied as died:
            yield from _one_by_one(
                died.in_flight, function, arguments, crashed, initializer, initargs
            )


class _PoolDied(Exception):
    def __init__(self, in_flight: list[_Numbered]) -> None:
        super().__init__(f"a worker process died with {len(in_flight)} items in flight")
        self.in_flight = in_flight


@contextmanager
def _pool(
    workers: int, initializer: Initializer | None, initargs: tuple[Any, ...]
) -> Iterator[ProcessPoolExecutor]:
    pool = spawn_pool(workers, initializer, initargs)
    try:
        yield pool
    except BaseException:  # _PoolDied, Ctrl-C, or the caller stopped iterating
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _bounded_map(
    pool: ProcessPoolExecutor,
    function: Callable[..., Any],
    arguments: tuple[Any, ...],
    queue: deque[_Numbered],
    workers: int,
) -> Iterator[_Numbered]:
    """Run items taken from `queue`, a few per worker in flight; raises _PoolDied."""
    pending: dict[Future[Any], _Numbered] = {}
    while queue or pending:
        while queue and len(pending) < workers * IN_FLIGHT_PER_WORKER:
            numbered = queue.popleft()
            pending[pool.submit(function, numbered[1], *arguments)] = numbered
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        try:
            results = [(pending[future][0], future.result()) for future in done]
        except BrokenProcessPool:
            raise _PoolDied(list(pending.values())) from None
        for future in done:
            del pending[future]
        yield from results


def _one_by_one(
    items: list[_Numbered],
    function: Callable[..., Any],
    arguments: tuple[Any, ...],
    crashed: Callable[[Any], Any],
    initializer: Initializer | None,
    initargs: tuple[Any, ...],
) -> Iterator[_Numbered]:
    """Run items one at a time in a one-process pool, replaced only when an item kills it."""
    queue = deque(items)
    while queue:
        with _pool(1, initializer, initargs) as pool:
            while queue:
                number, item = queue.popleft()
                try:
                    result = pool.submit(function, item, *arguments).result()
                except BrokenProcessPool:
                    yield number, crashed(item)
                    break  # this pool is dead: start another for the rest
                yield number, result
