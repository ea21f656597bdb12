"""`iddetective worker` subprocesses started by a test, and the small photos they index."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from support.facesets import REPO, Labelled, read_labels, require_set

__all__ = ["VISIBILITY", "Workers", "labelled", "small_photos", "wait_for"]


#: Short, so a batch of a killed worker comes back within seconds (production: 300 s).
VISIBILITY = 3.0


# -- worker processes -------------------------------------------------------------------------


@dataclass
class Workers:
    """`iddetective worker` subprocesses started by one test, each in its own process group."""

    folder: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self,
        broker: str,
        data: Path,
        name: str,
        *,
        pool: str = "solo",
        concurrency: int = 1,
        burst: bool = False,
    ) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "iddetective", "worker", "--broker", broker]
        command += ["--data", str(data), "--name", name, "--pool", pool]
        command += ["--concurrency", str(concurrency), "--visibility-timeout", str(VISIBILITY)]
        command += ["--burst"] if burst else []
        # tests/ for crashing_detector, after what the tests run with (a worktree's src/).
        path = [p for p in (os.environ.get("PYTHONPATH"), str(REPO / "tests")) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        env.pop("IDDETECTIVE_DB", None)
        with open(self.log(name), "wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.started.append((name, process))
        return process

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def wait_ready(self, timeout: float = 60) -> None:
        """Until every started worker logged that it is ready (models loaded)."""
        deadline = time.monotonic() + timeout
        for name, process in self.started:
            while b" ready." not in self.log(name).read_bytes():
                assert process.poll() is None, self.log(name).read_text()
                assert time.monotonic() < deadline, f"{name} not ready: {self.log(name)}"
                time.sleep(0.1)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and its pool processes, as a machine that dies."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for _, process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _, process in self.started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# -- the photos -------------------------------------------------------------------------------


def labelled() -> list[Labelled]:
    return read_labels(require_set("face_recognition"))


def small_photos(folder: Path, count: int) -> Path:
    """A folder with copies of the `count` smallest photos of the set (fault tests)."""
    rows = sorted(labelled(), key=lambda row: os.path.getsize(row.path))[:count]
    folder.mkdir()
    for number, row in enumerate(rows):
        shutil.copy(row.path, folder / f"{number:02d}-{Path(row.path).name}")
    return folder
