"""The fleet dashboard's API (/api/fleet) against a real Redis and a real worker process.

The module starts its own `redis-server` on a free port (never the machine's 6379) and an
`iddetective worker` subprocess on an empty catalogue; one photo and a file that is not one
are enough to show its counts. Without redis-server the tests skip, except under CI, where
they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from iddetective.access import ROLES
from iddetective.catalogue import Catalogue
from iddetective.web import ServerSettings, create_app
from iddetective.web.fleet_views import FleetMonitor, fleet_totals

from support.facesets import read_labels, require_set
from support.services import free_port, start_redis

pytestmark = [pytest.mark.faces, pytest.mark.services]


def needs_celery() -> None:
    pytest.importorskip("celery", reason="celery[redis] is not installed (server extra)")


ENDPOINTS = [
    ("GET", "/api/fleet", None),
    ("POST", "/api/fleet/pause", {}),
    ("POST", "/api/fleet/resume", {}),
    ("POST", "/api/fleet/resize", {"processes": 2}),
    ("POST", "/api/fleet/stop", {}),
]


# -- a Redis and a worker of our own --------------------------------------------------------


def stop_process(process: subprocess.Popen[bytes], *, group: bool = False) -> None:
    """SIGTERM (the whole process group for a worker), SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM) if group else process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL) if group else process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of this module's own Redis."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


def start_worker(broker: str, data: Path, name: str, log: Path) -> subprocess.Popen[bytes]:
    """`iddetective worker` (prefork, 1 process) on `data`, once it logged that it is ready."""
    command = [sys.executable, "-m", "iddetective", "worker", "--broker", broker]
    command += ["--data", str(data), "--name", name, "--pool", "prefork", "--concurrency", "1"]
    env = {k: v for k, v in os.environ.items() if k != "IDDETECTIVE_DB"}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while b" ready." not in log.read_bytes():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{name} not ready: {log.read_text()}"
        time.sleep(0.1)
    return process


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def new_data(folder: Path) -> tuple[Path, dict[str, str]]:
    """An empty catalogue with a key per role."""
    data = folder / "data"
    with Catalogue(data, create=True) as catalogue:
        keys = {role: catalogue.create_key(role, f"test {role}")[0] for role in ROLES}
    return data, keys


def smallest_photo() -> Path:
    """The smallest photo of the face_recognition set: quick for a worker to analyse."""
    rows = read_labels(require_set("face_recognition"))
    return Path(min((row.path for row in rows), key=os.path.getsize))


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


# -- without a broker: roles and configuration (fast, no Redis) -------------------------------


@pytest.fixture(scope="module")
def unconfigured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    data, keys = new_data(tmp_path_factory.mktemp("no-broker"))
    app = create_app(ServerSettings(data, analysis_workers=0, broker=None))
    with TestClient(app) as client:
        yield client, keys


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_only_admins_may_see_and_steer_the_fleet(
    unconfigured: tuple[TestClient, dict[str, str]], method: str, path: str, body: object
) -> None:
    client, keys = unconfigured
    for caller, status in [("search", 403), ("ingest", 403), (None, 401)]:
        key = keys[caller] if caller else None
        answer = client.request(method, path, headers=bearer(key), json=body)
        assert answer.status_code == status, (caller, answer.text)


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_without_a_broker_the_api_says_how_to_configure_one(
    unconfigured: tuple[TestClient, dict[str, str]], method: str, path: str, body: object
) -> None:
    client, keys = unconfigured
    answer = client.request(method, path, headers=bearer(keys["admin"]), json=body)
    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["code"] == "no_broker"
    assert "--broker redis://" in error["message"] and "IDDETECTIVE_BROKER" in error["message"]


