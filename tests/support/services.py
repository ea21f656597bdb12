"""Services the tests (and bench/workers.py) start for themselves: free ports, a Redis.

Each is started on its own port, never the machine's, so tests may kill and restart it.
PostgreSQL is started by tests/conftest.py (`postgres_server`, `new_postgres`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.needs import require

__all__ = ["RedisServer", "free_port", "missing", "start_redis"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def missing(reason: str) -> None:
    """A service the tests need is not there: fail under CI, skip with the reason elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class RedisServer:
    """A `redis-server` keeping nothing on disk, on its own port, restartable."""

    binary: str
    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        with open(self.folder / "redis.log", "ab") as log:  # the server keeps its own copy
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start: {self.folder / 'redis.log'}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        """Kill and start again: everything in it is lost, as in a crash of the machine."""
        self.stop()
        self.start()

    def flush(self) -> None:
        import redis

        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()


def start_redis(folder: Path) -> RedisServer:
    """A started `redis-server` of our own keeping its log in `folder`; without the program
    the test fails under CI and is skipped elsewhere."""
    require("services")
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed (Debian: apt-get install redis-server)")
        raise AssertionError("unreachable")
    folder.mkdir(parents=True, exist_ok=True)
    server = RedisServer(binary, folder, free_port())
    server.start()
    return server
