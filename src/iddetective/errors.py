"""Typed errors. Front-ends turn them into exit codes or HTTP answers with the same message."""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "AmbiguousPerson",
    "BadImage",
    "BadManifest",
    "Forbidden",
    "IDDetectiveError",
    "LastAdminKey",
    "NotFound",
    "PhotoChanged",
    "StoreBusy",
    "StoreError",
    "Unauthorized",
    "UsageError",
    "from_os_error",
    "printable",
]


class IDDetectiveError(Exception):
    """Base class of every error the library raises on purpose.

    Errors cross process boundaries (analysis and ingest workers send them back), so every
    one survives pickling whatever its constructor takes: it is rebuilt from its message
    and attributes, not by calling `__init__` again.
    """

    #: Exit code the CLI uses for this error (see docs/contracts.md).
    exit_code = 1

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuilt, (type(self), self.args, dict(vars(self))))


def _rebuilt(
    cls: type[IDDetectiveError], args: tuple[object, ...], attributes: dict[str, object]
) -> IDDetectiveError:
    """An error of `cls` with these args and attributes, without calling its `__init__`."""
    error = cls.__new__(cls)
    error.args = args
    vars(error).update(attributes)
    return error


#: Characters shown escaped when a message quotes user-supplied text: C0 and C1 controls,
#: DEL, line and paragraph separators, and the bidirectional overrides that can make a
#: terminal or log show text other than what it holds.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with control characters escaped (`\\r`, `\\n`, `\\x1b`, `\\u2028`...), for a
    message that quotes a user's path, URL or value: a CR/LF in it cannot forge a line of a
    log, a terminal escape cannot run. Other text, any script, is kept as it is."""
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


class UsageError(IDDetectiveError):
    """A command-line argument or option is wrong (a path that does not exist, ...)."""

    exit_code = 2


class BadImage(IDDetectiveError):
    """A file could not be used as a photo: the message names the file and the reason."""

    exit_code = 2

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{printable(path)}: {reason}")
        self.path = path
        self.reason = reason


class BadManifest(UsageError):
    """A people manifest (CSV/JSONL) cannot be read at all."""


class NotFound(IDDetectiveError):
    """A person, photo or data directory named by the user does not exist."""


class PhotoChanged(IDDetectiveError):
    """A photo's file no longer holds the bytes that were indexed (overwritten or edited):
    nothing is rendered from it until it is indexed again."""


class AmbiguousPerson(IDDetectiveError):
    """A display name matches several people; the message lists them with their ids."""

    def __init__(self, name: str, candidates: list[tuple[str, str]]) -> None:
        listed = ", ".join(f"{pid} ({pname})" for pid, pname in candidates)
        super().__init__(
            f"the name {name!r} matches {len(candidates)} people: {listed}; use a person id"
        )
        self.name = name
        self.candidates = candidates


class StoreError(IDDetectiveError):
    """The catalogue cannot be opened or written (newer schema, locked too long, ...)."""


class StoreBusy(StoreError):
    """Another writer held the catalogue longer than this one waited for it."""


class Unauthorized(IDDetectiveError):
    """No API key, or a key that is unknown or revoked."""


class Forbidden(IDDetectiveError):
    """A valid API key whose role does not allow the action."""


def from_os_error(error: OSError) -> StoreError:
    """An operating-system failure (a full disk, a read-only or vanished folder) as a
    `StoreError` saying what and where in one line, for the front-ends to show."""
    where = f"{error.filename}: " if error.filename else ""
    return StoreError(f"{where}{error.strerror or error}")
class LastAdminKey(IDDetectiveError):
    """Revoking this key would leave no active admin key: nobody could manage keys again."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"key {key_id} is the last active admin key: revoking it would leave nobody able "
            "to manage keys; create another admin key first"
        )
        self.key_id = key_id
