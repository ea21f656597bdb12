"""What the machine is doing, for benchmarks that share it: busy CPU time and waiting for quiet."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

__all__ = ["machine_busy_seconds", "wait_for_quiet"]


def machine_busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (0 where /proc/stat is missing)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float, busy_limit: float = 0.15) -> None:
    """Wait (up to `max_wait` s) until all processes use less than `busy_limit` of a core."""
    deadline = time.monotonic() + max_wait
    while True:
        start = machine_busy_seconds()
        time.sleep(1.0)
        busy = machine_busy_seconds() - start
        if busy < busy_limit or time.monotonic() >= deadline:
            return
        print(f"waiting: other processes keep {busy:.1f} cores busy", file=sys.stderr)
