"""Running a command in a pseudo-terminal, answering its question."""

from __future__ import annotations

import os
from dataclasses import dataclass

from support.facesets import REPO

__all__ = ["TerminalRun", "run_in_terminal"]


# -- the command line in a terminal ---------------------------------------------------------


@dataclass(frozen=True)
class TerminalRun:
    """What `iddetective` did when run in a terminal: exit code, standard output, and what
    it wrote to the terminal (prompts go to standard error, which is the terminal too)."""

    exit_code: int
    stdout: str
    terminal: str


def run_in_terminal(args: list[str], answer: str, timeout: float = 300) -> TerminalRun:
    """Run `python -m iddetective ARGS` with a pseudo-terminal as its standard input and
    error (so it may ask), typing `answer` and Enter; standard output is captured apart."""
    import subprocess
    import sys
    import threading

    master, slave = os.openpty()
    seen: list[bytes] = []

    def read_terminal() -> None:  # drained as it runs, so the program never blocks on it
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the program and we closed the terminal's other side
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        os.write(master, answer.encode() + b"\n")  # waits in the terminal until it is read
        done = subprocess.run(
            [sys.executable, "-m", "iddetective", *args],
            stdin=slave,
            stderr=slave,
            stdout=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return TerminalRun(done.returncode, done.stdout, b"".join(seen).decode(errors="replace"))
