"""Request bodies against a real server and raw sockets: nothing is read before the caller is
known and the declared size is checked, and a streamed body is cut off at the limit."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from iddetective.catalogue import Catalogue
from iddetective.web import ServerSettings, create_app

from support.live_server import serving

LIMIT = 4 * 1024 * 1024
#: What a request body may exceed the upload limit by: the multipart envelope, other fields.
ENVELOPE = 64 * 1024
BOUNDARY = "x-boundary-x"


@dataclass(frozen=True)
class Site:
    host: str
    port: int
    key: str
    spool: Path  # where the server's temporary files go


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("bodies")
    with Catalogue(base / "data", create=True) as catalogue:
        key, _ = catalogue.create_key("ingest")
    spool = base / "spool"
    spool.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(spool)  # the server spools multipart uploads here
    app = create_app(
        ServerSettings(base / "data", analysis_workers=0, max_upload_bytes=LIMIT, broker=None)
    )
    try:
        with serving(app) as url:
            parts = urlsplit(url)
            assert parts.hostname and parts.port
            yield Site(parts.hostname, parts.port, key, spool)
    finally:
        tempfile.tempdir = saved


class SpoolWatch:
    """The largest total size of the temporary files under `folder` this process held open
    (unlinked ones included: Python's temporary files have no name), sampled every 5 ms."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> SpoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._held())

    def _held(self) -> int:
        total = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith(self.folder):
                    total += os.stat(f"/proc/self/fd/{fd}").st_size
            except OSError:
                continue
        return total


def connect(site: Site) -> socket.socket:
    sock = socket.create_connection((site.host, site.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    return sock


def head(site: Site, headers: dict[str, str], path: str = "/api/photos") -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {site.host}:{site.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket, seconds: float = 10) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the response on `sock`."""
    sock.settimeout(seconds)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer: {data!r}"
        data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in header.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(header.split()[1]), json.loads(body[:length])


def multipart_start() -> bytes:
    """The multipart envelope up to the first byte of the photo."""
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="photo"; '
        'filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()


GIGABYTE = str(1024**3)


def test_no_key_is_401_before_the_body_is_read(site: Site) -> None:
    with connect(site) as sock, SpoolWatch(site.spool) as spool:
        sock.sendall(
            head(
                site,
                {
                    "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                    "Content-Length": GIGABYTE,
                },
            )
            + multipart_start()
        )
        started = time.monotonic()
        status, body = read_answer(sock)
        assert status == 401 and time.monotonic() - started < 5
        assert body["error"]["code"] == "unauthorized"
    assert spool.peak == 0


def test_a_declared_size_over_the_limit_is_413_at_once(site: Site) -> None:
    with connect(site) as sock, SpoolWatch(site.spool) as spool:
        sock.sendall(
            head(
                site,
                {
                    "Authorization": f"Bearer {site.key}",
                    "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                    "Content-Length": GIGABYTE,
                },
            )
            + multipart_start()
        )
        status, body = read_answer(sock)
    assert status == 413 and spool.peak == 0
    error = body["error"]
    assert error == {
        "code": "too_large",
        "message": f"the request body declares {int(GIGABYTE):,} bytes, over this server's "
        f"limit of {LIMIT + ENVELOPE:,} bytes (uploads may be {LIMIT:,} bytes)",
    }


def test_a_streamed_body_is_cut_off_at_the_limit(site: Site) -> None:
    chunk = b"\xff" * 65536
    sent = 0
    with connect(site) as sock, SpoolWatch(site.spool) as spool:
        sock.sendall(
            head(
                site,
                {
                    "Authorization": f"Bearer {site.key}",
                    "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                    "Transfer-Encoding": "chunked",
                },
            )
        )
        sock.settimeout(10)
        first = multipart_start()
        sock.sendall(f"{len(first):x}\r\n".encode() + first + b"\r\n")
        try:
            while sent < 32 * LIMIT:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server answered and stopped reading
        status, body = read_answer(sock)
    assert status == 413, body
    assert body["error"] == {
        "code": "too_large",
        "message": f"the request body is over this server's limit of {LIMIT + ENVELOPE:,} "
        f"bytes (uploads may be {LIMIT:,} bytes)",
    }
    assert sent < 32 * LIMIT, "the server read the whole body"
    assert spool.peak <= LIMIT + ENVELOPE


def test_an_upload_within_the_limit_is_spooled_and_reaches_the_photo_checks(
    site: Site,
) -> None:
    data = b"GIF89a not really a gif" + bytes(3 * 1024 * 1024)
    body = multipart_start() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    with connect(site) as sock, SpoolWatch(site.spool) as spool:
        sock.sendall(
            head(
                site,
                {
                    "Authorization": f"Bearer {site.key}",
                    "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                    "Content-Length": str(len(body)),
                },
            )
        )
        for start in range(0, len(body), 65536):  # slowly, so the spool is seen growing
            sock.sendall(body[start : start + 65536])
            time.sleep(0.005)
        status, answer = read_answer(sock)
    assert status == 422 and answer["error"]["code"] == "bad_image"
    # The watch sees the spool (the other tests' zero is a measurement, not a blind spot).
    assert 2 * 1024 * 1024 < spool.peak <= LIMIT + ENVELOPE


def test_the_login_form_takes_no_large_body(site: Site) -> None:
    with connect(site) as sock:
        sock.sendall(
            head(
                site,
                {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Content-Length": GIGABYTE,
                },
                path="/login",
            )
        )
        status, body = read_answer(sock)
    assert status == 413 and "65,536" in body["error"]["message"]