def test_without_a_broker_the_page_says_how_to_configure_one(
    unconfigured: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = unconfigured
    page = client.get("/fleet", headers=bearer(keys["admin"]))
    assert page.status_code == 200
    assert 'id="no-broker"' in page.text and "iddetective serve --broker" in page.text
    assert "fleet.js" not in page.text  # nothing to poll
    assert client.get("/fleet", headers=bearer(keys["search"])).status_code == 403
    assert 'href="/fleet"' in page.text  # the admin's navigation links to it
    search_page = client.get("/", headers=bearer(keys["search"]))
    assert 'href="/fleet"' not in search_page.text


def test_a_broker_that_does_not_answer_is_503(tmp_path: Path) -> None:
    data, keys = new_data(tmp_path)
    broker = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with TestClient(create_app(ServerSettings(data, analysis_workers=0, broker=broker))) as client:
        answer = client.get("/api/fleet", headers=bearer(keys["admin"]))
        page = client.get("/fleet", headers=bearer(keys["admin"]))
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "broker_unavailable" and "does not answer" in error["message"]
    assert "hunter2" not in answer.text and "hunter2" not in page.text  # the password stays


def test_rates_come_from_the_photos_of_the_last_minute() -> None:
    needs_celery()
    from iddetective.ingest.fleet import WorkerStatus

    now = [1000.0]
    monitor = FleetMonitor(window=60, clock=lambda: now[0])

    def seen(done: int, pid: int = 7, alive: bool = True, failed: int = 0) -> dict[str, object]:
        worker = WorkerStatus(
            "w@h", "h", pid, "prefork", 2, alive, 0, 3, False, done, failed, 999.0
        )
        return monitor.observe([worker])[0]

    first = seen(10, failed=2)
    assert first["photos_per_second"] is None  # one sample: no rate yet
    assert (first["photos_done"], first["photos_failed"], first["last_batch_at"]) == (10, 2, 999)
    assert "tasks_done" not in first
    now[0] += 30
    assert seen(40)["photos_per_second"] == 1.0
    now[0] += 40  # the first sample is now 70 s old and left out
    assert seen(60)["photos_per_second"] == 0.5  # 20 photos in the 40 s since
    now[0] += 10
    assert seen(70, pid=8)["photos_per_second"] == 0.6  # restarted: its count goes on
    now[0] += 10
    assert seen(0)["photos_per_second"] is None  # Redis lost the counts: anew from 0
    silent = seen(0, alive=False)
    assert silent["photos_per_second"] is None and silent["last_seen"] is not None
    assert monitor.observe([]) == []


def test_totals_add_the_rates_of_the_live_workers_and_the_photos_of_all() -> None:
    def worker(alive: bool, done: int, failed: int, rate: float | None) -> dict[str, object]:
        counts = {"photos_done": done, "photos_failed": failed, "photos_per_second": rate}
        return {"alive": alive, "concurrency": 2 if alive else 0, "busy": 1, **counts}

    workers = [worker(True, 10, 1, 0.5), worker(True, 5, 0, None), worker(False, 7, 2, None)]
    assert fleet_totals(workers) == {
        "alive": 2,
        "concurrency": 4,
        "busy": 2,
        "photos_done": 22,
        "photos_failed": 3,
        "photos_per_second": 0.5,
    }
    assert fleet_totals([])["photos_per_second"] is None


# -- a real worker, steered through the API --------------------------------------------------


@pytest.mark.slow
def test_the_dashboard_api_watches_and_steers_a_real_worker(redis_url: str, tmp_path: Path) -> None:
    needs_celery()
    from iddetective.ingest import fleet as fleet_module

    data, keys = new_data(tmp_path)
    worker = start_worker(redis_url, data, "dash@test", tmp_path / "worker.log")
    admin = bearer(keys["admin"])
    settings = ServerSettings(data, analysis_workers=0, broker=redis_url)
    try:
        with TestClient(create_app(settings)) as client:

            def status() -> dict:
                answer = client.get("/api/fleet", headers=admin)
                assert answer.status_code == 200, answer.text
                return answer.json()

            def only_worker() -> dict:
                (shown,) = status()["workers"]
                return shown

            fleet = status()
            assert fleet["queue_depth"] == 0 and fleet["alive"] == 1
            size = fleet["catalogue"]
            assert [size[k] for k in ("people", "photos", "faces", "failed")] == [0, 0, 0, 0]
            assert size["data_bytes"] > 0  # the empty catalogue's own file
            (shown,) = fleet["workers"]
            assert (shown["name"], shown["pid"], shown["concurrency"]) == (
                "dash@test",
                worker.pid,
                1,
            )
            assert shown["alive"] and not shown["paused"] and shown["photos_done"] == 0
            assert shown["last_seen"] == pytest.approx(time.time(), abs=10)
            assert shown["last_batch_at"] is None
            assert only_worker()["photos_per_second"] == 0.0  # two samples, nothing done

            # A photo and a file that is no photo: both done, one of them failed.
            photos = tmp_path / "photos"
            photos.mkdir()
            shutil.copy(smallest_photo(), photos / "face.jpg")
            (photos / "broken.jpg").write_bytes(b"not a JPEG")
            with Catalogue(data) as catalogue:
                report = fleet_module.index_on_fleet(catalogue, [str(photos)], broker=redis_url)
            assert (report.indexed, len(report.failed)) == (1, 1)
            fleet = status()
            (shown,) = fleet["workers"]
            assert (shown["photos_done"], shown["photos_failed"]) == (2, 1)
            assert shown["photos_per_second"] > 0 and shown["last_batch_at"] is not None
            totals = [fleet[k] for k in ("photos_done", "photos_failed", "photos_per_second")]
            assert totals == [2, 1, shown["photos_per_second"]]

            paused = client.post("/api/fleet/pause", headers=admin, json={})
            assert paused.status_code == 200, paused.text
            (reply,) = paused.json()["replies"]
            assert reply["name"] == "dash@test" and reply["ok"], reply
            wait_for(lambda: only_worker()["paused"], 5, "the pause to show")

            resumed = client.post("/api/fleet/resume", headers=admin)  # no body: every worker
            assert [r["ok"] for r in resumed.json()["replies"]] == [True], resumed.text
            wait_for(lambda: not only_worker()["paused"], 5, "the resume to show")

            resized = client.post("/api/fleet/resize", headers=admin, json={"processes": 2})
            assert resized.json()["replies"] == [
                {"name": "dash@test", "ok": True, "message": "1 -> 2 processes"}
            ], resized.text
            wait_for(lambda: only_worker()["concurrency"] == 2, 20, "2 processes")
            assert status()["concurrency"] == 2
            nobody = client.post("/api/fleet/pause", headers=admin, json={"workers": ["x@y"]})
            assert nobody.json() == {"replies": []}

            stopped = client.post("/api/fleet/stop", headers=admin, json={})
            assert stopped.json()["replies"] == [
                {"name": "dash@test", "ok": True, "message": "stopping"}
            ]
            worker.wait(10)
            assert status()["workers"] == []
    finally:
        stop_process(worker, group=True)
