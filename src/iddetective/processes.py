"""Run one function over many photos in spawned worker processes, results as they come.

The evaluation's embedding and its detector comparison both spread photos over processes
this way; each worker loads its models once (they are cached per process). Indexing has a
pool of its own (ingest.py) because it must also survive a worker dying mid-photo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from .child_processes import spawn_pool
from .errors import IDDetectiveError

__all__ = ["map_in_processes"]

Result = TypeVar("Result")


def map_in_processes(
    function: Callable[..., Result],
    items: Sequence[Any],
    workers: int,
    *arguments: Any,
) -> Iterator[tuple[int, Result]]:
    """(position in `items`, `function(item, *arguments)`) for every item, in the order they
    are done, in `workers` processes (in this one when `workers` is 1).

    A worker that dies (a crash in native code) ends the run with an `IDDetectiveError`.
    """
    if workers <= 1 or len(items) <= 1:
        for number, item in enumerate(items):
            yield number, function(item, *arguments)
        return
    pool = spawn_pool(min(workers, len(items)))
    try:
        futures: dict[Future[Result], int] = {
            pool.submit(function, item, *arguments): n for n, item in enumerate(items)
        }
        for future in as_completed(futures):
            yield futures[future], future.result()
    except BrokenProcessPool:
        pool.shutdown(wait=False, cancel_futures=True)
        raise IDDetectiveError(
            "a worker process died in the face pipeline; run again with --workers 1 to find "
            "the photo"
        ) from None
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
