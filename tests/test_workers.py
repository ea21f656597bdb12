"""Ingestion workers (iddetective.ingest.fleet) against a real Redis and real worker processes.

Each test module run starts its own `redis-server` on a free port (never the machine's 6379)
and the tests start `iddetective worker` subprocesses on the face_recognition set. The
catalogue is SQLite: the workers and the enqueuing run share one data directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.faces.pipeline import PipelineSettings

from support.facesets import require_set, split_enrol_probe
from support.proc import GONE_WITHIN, descendants, kill_alone
from support.services import RedisServer, start_redis
from support.workers import Workers, labelled, small_photos, wait_for

celery = pytest.importorskip("celery", reason="celery[redis] is not installed (server extra)")

from iddetective.ingest import fleet  # noqa: E402  (needs celery)
from iddetective.ingest.fleet.tasks import CRASHED  # noqa: E402

pytestmark = [pytest.mark.faces, pytest.mark.services]


# -- a Redis of our own -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture()
def broker(redis_server: RedisServer) -> str:
    """The Redis URL, emptied for this test (a restart test may have replaced the server)."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    yield started
    started.stop_all()


def faces_by_photo(data: Path) -> dict[str, list[tuple[tuple[int, int, int, int], str | None]]]:
    """sha256 -> the photo's face boxes with their person's name, and the embeddings."""
    with Catalogue(data) as catalogue:
        ids = catalogue.store.face_ids(catalogue.model)
        faces = catalogue.store.faces(ids.tolist())
    found: dict[str, list[tuple[tuple[int, int, int, int], str | None]]] = {}
    for face in faces.values():
        box = (face.box.left, face.box.top, face.box.right, face.box.bottom)
        name = face.person.name if face.person else None
        found.setdefault(face.photo.sha256, []).append((box, name))
    return {sha: sorted(boxes, key=str) for sha, boxes in found.items()}


def embeddings_by_box(data: Path) -> dict[tuple[str, tuple[int, ...]], np.ndarray]:
    with Catalogue(data) as catalogue:
        ids, vectors = catalogue.store.embeddings_of(catalogue.store.face_ids(catalogue.model))
        faces = catalogue.store.faces(ids.tolist())
    return {
        (faces[i].photo.sha256, (faces[i].box.left, faces[i].box.top)): vector
        for i, vector in zip(ids.tolist(), vectors, strict=True)
    }


def assert_stored_once(data: Path, folder: Path) -> None:
    """Every photo of `folder` stored, each exactly once, with no failure."""
    paths = sorted(str(p) for p in folder.iterdir())
    with Catalogue(data) as catalogue:
        stats = catalogue.store.stats()
        records = [catalogue.store.file_record(path) for path in paths]
        assert not catalogue.store.failures()
    hashes = {record.sha256 for record in records if record is not None}
    assert all(record is not None and record.sha256 for record in records), records
    assert stats.photos == len(hashes) == len(paths)


def photo_counts(status: fleet.FleetStatus) -> tuple[int, int]:
    """The photos the workers counted as done, and as failed, all together."""
    done = sum(worker.photos_done for worker in status.workers)
    return done, sum(worker.photos_failed for worker in status.workers)


# -- the tests --------------------------------------------------------------------------------


