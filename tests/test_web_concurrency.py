"""The web server holds no global lock: while another process holds the catalogue's write
lock, searches by photo, finds and /api/stats still answer at once, over real HTTP.

The outside writer is a real process that opens the SQLite file, runs BEGIN IMMEDIATE and
sleeps; the searches are audited once it lets go (their entries wait, they are not lost).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from iddetective.catalogue import CATALOG_FILE
from iddetective.web import ServerSettings, create_app

from support.facesets import WebCatalogue, copy_data
from support.live_server import serving

pytestmark = pytest.mark.faces

HOLD_SECONDS = 10
ANSWER_SECONDS = 1.0

_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


@pytest.fixture()
def served(web_catalogue: WebCatalogue, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    app = create_app(ServerSettings(data, analysis_workers=0, broker=None))
    with serving(app) as url:
        yield url, data


def hold_the_catalogue(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the catalogue's write lock for `seconds`."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_reads_answer_within_a_second_while_another_process_holds_the_write_lock(
    served: tuple[str, Path], web_catalogue: WebCatalogue
) -> None:
    url, data = served
    key = {"Authorization": f"Bearer {web_catalogue.keys['search']}"}
    admin = {"Authorization": f"Bearer {web_catalogue.keys['admin']}"}
    probe = Path(web_catalogue.probes[0].path)

    def search(client: httpx.Client) -> httpx.Response:
        files = {"photo": (probe.name, probe.read_bytes(), "image/jpeg")}
        return client.post(f"{url}/api/search", headers=key, files=files)

    requests = {
        "search by photo": search,
        "find": lambda client: client.get(f"{url}/api/find?q=ob", headers=key),
        "stats": lambda client: client.get(f"{url}/api/stats", headers=key),
    }
    with httpx.Client(timeout=HOLD_SECONDS * 3) as client:
        for request in requests.values():  # models loaded, index built, connections open
            assert request(client).status_code == 200
        before = len(client.get(f"{url}/api/audit?limit=1000", headers=admin).json()["items"])
        holder = hold_the_catalogue(data / CATALOG_FILE, HOLD_SECONDS)
        try:
            took = {}
            for name, request in requests.items():
                start = time.monotonic()
                answer = request(client)
                took[name] = time.monotonic() - start
                assert answer.status_code == 200, (name, answer.text)
            assert holder.poll() is None, "the outside writer let go before the requests ended"
        finally:
            holder.wait(timeout=HOLD_SECONDS * 2)
            assert holder.stdout is not None
            holder.stdout.close()
        assert all(seconds < ANSWER_SECONDS for seconds in took.values()), took
        # Once the lock is free, the searches made meanwhile are in the audit log.
        entries = client.get(f"{url}/api/audit?limit=1000", headers=admin).json()["items"]
        kinds = [e["kind"] for e in entries[: len(entries) - before]]
        assert kinds.count("photo") == 1 and kinds.count("text") == 1, kinds
