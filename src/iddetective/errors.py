"""Typed errors. Front-ends turn them into exit codes or HTTP answers with the same message."""

from __future__ import annotations

__all__ = [
    "AmbiguousPerson",
    "BadImage",
    "BadManifest",
    "Forbidden",
    "IDDetectiveError",
    "NotFound",
    "PhotoChanged",
    "StoreError",
    "Unauthorized",
    "UsageError",
    "from_os_error",
]


class IDDetectiveError(Exception):
    """Base class of every error the library raises on purpose."""

    #: Exit code the CLI uses for this error (see docs/contracts.md).
    exit_code = 1


class UsageError(IDDetectiveError):
    """A command-line argument or option is wrong (a path that does not exist, ...)."""

    exit_code = 2


class BadImage(IDDetectiveError):
    """A file could not be used as a photo: the message names the file and the reason."""

    exit_code = 2

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
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


class Unauthorized(IDDetectiveError):
    """No API key, or a key that is unknown or revoked."""


class Forbidden(IDDetectiveError):
    """A valid API key whose role does not allow the action."""


def from_os_error(error: OSError) -> StoreError:
    """An operating-system failure (a full disk, a read-only or vanished folder) as a
    `StoreError` saying what and where in one line, for the front-ends to show."""
    where = f"{error.filename}: " if error.filename else ""
    return StoreError(f"{where}{error.strerror or error}")
