"""A real HTTP server for tests: uvicorn serving an app in a thread of the test process.

Real sockets, real HTTP parsing and streaming (what TestClient's in-memory transport skips),
with the app's objects at hand for assertions. Stopped when the `with` block ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from support.services import free_port

__all__ = ["serving"]

STARTUP_SECONDS = 120.0  # a pool of analysis processes loads dlib's models before it serves


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` on a free port of 127.0.0.1; yields its base URL once it accepts."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
