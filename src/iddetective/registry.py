"""Resolve a backend (detector, embedder, store, vector index) from a short name or dotted path.

Core code asks here instead of importing a backend module, so a new backend is a new module
plus one line in `_BUILTIN`. A spec may be a class, a short name or `package.module:Class`
(`resolve_class`), or an instance (`checked_instance`); whatever it names must satisfy the
seam's Protocol, or it is rejected loudly with a `UsageError` naming what is missing.

A class is checked for the protocol's methods (its data attributes, such as a vector index's
`dimension`, may be set by its constructor); an instance for every member.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Protocol

from .errors import UsageError

__all__ = ["available", "checked_instance", "protocol_of", "resolve_class"]

_BUILTIN: dict[str, dict[str, str]] = {
    "detector": {
        "dlib-hog": "iddetective.faces.pipeline:HogDetector",
        "dlib-cnn": "iddetective.faces.pipeline:CnnDetector",
    },
    # An embedder's `name` is its model; a registry name is a way to run one. Two runtimes
    # of dlib's ResNet, the same vectors: ONNX Runtime (the default) and dlib's own.
    "embedder": {
        "dlib-resnet-v1": "iddetective.faces.onnx_resnet:OnnxResnetEmbedder",
        "dlib-resnet-v1-dlib": "iddetective.faces.pipeline:DlibResnetEmbedder",
    },
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

#: The Protocol each seam's backends satisfy, named as its module would be imported (lazily:
#: those modules import this one).
_PROTOCOLS: dict[str, str] = {
    "detector": "iddetective.faces.pipeline:Detector",
    "embedder": "iddetective.faces.pipeline:Embedder",
    "store": "iddetective.store.base:Store",
    "vector_index": "iddetective.vector_index.base:VectorIndex",
}

#: Names every Protocol class has that are not members of the seam.
_NOT_MEMBERS = frozenset(dir(Protocol)) | {
    "__annotations__",
    "__dict__",
    "__protocol_attrs__",
    "__weakref__",
}


def available(kind: str) -> list[str]:
    """The short names registered for a seam."""
    return sorted(_known(kind))


def protocol_of(kind: str) -> type:
    """The Protocol the backends of seam `kind` satisfy."""
    _known(kind)
    protocol: type = _imported(_PROTOCOLS[kind], f"the {kind} protocol")
    return protocol


def resolve_class(kind: str, spec: str | type) -> Any:
    """The class a short name or `module:Class` dotted path names for the seam `kind` (or
    `spec` itself, a class), checked to have every method of the seam's Protocol."""
    found = spec if isinstance(spec, type) else _imported(_target(kind, spec), f"{kind} {spec!r}")
    protocol = protocol_of(kind)
    if not isinstance(found, type):
        raise UsageError(f"{kind} {spec!r} names {found!r}, not a class")
    missing = [name for name in _methods(protocol) if not callable(getattr(found, name, None))]
    if missing:
        raise UsageError(_refusal(kind, found, protocol, missing))
    return found


def checked_instance(kind: str, instance: object) -> Any:
    """`instance`, checked to satisfy every member of the seam `kind`'s Protocol."""
    protocol = protocol_of(kind)
    methods = _methods(protocol)
    missing = [
        name
        for name in _members(protocol)
        if not hasattr(instance, name)
        or (name in methods and not callable(getattr(instance, name)))
    ]
    if missing:
        raise UsageError(_refusal(kind, type(instance), protocol, missing))
    return instance


def _known(kind: str) -> dict[str, str]:
    if kind not in _BUILTIN:
        raise UsageError(f"unknown seam {kind!r}; known: {', '.join(sorted(_BUILTIN))}")
    return _BUILTIN[kind]


def _target(kind: str, spec: str) -> str:
    target = _known(kind).get(spec, spec)
    if ":" not in target:
        raise UsageError(
            f"unknown {kind} {spec!r}; choose one of {', '.join(available(kind))} "
            "or give a dotted path module:Class"
        )
    return target


def _imported(target: str, what: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"cannot load {what}: {error}") from None


def _members(protocol: type) -> list[str]:
    """Every attribute and method a Protocol (and the Protocols it extends) declares."""
    names: set[str] = set()
    for base in protocol.__mro__:
        if base is object or base is Protocol or not getattr(base, "_is_protocol", False):
            continue
        names |= set(getattr(base, "__annotations__", {})) | set(vars(base))
    return sorted(name for name in names if name not in _NOT_MEMBERS)


def _methods(protocol: type) -> list[str]:
    return [
        name
        for name in _members(protocol)
        if inspect.isfunction(inspect.getattr_static(protocol, name, None))
    ]


def _refusal(kind: str, found: type, protocol: type, missing: list[str]) -> str:
    return (
        f"{kind} {found.__module__}:{found.__qualname__} does not implement the "
        f"{protocol.__name__} protocol: no {', '.join(missing)}"
    )
