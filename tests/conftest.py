"""Shared fixtures: the labelled face sets, and catalogues built from them once per run."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iddetective.access import ROLES
from iddetective.catalogue import Catalogue
from iddetective.faces import pipeline
from iddetective.settings import MODEL_CACHE_ENV

from support.facesets import (
    ABSENT_SETS,
    Labelled,
    WebCatalogue,
    copy_data,
    read_labels,
    require_set,
    split_enrol_probe,
    write_manifest,
)
from support.needs import NEEDS, current_test
from support.postgres import EmbeddedPostgres, new_postgres, start_postgres

#: Fixtures that start a service: a test using them needs `services`.
SERVICE_FIXTURES = frozenset({"postgres_server", "postgres_url"})


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
    for folder in sorted(ABSENT_SETS):
        terminalreporter.write_line(
            f"WARNING: the labelled face set {folder} is absent: the tests that need it were "
            "skipped (set IDDETECTIVE_FACES; under CI=true they fail instead)",
            red=True,
            bold=True,
        )


def pytest_configure(config: pytest.Config) -> None:
    for need, meaning in NEEDS.items():
        config.addinivalue_line("markers", f"{need}: {meaning}")


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The checked ONNX graph of dlib's ResNet is kept for the session in a temporary folder,
    never in the user's cache (which CI may not let us write): the library's default
    (`PipelineSettings.model_cache`) and the edges' variable (the CLI, workers and servers
    the tests start) both name it. Built once, by the first test that embeds a face."""
    folder = tmp_path_factory.mktemp("model-cache")

    def session_model_cache() -> Path:
        """This test session's model cache, instead of the user's."""
        return folder

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "user_model_cache", session_model_cache)
        patch.setenv(MODEL_CACHE_ENV, str(folder))
        yield folder


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


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> EmbeddedPostgres:
    """PostgreSQL 18 with pgvector and pg_trgm for this session, stopped at its end.

    Under CI a server that does not start fails the tests; elsewhere they skip with the
    reason.
    """
    server = None
    try:
        server = new_postgres()
        start_postgres(server)
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
