"""Files the data directory keeps: written whole or not at all, photos named by content.

A file is written to a hidden `.NAME.PID.part` beside its target, then renamed over it, so a
reader never sees half a file and a killed process leaves only a `.part` file, which
`iddetective maintenance` deletes (`PARTIAL_GLOB`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .faces.imaging import photo_suffix

__all__ = [
    "FETCHED_DIR",
    "OWN_PHOTO_DIRS",
    "PARTIAL_GLOB",
    "UPLOADS_DIR",
    "keep_photo",
    "write_atomically",
]

#: Photos uploaded through the HTTP API, and photos downloaded from an import file's URLs.
UPLOADS_DIR = "uploads"
FETCHED_DIR = "fetched"
#: Our own copies of photos (erasing a person deletes theirs; the operator's files stay).
OWN_PHOTO_DIRS = (UPLOADS_DIR, FETCHED_DIR)
#: Matches the partly written files `write_atomically` leaves when killed.
PARTIAL_GLOB = ".*.part"


def write_atomically(target: Path, data: bytes) -> None:
    """Write `data` to `target` (creating its folder) so that it appears whole or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, target)


def keep_photo(data: bytes, name: str, folder: Path) -> Path:
    """Keep a copy of a photo's bytes under `folder/ab/<sha256><suffix>` (suffix sniffed from
    the bytes; `name` is only for error messages); an existing copy is reused."""
    sha256 = hashlib.sha256(data).hexdigest()
    target = folder / sha256[:2] / f"{sha256}{photo_suffix(data, name)}"
    if not target.exists():
        write_atomically(target, data)
    return target
