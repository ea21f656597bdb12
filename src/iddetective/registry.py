"""Resolve a backend (detector, embedder, store, vector index) from a short name or dotted path.

Core code asks here instead of importing a backend module, so a new backend is a new module
plus one line in `_BUILTIN`. A spec may be an instance, a short name or `package.module:Class`;
whatever it names must satisfy the seam's Protocol, or it is rejected loudly.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import UsageError

__all__ = ["available", "resolve_class"]

_BUILTIN: dict[str, dict[str, str]] = {
    "detector": {
        "dlib-hog": "iddetective.faces:HogDetector",
        "dlib-cnn": "iddetective.faces:CnnDetector",
    },
    "embedder": {"dlib-resnet-v1": "iddetective.faces:DlibResnetEmbedder"},
    "store": {
        "sqlite": "iddetective.store.sqlite:SqliteStore",
        "postgresql": "iddetective.store.postgres:PostgresStore",
    },
    "vector_index": {
        "exact": "iddetective.vector_index.exact:ExactIndex",
        "ivf": "iddetective.vector_index.ivf:IvfIndex",
        "pgvector": "iddetective.vector_index.pgvector:PgvectorIndex",
    },
}


def available(kind: str) -> list[str]:
    """The short names registered for a seam."""
    return sorted(_BUILTIN[kind])


def resolve_class(kind: str, spec: str) -> Any:
    """The class a short name or `module:Class` dotted path names for the seam `kind`."""
    if kind not in _BUILTIN:
        raise UsageError(f"unknown seam {kind!r}; known: {', '.join(sorted(_BUILTIN))}")
    target = _BUILTIN[kind].get(spec, spec)
    if ":" not in target:
        raise UsageError(
            f"unknown {kind} {spec!r}; choose one of {', '.join(available(kind))} "
            "or give a dotted path module:Class"
        )
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"cannot load {kind} {spec!r}: {error}") from None
