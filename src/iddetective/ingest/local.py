"""The local `Runner`: photos analysed on this machine, in a pool of spawned processes.

With one worker (or one photo) photos are analysed in this process, `PHOTOS_AT_ONCE` at a time
(their faces embedded in one batch). Otherwise `workers`
spawned processes (`processes.map_in_processes`: they die with this one) analyse them, with
the project's one crash rule: a photo that kills its worker process (a crash in native code)
fails alone, recorded as `CRASHED`, and the rest of the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..entities import FailedPhoto, FileStat, Outcome
from ..errors import UsageError
from ..faces.pipeline import PipelineSettings, prepared
from ..processes.pool import map_in_processes
from ..sources.paths import PhotoJob
from ..store import Store
from .indexing import CRASHED, PHOTOS_AT_ONCE, BatchWriter, analyse_file, analyse_files

__all__ = ["LocalRunner"]


class LocalRunner:
    """Analyse photos in `workers` processes of this machine; the run's writer stores them.

    `store_opener` opens a read-only store in each worker process so workers can skip bytes
    the catalogue already holds (it must be picklable); `Catalogue.index`'s default runner has
    one that opens its catalogue.
    With `workers` > 1 a script using this must guard its entry point with
    `if __name__ == "__main__":` (the processes are spawned).
    """

    def __init__(self, workers: int = 1, store_opener: Callable[[], Store] | None = None):
        if workers < 1:
            raise UsageError(f"--workers must be at least 1, not {workers}")
        self.workers, self.store_opener = workers, store_opener

    def run(
        self, jobs: Sequence[PhotoJob], settings: PipelineSettings, writer: BatchWriter
    ) -> None:
        """Analyse `jobs` here and hand each outcome to `writer` (`Runner.run`)."""
        if self.workers <= 1 or len(jobs) <= 1:
            for start in range(0, len(jobs), PHOTOS_AT_ONCE):
                chunk = jobs[start : start + PHOTOS_AT_ONCE]
                for outcome in analyse_files(chunk, settings, writer.store.has_photo):
                    writer.add(outcome)
            return
        outcomes = map_in_processes(
            _worker_analyse,
            jobs,
            self.workers,
            prepared(settings),  # the embedder's graph built and checked once, here
            crashed=_crashed,
            initializer=_start_worker,
            initargs=(self.store_opener,),
        )
        for _, outcome in outcomes:
            writer.add(outcome)


def _crashed(job: PhotoJob) -> Outcome:
    return FailedPhoto(FileStat(job.path, -1, -1), CRASHED)


_worker_store: Store | None = None


def _start_worker(store_opener: Callable[[], Store] | None) -> None:
    global _worker_store
    _worker_store = store_opener() if store_opener else None


def _worker_analyse(job: PhotoJob, settings: PipelineSettings) -> Outcome:
    known = _worker_store.has_photo if _worker_store is not None else None
    return analyse_file(job, settings, known)
