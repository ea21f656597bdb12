"""Index files that prove they are what was saved: SHA-256 digests written at save, checked at load.

An index is a cache of the catalogue, but a damaged cache answers wrongly with confidence (two
swapped rows of vectors make one person's photo match another's), so a file whose bytes are
not the ones saved is refused (`IndexDamaged`) and the catalogue rebuilds the index. The
digests sit in the index's metadata, which carries a digest of itself, so a flipped knob is
refused like a flipped vector.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .base import IndexDamaged, IndexOutdated

__all__ = ["file_digests", "sealed", "unsealed", "verify_files"]


def file_digests(folder: Path, names: list[str]) -> dict[str, str]:
    """The SHA-256 (hex) of each named file in `folder`."""
    return {name: _digest(folder / name) for name in names}


def verify_files(
    folder: Path, digests: dict[str, str], required: set[str], optional: set[str]
) -> None:
    """Raise `IndexDamaged` unless `digests` names every `required` file and only known ones,
    and each is a regular file in `folder` with that digest."""
    names = set(digests)
    if not required <= names <= required | optional:
        raise IndexDamaged(f"the index metadata in {folder} lists the files {sorted(names)}")
    for name, expected in digests.items():
        target = folder / name
        if target.is_symlink() or not target.is_file():
            raise IndexDamaged(f"the index file {target} is missing")
        if _digest(target) != expected:
            raise IndexDamaged(f"the index file {target} is damaged (its checksum changed)")


def sealed(meta: dict[str, Any]) -> str:
    """`meta` as JSON text carrying a digest of its own content."""
    return json.dumps({**meta, "seal": _seal(meta)}, sort_keys=True)


def unsealed(text: str, where: Path) -> dict[str, Any]:
    """The metadata `sealed` wrote, or `IndexDamaged` if it was altered since."""
    try:
        meta = json.loads(text)
    except ValueError as error:
        raise IndexDamaged(f"the index metadata {where} is damaged: {error}") from None
    if isinstance(meta, dict) and "seal" not in meta and "sha256" not in meta:
        raise IndexOutdated(f"the index at {where.parent} was saved by an earlier iddetective")
    if not isinstance(meta, dict) or meta.pop("seal", None) != _seal(meta):
        raise IndexDamaged(f"the index metadata {where} is damaged (its checksum changed)")
    return meta


def _seal(meta: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
