"""Processes as /proc shows them (psutil is not installed): who started whom, who is alive.

A process is (pid, start time in clock ticks), so a pid reused meanwhile is not mistaken for
the process that had it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["GONE_WITHIN", "Process", "alive", "command_line", "descendants", "kill_alone"]

#: Every process a killed one started must be gone this soon.
GONE_WITHIN = 5.0

Process = tuple[int, int]


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def descendants(pid: int) -> set[Process]:
    """Every live process under `pid`, children of children included."""
    children: dict[int, list[Process]] = {}
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields is not None and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append((int(entry), int(fields[19])))
    found: set[Process] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child[0])
    return found


def alive(process: Process) -> bool:
    """Whether the process runs (a zombie does not)."""
    fields = _stat(process[0])
    return fields is not None and int(fields[19]) == process[1] and fields[0] != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def kill_alone(process: subprocess.Popen[bytes]) -> dict[int, str]:
    """SIGKILL `process` alone (not its group: as a crash or the OOM killer would); the
    processes it had started that still run `GONE_WITHIN` seconds later, with their
    command lines."""
    children = descendants(process.pid)
    assert process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    deadline = time.monotonic() + GONE_WITHIN
    while any(map(alive, children)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {pid: command_line(pid) for pid, _ in filter(alive, children)}
