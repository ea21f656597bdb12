"""The PostgreSQL store across restarts of its server: real servers, real connections.

This module starts a PostgreSQL of its own (the session's serves the other tests, and is not
to be restarted under them) and restarts it, stops it, or ends a store's session from the
server side (`pg_terminate_backend`, what a restart does to every session) while the store
is in the middle of a statement. The fleet test runs `iddetective index --broker` and two
`iddetective worker` processes on a Redis of its own, and restarts PostgreSQL mid-run.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from iddetective.entities import Box, FaceAnalysis, FileStat, IndexedPhoto, PhotoAnalysis
from iddetective.errors import StoreError
from iddetective.store import postgres_sql
from iddetective.store.postgres import PostgresStore
from iddetective.vector_index.pgvector import PgvectorIndex

from support.postgres import EmbeddedPostgres, new_postgres, start_postgres
from support.services import start_redis
from support.workers import VISIBILITY, Workers, small_photos, wait_for

pytestmark = [pytest.mark.faces, pytest.mark.services]

# -- a PostgreSQL of our own, and what we do to it ---------------------------------------------


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> EmbeddedPostgres:
    """A PostgreSQL for this module's restarts, stopped at its end."""
    started = new_postgres()
    request.addfinalizer(started.stop)
    try:
        start_postgres(started)
    except Exception as error:
        reason = f"cannot start PostgreSQL: {error}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return started


def options(server: EmbeddedPostgres) -> str:
    """The options the server runs with (port, socket directory, settings), as pg_ctl
    recorded them at its start: given again, it comes back where its clients look for it."""
    recorded = (server.folder / "data" / "postmaster.opts").read_text()
    return shlex.join(shlex.split(recorded)[1:])  # without the path of the program


def pg_ctl(server: EmbeddedPostgres, action: str, *args: str) -> None:
    # Without -l the server's output is pg_ctl's, and pg_ctl waits for it to end.
    data, log = str(server.folder / "data"), str(server.folder / "log")
    server.run("pg_ctl", action, "-D", data, "-l", log, "-w", "-t", "60", *args)


def restart(server: EmbeddedPostgres) -> None:
    """Restart the server: every session ends ("terminating connection due to administrator
    command") and clients must connect again."""
    pg_ctl(server, "restart", "-m", "fast", "-o", options(server))


@pytest.fixture()
def url(server: EmbeddedPostgres) -> str:
    """A new database of the server, its URL with a password (which the server ignores, and
    no message may show)."""
    return server.url(server.new_database()).replace("postgres@", "postgres:secret@")


