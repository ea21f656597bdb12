"""Worker processes die with the process that started them, even when it is SIGKILLed.

`iddetective index --workers 2` and `iddetective serve` are started as real subprocesses on
real photos; once their worker processes exist, only the main process is killed (not its
process group, as a crash or the OOM killer would), and every process it had started must
be gone within seconds. Processes are read from /proc (psutil is not installed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iddetective.catalogue import CATALOG_FILE
from iddetective.processes.children import spawn_pool

from support.facesets import read_labels, require_set, write_manifest
from support.proc import GONE_WITHIN, Process, command_line, descendants, kill_alone
from support.services import free_port

pytestmark = [
    pytest.mark.faces,
    pytest.mark.services,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc"),
]


def workers_of(pid: int) -> set[Process]:
    """The spawned multiprocessing workers under `pid`."""
    return {p for p in descendants(pid) if "spawn_main" in command_line(p[0])}


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture()
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts, each in a session of its own; whatever is left of those
    sessions is killed afterwards, so a failing test leaves no process behind."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def start(processes: list[subprocess.Popen[bytes]], *arguments: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "iddetective", *arguments]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    processes.append(process)
    return process


def kill_and_assert_children_die(process: subprocess.Popen[bytes], workers: int) -> None:
    """SIGKILL `process` alone once it has `workers` workers; all it started must die."""
    wait_until(lambda: len(workers_of(process.pid)) >= workers, 120, f"{workers} workers")
    left = kill_alone(process)
    assert not left, f"still running {GONE_WITHIN} s after their parent was killed: {left}"


def test_sigkill_of_index_with_two_workers_ends_its_workers(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    manifest = write_manifest(tmp_path / "people.csv", read_labels(require_set("lfw_dev"))[:300])
    data = tmp_path / "data"
    run = start(started, "index", "--people", str(manifest), "--data", str(data), "--workers", "2")
    # Mid-run: the workers are analysing photos when their parent dies.
    wait_until(lambda: (data / CATALOG_FILE).exists(), 120, "the catalogue")
    kill_and_assert_children_die(run, workers=2)


def test_sigkill_of_serve_ends_its_analysis_workers(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    server = start(
        started, "serve", "--data", str(tmp_path / "data"), "--port", str(port), "--workers", "2"
    )

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    wait_until(answers, 120, "the server")
    kill_and_assert_children_die(server, workers=2)


def _pid() -> int:
    return os.getpid()


def test_workers_started_by_a_thread_that_ends_keep_working() -> None:
    # The kernel's parent-death signal follows the thread that started a child, not its
    # process: workers a short-lived thread started must not die when it ends.
    pool = spawn_pool(2)
    try:

        def first_tasks() -> None:
            for future in [pool.submit(_pid), pool.submit(_pid)]:
                future.result(timeout=120)

        thread = threading.Thread(target=first_tasks)
        thread.start()
        thread.join()
        time.sleep(1)
        assert all(pool.submit(_pid).result(timeout=60) for _ in range(4))
    finally:
        pool.shutdown()


#: A process whose pool is started by a thread, so its workers get no kernel death signal
#: (see above) and only the watching thread can end them.
POOL_FROM_A_THREAD = """
import os, sys, threading, time
from iddetective.processes.children import spawn_pool

def start() -> None:
    pool = spawn_pool(2)
    for future in [pool.submit(os.getpid) for _ in range(2)]:
        future.result(timeout=120)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    time.sleep(600)

threading.Thread(target=start, daemon=True).start()
time.sleep(600)
"""


def test_workers_without_the_kernel_signal_die_with_their_parent_too(
    started: list[subprocess.Popen[bytes]],
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", POOL_FROM_A_THREAD], stdout=subprocess.PIPE, start_new_session=True
    )
    started.append(process)
    assert process.stdout is not None
    with process.stdout:
        assert process.stdout.readline() == b"ready\n"
    kill_and_assert_children_die(process, workers=2)


#: A forked child watching its parent's pid alone, as a Celery pool process does.
FORKED_CHILD = """
import os, sys, time
from iddetective.processes.children import die_with_parent

if os.fork() == 0:
    die_with_parent(death_signal=False)
    os.write(1, b"ready\\n")
    time.sleep(600)
    os._exit(0)
time.sleep(600)
"""


def test_a_forked_child_watching_its_parents_pid_dies_with_it(
    started: list[subprocess.Popen[bytes]],
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", FORKED_CHILD], stdout=subprocess.PIPE, start_new_session=True
    )
    started.append(process)
    assert process.stdout is not None
    with process.stdout:
        assert process.stdout.readline() == b"ready\n"
    assert len(descendants(process.pid)) == 1
    left = kill_alone(process)
    assert not left, f"still running {GONE_WITHIN} s after its parent was killed: {left}"
