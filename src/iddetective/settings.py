"""The settings of one run: built once at an edge (the CLI, `serve`, `worker`), passed down.

Library code never reads the environment: an edge builds `Settings` from its options and
the `IDDETECTIVE_*` variables (`Settings.from_environment`, given the mapping to read) and
hands the values to what it opens. Every variable is in `ENVIRONMENT` and in the one table
of docs/contracts.md ("Settings and environment variables").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .faces.pipeline import PipelineSettings

__all__ = [
    "BROKER_ENV",
    "DATA_ENV",
    "DB_ENV",
    "EMBEDDER_ENV",
    "ENVIRONMENT",
    "HOSTS_ENV",
    "MODEL_CACHE_ENV",
    "VECTOR_INDEX_ENV",
    "Settings",
    "default_cache_dir",
    "default_data_dir",
    "default_hosts_file",
    "default_model_cache",
]

#: The data directory (what --data defaults to).
DATA_ENV = "IDDETECTIVE_DATA"
#: A PostgreSQL catalogue (what --db defaults to).
DB_ENV = "IDDETECTIVE_DB"
#: The ingestion workers' Redis (what --broker defaults to).
BROKER_ENV = "IDDETECTIVE_BROKER"
#: The vector index by registry name (`ivf`, `exact`, `pgvector`).
VECTOR_INDEX_ENV = "IDDETECTIVE_VECTOR_INDEX"
#: The hosts file of `fleet up/down` and the /fleet page (what --hosts defaults to).
HOSTS_ENV = "IDDETECTIVE_HOSTS"
#: The embedder (`pipeline.embedder`): a registry name, or `card:NAME`, a model card of the
#: catalogue (`iddetective models add`).
EMBEDDER_ENV = "IDDETECTIVE_EMBEDDER"
#: Where the checked ONNX graph of dlib's ResNet is kept (`pipeline.model_cache`).
MODEL_CACHE_ENV = "IDDETECTIVE_MODEL_CACHE"

#: Every variable an edge reads, and the setting it gives (docs/contracts.md has the table).
ENVIRONMENT: dict[str, str] = {
    DATA_ENV: "data_dir",
    DB_ENV: "db",
    BROKER_ENV: "broker",
    VECTOR_INDEX_ENV: "vector_index",
    HOSTS_ENV: "hosts_file",
    MODEL_CACHE_ENV: "pipeline.model_cache",
    EMBEDDER_ENV: "pipeline.embedder",
    "XDG_DATA_HOME": "data_dir (when IDDETECTIVE_DATA is not set)",
    "XDG_CONFIG_HOME": "hosts_file (when IDDETECTIVE_HOSTS is not set)",
    "XDG_CACHE_HOME": "eval_cache, pipeline.model_cache (when IDDETECTIVE_MODEL_CACHE is unset)",
}


@dataclass(frozen=True)
class Settings:
    """Where the catalogue, its index, the workers and the caches are, and how photos are
    analysed: what the options and variables of one run chose."""

    data_dir: Path
    #: A PostgreSQL URL when the catalogue lives there; None: SQLite in the data directory.
    db: str | None = None
    #: The ingestion workers' Redis (redis://host:port/db), or None.
    broker: str | None = None
    #: The vector index by registry name; None: `pgvector` on PostgreSQL, else `ivf`.
    vector_index: str | None = None
    #: The hosts file naming the machines `fleet up/down` reach over SSH.
    hosts_file: Path = field(default_factory=lambda: default_hosts_file({}))
    #: The folder of `eval`'s embeddings cache.
    eval_cache: Path = field(default_factory=lambda: default_cache_dir({}))
    #: How photos are analysed, and where checked models are kept (`pipeline.model_cache`,
    #: which reaches every process that analyses: pool workers, the server's, the fleet's).
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        *,
        data_dir: Path | None = None,
        db: str | None = None,
        broker: str | None = None,
        hosts_file: Path | None = None,
        pipeline: PipelineSettings | None = None,
    ) -> Settings:
        """The settings an edge runs with: each option given wins over its variable in
        `environ`, which wins over the default (an empty variable counts as unset). The
        pipeline's `model_cache` always comes from `environ` (there is no option for it)."""
        pipeline = replace(pipeline or PipelineSettings(), model_cache=default_model_cache(environ))
        if environ.get(EMBEDDER_ENV):
            pipeline = replace(pipeline, embedder=environ[EMBEDDER_ENV])
        return cls(
            data_dir=data_dir or default_data_dir(environ),
            db=db or environ.get(DB_ENV) or None,
            broker=broker or environ.get(BROKER_ENV) or None,
            vector_index=environ.get(VECTOR_INDEX_ENV) or None,
            hosts_file=hosts_file or default_hosts_file(environ),
            eval_cache=default_cache_dir(environ),
            pipeline=pipeline,
        )


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """`$IDDETECTIVE_DATA`, else `$XDG_DATA_HOME/iddetective` (~/.local/share/iddetective)."""
    if environ.get(DATA_ENV):
        return Path(environ[DATA_ENV])
    base = environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "iddetective"


def default_hosts_file(environ: Mapping[str, str]) -> Path:
    """`$IDDETECTIVE_HOSTS`, else `$XDG_CONFIG_HOME/iddetective/hosts.toml` (~/.config)."""
    if environ.get(HOSTS_ENV):
        return Path(environ[HOSTS_ENV])
    config = environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "iddetective" / "hosts.toml"


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_CACHE_HOME/iddetective/eval`, i.e. `~/.cache/iddetective/eval`."""
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iddetective" / "eval"


def default_model_cache(environ: Mapping[str, str]) -> Path:
    """`$IDDETECTIVE_MODEL_CACHE`, else `$XDG_CACHE_HOME/iddetective/models`, i.e.
    `~/.cache/iddetective/models`: the user's cache, outside the repository and the data
    directory (what is kept there depends on this machine's runtime, not on a catalogue)."""
    if environ.get(MODEL_CACHE_ENV):
        return Path(environ[MODEL_CACHE_ENV])
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iddetective" / "models"
