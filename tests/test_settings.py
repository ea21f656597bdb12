"""Settings are built at the edges and passed down: no library module reads the environment."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

import iddetective
from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.settings import ENVIRONMENT, Settings
from iddetective.web import ServerSettings, create_app, first_admin_key

PACKAGE = Path(iddetective.__file__).parent
DOCS = PACKAGE.parent.parent / "docs"
#: The edge: the package that builds settings from options and the environment.
EDGE = "cli"
ENVIRONMENT_READ = re.compile(r"\bos\.(environ|getenv|putenv|unsetenv)\b|\bgetenv\(")


def test_no_library_module_reads_or_writes_the_environment() -> None:
    readers = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != EDGE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ENVIRONMENT_READ.search(line)
    ]
    assert not readers, "library modules touch the environment:\n" + "\n".join(readers)


def test_every_variable_is_in_the_one_table_of_the_contracts() -> None:
    contracts = (DOCS / "contracts.md").read_text()
    table = contracts.split("## Settings and environment variables", 1)[1].split("\n## ", 1)[0]
    for variable in ENVIRONMENT:
        assert f"`{variable}`" in table, f"{variable} is not in the settings table"
    cli_text = "".join(path.read_text() for path in (PACKAGE / EDGE).glob("*.py"))
    mentioned = set(re.findall(r"IDDETECTIVE_[A-Z_]+", cli_text))
    assert mentioned <= set(ENVIRONMENT), f"undocumented: {mentioned - set(ENVIRONMENT)}"


def test_options_win_over_variables_which_win_over_defaults(tmp_path: Path) -> None:
    environ = {
        "IDDETECTIVE_DATA": str(tmp_path / "env-data"),
        "IDDETECTIVE_DB": "postgresql://env/db",
        "IDDETECTIVE_BROKER": "redis://env:6379/0",
        "IDDETECTIVE_VECTOR_INDEX": "exact",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    settings = Settings.from_environment(environ)
    assert settings.data_dir == tmp_path / "env-data"
    assert (settings.db, settings.broker) == ("postgresql://env/db", "redis://env:6379/0")
    assert settings.vector_index == "exact"
    assert settings.hosts_file == tmp_path / "config" / "iddetective" / "hosts.toml"
    assert settings.eval_cache == tmp_path / "cache" / "iddetective" / "eval"
    assert settings.pipeline.model_cache == tmp_path / "cache" / "iddetective" / "models"
    models = Settings.from_environment({**environ, "IDDETECTIVE_MODEL_CACHE": str(tmp_path / "m")})
    assert models.pipeline.model_cache == tmp_path / "m"
    chosen = Settings.from_environment(
        environ, data_dir=tmp_path / "opt", db="postgresql://opt/db", broker="redis://opt:1/0"
    )
    assert (chosen.data_dir, chosen.db, chosen.broker) == (
        tmp_path / "opt",
        "postgresql://opt/db",
        "redis://opt:1/0",
    )
    bare = Settings.from_environment({"IDDETECTIVE_DB": ""})
    assert bare.db is None and bare.data_dir == Path.home() / ".local/share/iddetective"
    assert bare.pipeline.model_cache == Path.home() / ".cache/iddetective/models"


def test_db_reaches_the_catalogue_without_touching_the_environment(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--db` used to be written into os.environ for Catalogue to read back (and so leaked
    into every later catalogue of the process)."""
    monkeypatch.delenv("IDDETECTIVE_DB", raising=False)
    result = CliRunner().invoke(
        main, ["keys", "create", "--role", "admin", "--data", str(tmp_path), "--db", postgres_url]
    )
    assert result.exit_code == 0, result.output
    assert "IDDETECTIVE_DB" not in os.environ
    with Catalogue(tmp_path, db=postgres_url) as catalogue:
        assert [key.role for key in catalogue.api_keys()] == ["admin"]
    assert not (tmp_path / "catalog.sqlite").exists()


def test_the_environment_reaches_the_catalogue_through_the_cli(
    postgres_url: str, tmp_path: Path
) -> None:
    environ = {"IDDETECTIVE_DB": postgres_url, "IDDETECTIVE_DATA": str(tmp_path)}
    result = CliRunner().invoke(main, ["keys", "create", "--role", "search"], env=environ)
    assert result.exit_code == 0, result.output
    with Catalogue(tmp_path, db=postgres_url) as catalogue:
        assert [key.role for key in catalogue.api_keys()] == ["search"]


def test_the_server_serves_a_postgresql_catalogue_named_in_its_settings(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDDETECTIVE_DB", raising=False)
    settings = ServerSettings(tmp_path, analysis_workers=0, db=postgres_url)
    key = first_admin_key(tmp_path, "127.0.0.1", db=postgres_url)
    assert key is not None
    with TestClient(create_app(settings)) as client:
        stats = client.get("/api/stats", headers={"Authorization": f"Bearer {key}"})
    assert stats.status_code == 200, stats.text
    assert not (tmp_path / "catalog.sqlite").exists()
    with Catalogue(tmp_path, db=postgres_url) as catalogue:
        assert len(catalogue.api_keys()) == 1