def test_fleet_indexes_as_a_local_run_does(
    broker: str, workers: Workers, tmp_path: Path, built_catalogue: Callable[..., Path]
) -> None:
    rows = labelled()
    enrol, _ = split_enrol_probe([r for r in rows if r.person != "lin_manuel_miranda"])
    local = built_catalogue("face_recognition", enrol, [])  # as tests/test_search_accuracy.py
    data = tmp_path / "data"
    workers.start(broker, data, "one@test")
    workers.start(broker, data, "two@test")
    workers.wait_ready()
    labels = str(require_set("face_recognition") / "labels.csv")
    command = ["index", "--people", labels, "--data", str(data), "--broker", broker]
    done = CliRunner().invoke(main, [*command, "--batch", "3"])
    assert done.exit_code == 0, done.output
    assert f"indexed {len(rows)} photos" in done.output
    assert "0 failed" in done.output

    # Every photo once, and for the photos the local run indexed: the same faces and people.
    fleet_faces, local_faces = faces_by_photo(data), faces_by_photo(local)
    with Catalogue(data) as catalogue:
        assert catalogue.store.stats().photos == len({Path(r.path).read_bytes() for r in rows})
    assert local_faces and all(fleet_faces[sha] == faces for sha, faces in local_faces.items())
    fleet_vectors = embeddings_by_box(data)
    for key, vector in embeddings_by_box(local).items():
        np.testing.assert_allclose(fleet_vectors[key], vector, atol=1e-5)

    # Both workers took part, and counted every photo once (a batch still running after the
    # 3 s visibility timeout, on a busy machine, is done twice but counted once); running the
    # same command again sends nothing.
    status = fleet.fleet_status(broker)
    assert {w.name for w in status.workers if w.alive} == {"one@test", "two@test"}
    done_before = sum(w.tasks_done for w in status.workers)
    assert done_before >= -(-len(rows) // 3)
    assert photo_counts(status) == (len(rows), 0)
    again = CliRunner().invoke(main, command)
    assert again.exit_code == 0, again.output
    assert (
        f"indexed 0 photos (0 faces), 0 with no face, 0 failed, 0 already known at another "
        f"path, {len(rows)} unchanged" in again.output
    )
    after = fleet.fleet_status(broker)
    assert sum(w.tasks_done for w in after.workers) == done_before
    assert photo_counts(after) == (len(rows), 0)
    assert after.queue_depth == 0


@pytest.mark.slow
def test_a_batch_of_a_killed_worker_is_redone(
    broker: str, workers: Workers, tmp_path: Path
) -> None:
    photos, data = small_photos(tmp_path / "photos", 8), tmp_path / "data"
    doomed = workers.start(broker, data, "doomed@test")
    workers.wait_ready()
    with Catalogue(data, create=True) as catalogue:
        run = threading.Thread(
            target=fleet.index_on_fleet,
            args=(catalogue, [str(photos)]),
            kwargs={"broker": broker, "batch": 4},
        )
        run.start()
        wait_for(lambda: b"received" in workers.log("doomed@test").read_bytes(), 30, "a batch")
        time.sleep(0.3)  # in the middle of its first batch (about 0.3 s a photo)
        workers.kill(doomed)
        killed = time.monotonic()
        workers.start(broker, data, "survivor@test")
        run.join(60)
        assert not run.is_alive()
    # The killed batch came back after the visibility timeout, not the production one.
    assert time.monotonic() - killed < 30
    assert_stored_once(data, photos)
    assert photo_counts(fleet.fleet_status(broker)) == (8, 0)  # the redone batch counts once


@pytest.mark.slow
def test_a_photo_that_kills_its_process_is_recorded_as_failed(
    broker: str, workers: Workers, tmp_path: Path
) -> None:
    photos, data = small_photos(tmp_path / "photos", 2), tmp_path / "data"
    black = photos / "black.png"
    Image.new("RGB", (200, 200)).save(black)
    workers.start(broker, data, "prefork@test", pool="prefork")
    workers.wait_ready()
    pipeline = PipelineSettings(detector="support.crashing_detector:CrashingDetector")
    with Catalogue(data, create=True, pipeline=pipeline) as catalogue:
        report = fleet.index_on_fleet(catalogue, [str(photos)], broker=broker, batch=3)
        failures = catalogue.store.failures()
    assert [(r.path, r.reason) for r in report.failed] == [(str(black), CRASHED)]
    assert [(f.path, f.reason) for f in failures] == [(str(black), CRASHED)]
    assert report.indexed == 2
    (worker,) = fleet.fleet_status(broker).workers
    assert (worker.photos_done, worker.photos_failed) == (3, 1)


@pytest.mark.slow
def test_a_run_survives_a_redis_restart(
    broker: str, redis_server: RedisServer, workers: Workers, tmp_path: Path
) -> None:
    photos, data = small_photos(tmp_path / "photos", 6), tmp_path / "data"
    workers.start(broker, data, "one@test")
    workers.start(broker, data, "two@test")
    workers.wait_ready()
    seen: list[int] = []

    def progress(done: int, total: int, result: object) -> None:
        if not seen:
            redis_server.restart()  # queue, batches in flight and results are all lost
        seen.append(done)

    with Catalogue(data, create=True) as catalogue:
        report = fleet.index_on_fleet(
            catalogue, [str(photos)], broker=broker, batch=1, progress=progress
        )
    assert seen and not report.failed
    assert_stored_once(data, photos)


@pytest.mark.slow
def test_two_runs_of_one_folder_at_once_store_each_photo_once(
    broker: str, workers: Workers, tmp_path: Path
) -> None:
    photos, data = small_photos(tmp_path / "photos", 6), tmp_path / "data"
    workers.start(broker, data, "one@test")
    workers.start(broker, data, "two@test")
    workers.wait_ready()
    command = [sys.executable, "-m", "iddetective", "index", str(photos), "--data", str(data)]
    command += ["--broker", broker, "--batch", "2"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    runs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [run.communicate(timeout=90) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert_stored_once(data, photos)


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_burst_worker_drains_the_queue_then_exits(
    broker: str, workers: Workers, tmp_path: Path, pool: str
) -> None:
    """`worker --burst` (as rq's): the batches a run queued are done, then the worker exits
    0 by itself, and the run waiting for them ends as with any worker."""
    photos, data = small_photos(tmp_path / "photos", 6), tmp_path / "data"
    command = [sys.executable, "-m", "iddetective", "index", str(photos), "--data", str(data)]
    command += ["--broker", broker, "--batch", "2"]
    env = {key: value for key, value in os.environ.items() if key != "IDDETECTIVE_DB"}
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    app = fleet.fleet_app(broker)
    try:
        wait_for(lambda: fleet.control.queue_depth(app) == 3, 60, "the run's three batches")
        burst = workers.start(broker, data, "burst@test", pool=pool, burst=True)
        assert burst.wait(180) == 0, workers.log("burst@test").read_text()
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output.decode()
    assert b"0 failed" in output
    assert_stored_once(data, photos)
    assert fleet.control.queue_depth(app) == 0
    assert "burst@test" not in {w.name for w in fleet.fleet_status(broker).workers if w.alive}


def test_fleet_control(broker: str, workers: Workers, tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = workers.start(broker, data, "steered@test", pool="prefork")
    workers.wait_ready()
    status = fleet.fleet_status(broker)
    assert [(w.name, w.pid, w.pool, w.concurrency, w.alive, w.paused) for w in status.workers] == [
        ("steered@test", process.pid, "prefork", 1, True, False)
    ]
    cli = CliRunner()
    paused = cli.invoke(main, ["fleet", "pause", "--broker", broker])
    assert paused.exit_code == 0 and "steered@test" in paused.output, paused.output
    wait_for(lambda: fleet.fleet_status(broker).workers[0].paused, 5, "the pause")

    # A batch sent while paused waits in the queue; resumed, the worker takes it.
    photos = small_photos(tmp_path / "photos", 1)
    with Catalogue(data, create=True) as catalogue:
        run = threading.Thread(
            target=fleet.index_on_fleet, args=(catalogue, [str(photos)]), kwargs={"broker": broker}
        )
        run.start()
        wait_for(lambda: fleet.fleet_status(broker).queue_depth == 1, 10, "a queued batch")
        assert cli.invoke(main, ["fleet", "resume", "--broker", broker]).exit_code == 0
        run.join(30)
        assert not run.is_alive()
    (worker,) = fleet.fleet_status(broker).workers
    assert (worker.tasks_done, worker.photos_done, worker.photos_failed) == (1, 1, 0)
    assert worker.last_batch_at == pytest.approx(time.time(), abs=30)

    resized = cli.invoke(main, ["fleet", "resize", "2", "--broker", broker])
    assert resized.exit_code == 0 and "1 -> 2 processes" in resized.output, resized.output
    wait_for(lambda: fleet.fleet_status(broker).workers[0].concurrency == 2, 20, "2 processes")
    shown = cli.invoke(main, ["fleet", "status", "--broker", broker, "--json"])
    (listed,) = json.loads(shown.output)["workers"]
    assert (listed["concurrency"], listed["photos_done"], listed["photos_failed"]) == (2, 1, 0)
    shown = cli.invoke(main, ["fleet", "status", "--broker", broker])
    assert shown.exit_code == 0 and "queue: 0 batches waiting" in shown.output

    stopped = cli.invoke(main, ["fleet", "stop", "--broker", broker])
    assert stopped.exit_code == 0 and "steered@test: stopping" in stopped.output
    process.wait(30)
    assert fleet.fleet_status(broker).workers == ()


def test_sigkill_of_a_prefork_worker_ends_its_pool_processes(
    broker: str, workers: Workers, tmp_path: Path
) -> None:
    process = workers.start(
        broker, tmp_path / "data", "prefork@test", pool="prefork", concurrency=2
    )
    workers.wait_ready()
    assert len(descendants(process.pid)) >= 2
    left = kill_alone(process)
    assert not left, f"still running {GONE_WITHIN} s after the worker was killed: {left}"