@pytest.fixture()
def store(url: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(url)
    yield opened
    opened.close()


@pytest.fixture()
def admin(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the test's own to the store's database."""
    with psycopg.connect(url, autocommit=True) as db:
        yield db


def photo(name: str, faces: int = 1) -> IndexedPhoto:
    """A photo at /photos/`name` holding `faces` faces with made-up embeddings."""
    rng = np.random.default_rng(len(name))
    analysed = tuple(
        FaceAnalysis(Box(10 + 100 * i, 10, 90 + 100 * i, 90), 1.0, ((0, 0),) * 5, unit(rng))
        for i in range(faces)
    )
    sha = hashlib.sha256(name.encode()).hexdigest()
    return IndexedPhoto(
        FileStat(f"/photos/{name}", 100, 1), sha, PhotoAnalysis(400, 100, analysed, "m")
    )


def unit(rng: np.random.Generator) -> np.ndarray:
    vector = rng.normal(size=128).astype(np.float32)
    return vector / np.linalg.norm(vector)


def lock_waiter(url: str, other_than: int = 0) -> int:
    """The process id of the session (not `other_than`) that waits for a lock in `url`'s
    database (looked for from a connection of its own: a transaction sees one snapshot of
    pg_stat_activity)."""
    found: list[int] = []
    with psycopg.connect(url, autocommit=True) as db:

        def waiting() -> bool:
            rows = db.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> %s",
                (other_than,),
            ).fetchall()
            found[:] = [row[0] for row in rows]
            return bool(found)

        wait_for(waiting, 10, "a session waiting for a lock")
    return found[0]


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run `work` in a thread; the list gets its result, or the exception it raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


# -- one store ----------------------------------------------------------------------------------


def test_a_store_reads_and_writes_on_after_a_restart(
    server: EmbeddedPostgres, store: PostgresStore, url: str
) -> None:
    store.save([photo("one.jpg", faces=2)])
    epoch, ids = store.faces_epoch(), store.face_ids("m")
    _, vectors = store.embeddings_of(ids)
    reader = PostgresStore(url, readonly=True)
    index = PgvectorIndex.of_catalogue(url, "m", 128, exact_max=0)  # searches with HNSW
    try:
        assert index.search(vectors, 1)[0].ids.tolist() == [ids[0]]
        restart(server)
        # Reads connect again, set up as before: vectors still arrive as float32 arrays.
        assert store.faces_epoch() == epoch
        assert store.stats().photos == 1
        again_ids, again = store.embeddings_of(ids)
        assert again_ids.tolist() == ids.tolist() and again.dtype == np.float32
        np.testing.assert_array_equal(again, vectors)
        assert reader.stats().photos == 1
        assert reader.sql.value("SHOW default_transaction_read_only") == "on"
        assert [n.ids[0] for n in index.search(vectors, 1)] == ids.tolist()  # search, too

        # A write whose connection is gone before it begins connects again, then writes.
        restart(server)
        assert [r.status for r in store.save([photo("two.jpg")])] == ["indexed"]
        assert store.faces_epoch() == epoch + 1
        assert reader.stats().photos == 2  # a reader idle across the restart, too
    finally:
        index.close()
        reader.close()


def test_a_save_that_loses_its_connection_midway_runs_again(
    store: PostgresStore, admin: psycopg.Connection[Any], url: str
) -> None:
    two = photo("two.jpg")
    with admin.transaction():  # the photo's lock, taken inside the save's transaction
        admin.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
            (postgres_sql.PHOTO_LOCK_CLASS, two.sha256),
        )
        thread, outcome = in_thread(lambda: store.save([two]))
        first = lock_waiter(url)
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        lock_waiter(url, other_than=first)  # the save again, on a new connection
    thread.join(10)
    results = outcome[0]
    assert isinstance(results, list) and [r.status for r in results] == ["indexed"]
    assert store.stats().photos == 1 and store.stats().faces == 1


def test_a_write_that_loses_its_connection_midway_says_it_was_not_made(
    store: PostgresStore, admin: psycopg.Connection[Any], url: str
) -> None:
    store.save([photo("one.jpg")])
    with admin.transaction():
        admin.execute("SELECT 1 FROM photo FOR UPDATE")  # remove_photo's DELETE waits
        thread, outcome = in_thread(lambda: store.remove_photo("/photos/one.jpg"))
        admin.execute("SELECT pg_terminate_backend(%s)", (lock_waiter(url),))
        thread.join(10)
    error = outcome[0]
    assert isinstance(error, StoreError)
    assert "lost the connection to postgresql://postgres:***@" in str(error)
    assert "the change was not made" in str(error) and "secret" not in str(error)
    assert store.stats().photos == 1  # not removed, and the store works on
    assert store.remove_photo("/photos/one.jpg").sha256 == photo("one.jpg").sha256
    assert store.stats().photos == 0


def test_a_store_waits_for_its_server_for_a_bounded_time(
    server: EmbeddedPostgres, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = options(server)
    try:
        # Down for a second: the next read waits for the server to come back.
        def start_a_second_later() -> None:
            time.sleep(1)
            pg_ctl(server, "start", "-o", recorded)

        pg_ctl(server, "stop", "-m", "fast")
        thread, started = in_thread(start_a_second_later)
        assert store.stats().photos == 0
        thread.join(30)
        assert started == [None]

        # Down for longer than RECONNECT_SECONDS: the read gives up, naming the URL.
        monkeypatch.setattr(postgres_sql, "RECONNECT_SECONDS", 1.0)
        pg_ctl(server, "stop", "-m", "fast")
        waiting = time.monotonic()
        with pytest.raises(StoreError, match=r"cannot reach postgresql://postgres:\*\*\*@") as e:
            store.stats()
        assert time.monotonic() - waiting < 5
        assert "secret" not in str(e.value)
    finally:
        if not (server.folder / "data" / "postmaster.pid").exists():
            pg_ctl(server, "start", "-o", recorded)
    assert store.stats().photos == 0  # back: the next call connects


# -- a fleet run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this module's own."""
    redis = start_redis(tmp_path_factory.mktemp("redis"))
    yield redis.url
    redis.stop()


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    yield started
    started.stop_all()


def start_worker(workers: Workers, broker: str, url: str, name: str) -> None:
    """An `iddetective worker` storing into the PostgreSQL catalogue at `url`."""
    command = [sys.executable, "-m", "iddetective", "worker", "--broker", broker, "--db", url]
    command += ["--data", str(workers.folder / name), "--name", name, "--pool", "solo"]
    command += ["--visibility-timeout", str(VISIBILITY)]
    env = {key: value for key, value in os.environ.items() if key != "IDDETECTIVE_DB"}
    with open(workers.log(name), "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    workers.started.append((name, process))


@pytest.mark.slow
def test_restart_postgresql_during_a_run_the_run_completes(
    server: EmbeddedPostgres, url: str, broker: str, workers: Workers, tmp_path: Path
) -> None:
    photos = small_photos(tmp_path / "photos", 16)
    start_worker(workers, broker, url, "one@test")
    start_worker(workers, broker, url, "two@test")
    workers.wait_ready()
    command = [sys.executable, "-m", "iddetective", "index", str(photos), "--db", url]
    command += ["--data", str(tmp_path / "data"), "--broker", broker, "--batch", "2"]
    env = {key: value for key, value in os.environ.items() if key != "IDDETECTIVE_DB"}
    with open(tmp_path / "index.log", "wb") as log:  # a file: nobody reads a pipe meanwhile
        run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    with psycopg.connect(url, autocommit=True) as admin:
        wait_for(
            lambda: bool(admin.execute("SELECT 1 FROM photo LIMIT 1").fetchall()), 60, "a photo"
        )
    assert run.poll() is None, "the run ended before the restart"
    restart(server)
    run.wait(90)
    output = (tmp_path / "index.log").read_text()
    assert run.returncode == 0, output
    assert "0 failed" in output, output

    # Every photo stored, each once, with its faces once.
    paths = sorted(str(path) for path in photos.iterdir())
    store = PostgresStore(url, readonly=True)
    records = [store.file_record(path) for path in paths]
    stats, failures = store.stats(), store.failures()
    counted = store.sql.value("SELECT sum(face_count) FROM photo")
    store.close()
    assert not failures
    assert all(record is not None and record.sha256 for record in records), records
    hashes = {record.sha256 for record in records if record is not None}
    assert stats.photos == len(hashes) == len({path.read_bytes() for path in photos.iterdir()})
    assert stats.faces == counted > 0
