"""Read an import file: people, their aliases, accounts, lists, relations and photos.

JSONL (one object per line) or CSV (a header row; several values in one cell are separated
by `;`); the format is docs/import.md. Every row is checked on its own: a bad row is reported
with its line number and reason and the others go on, so nothing is skipped silently. Rows
name people by a stable external `id`, which makes importing the same file again a no-op.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..entities import Account, PersonRecord, Provenance
from ..errors import BadManifest, UsageError, printable
from ..files import keep_photo
from ..ingest.indexing import IndexReport
from ..store import Store
from .fetch import Fetcher, FetchError
from .paths import PhotoJob

__all__ = [
    "FIELDS",
    "ImportReport",
    "ImportRow",
    "RowPhoto",
    "RowProblem",
    "apply_rows",
    "fetch_photos",
    "read_import",
]

#: The fields a row may have. `id` and `name` are required.
FIELDS = ("id", "name", "aliases", "accounts", "lists", "relations", "photos", "notes", "basis")
_MAX_TEXT = 1000


@dataclass(frozen=True)
class ImportRow:
    """One good row: the person, their relations (kind, other's id) and photos to index."""

    line: int
    record: PersonRecord
    relations: tuple[tuple[str, str], ...]
    photos: tuple[str, ...]  # absolute paths, or http(s) URLs


@dataclass(frozen=True)
class RowPhoto:
    """A photo named on a row, for the person that row wrote."""

    line: int
    person_id: str
    photo: str  # an absolute path or an http(s) URL
    origin: Provenance


@dataclass(frozen=True)
class RowProblem:
    """A row (or one of its photos) that could not be imported, and why.

    Reasons quote the row's values: their control characters are escaped here, once for
    every reason, so a CR/LF in an id or URL cannot forge a line of the report.
    """

    line: int
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", printable(self.reason))


@dataclass
class ImportReport:
    """What an import did: people created and updated, relations added, photos, problems."""

    created: int = 0
    updated: int = 0
    relations: int = 0
    photos: IndexReport | None = None
    problems: list[RowProblem] = field(default_factory=list)


class _BadRow(Exception):
    pass


def apply_rows(store: Store, rows: list[ImportRow], report: ImportReport) -> list[RowPhoto]:
    """Write the people of `rows`, then their relations; returns their photos to index.

    Each person is one transaction; a row whose person could not be written keeps none of
    its relations or photos.
    """
    written: dict[int, str] = {}
    for row in rows:
        try:
            person, created = store.upsert_person(row.record)
        except UsageError as error:
            report.problems.append(RowProblem(row.line, str(error)))
            continue
        written[row.line] = person.id
        report.created += created
        report.updated += not created
    for row in rows:
        if row.line in written:
            _relate(store, row, written[row.line], report)
    return [
        RowPhoto(row.line, written[row.line], photo, row.record.provenance or Provenance())
        for row in rows
        if row.line in written
        for photo in row.photos
    ]


def fetch_photos(
    photos: list[RowPhoto], fetcher: Fetcher, target: Path, report: ImportReport
) -> list[PhotoJob]:
    """Index jobs for the photos: paths as they are; URLs downloaded (sources/fetch.py's limits and
    address checks) into `target`, named by content. A failed download is a row problem."""
    jobs = [PhotoJob(p.photo, p.person_id, p.origin) for p in photos if not _is_url(p.photo)]
    wanted = {p.photo: p for p in photos if _is_url(p.photo)}
    for url, result in fetcher.fetch_many(list(wanted)):
        photo = wanted[url]
        if isinstance(result, FetchError):
            report.problems.append(RowProblem(photo.line, str(result)))
            continue
        origin = replace(photo.origin, source=f"{url} ({photo.origin.source})")
        jobs.append(PhotoJob(str(keep_photo(result, url, target)), photo.person_id, origin))
    return jobs


def _is_url(photo: str) -> bool:
    return photo.startswith(("http://", "https://"))


def _relate(store: Store, row: ImportRow, person_id: str, report: ImportReport) -> None:
    for kind, other_id in row.relations:
        other = store.person_by_external_id(other_id)
        if other is None:
            reason = f"relation {kind}:{other_id}: no person has the id {other_id!r}"
            report.problems.append(RowProblem(row.line, reason))
            continue
        try:
            report.relations += store.add_relation(person_id, other.id, kind)
        except UsageError as error:
            report.problems.append(RowProblem(row.line, f"relation {kind}:{other_id}: {error}"))


def read_import(
    path: str, origin: Provenance | None = None
) -> tuple[list[ImportRow], list[RowProblem]]:
    """Every row of the import file at `path`, checked: (good rows, problems by line).

    Each person and photo records `origin` (who, on what basis; a row's own `basis` field
    wins) with the file and line as its source.

    A file that cannot be read at all raises `BadManifest`.
    """
    base = Path(path).resolve().parent
    origin = origin or Provenance()
    rows: list[ImportRow] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    for line, raw in _raw_rows(path):
        try:
            row = _checked(line, raw, base, replace(origin, source=f"{path}:{line}"))
            if row.record.external_id in seen:
                first = seen[row.record.external_id]
                raise _BadRow(f"id {row.record.external_id!r} was already used on line {first}")
        except _BadRow as problem:
            problems.append(RowProblem(line, str(problem)))
            continue
        seen[row.record.external_id] = line
        rows.append(row)
    return rows, problems


def _raw_rows(path: str) -> Iterator[tuple[int, Any]]:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            if path.lower().endswith((".jsonl", ".ndjson", ".json")):
                yield from _json_rows(handle)
            else:
                yield from _csv_rows(handle)
    except (OSError, UnicodeDecodeError) as error:
        raise BadManifest(f"cannot read the import file {path}: {error}") from None


def _json_rows(handle: Any) -> Iterator[tuple[int, Any]]:
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            yield line, json.loads(text)
        except json.JSONDecodeError as error:
            yield line, _BadRow(f"not valid JSON: {error.msg} at column {error.colno}")


def _csv_rows(handle: Any) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(handle)
    if not reader.fieldnames or "id" not in reader.fieldnames:
        raise BadManifest("the CSV import file needs a header row with at least id and name")
    for raw in reader:
        line = reader.line_num
        if None in raw:
            yield line, _BadRow("more cells than the header has columns")
            continue
        yield line, _from_csv(raw)


def _from_csv(raw: dict[str, str]) -> dict[str, Any]:
    """A CSV row as the JSON form: `;` separates values, `kind:id` relations, `platform:handle`."""
    row: dict[str, Any] = {k: (v or "").strip() for k, v in raw.items() if (v or "").strip()}
    for key in ("aliases", "lists", "photos"):
        if key in row:
            row[key] = _split(row[key])
    if "accounts" in row:
        row["accounts"] = [_pair(item, "platform", "handle") for item in _split(row["accounts"])]
    if "relations" in row:
        row["relations"] = [_pair(item, "kind", "to") for item in _split(row["relations"])]
    return row


def _split(cell: str) -> list[str]:
    return [part.strip() for part in cell.split(";") if part.strip()]


def _pair(item: str, first: str, second: str) -> dict[str, str] | str:
    head, colon, tail = item.partition(":")
    return {first: head.strip(), second: tail.strip()} if colon else item


def _checked(line: int, raw: Any, base: Path, origin: Provenance) -> ImportRow:
    if isinstance(raw, _BadRow):
        raise raw
    if not isinstance(raw, dict):
        raise _BadRow(f"a row must be an object with {', '.join(FIELDS)}; got {_kind(raw)}")
    unknown = [key for key in raw if key not in FIELDS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _BadRow(f"unknown field {unknown[0]!r}{hint}; fields are {', '.join(FIELDS)}")
    record = PersonRecord(
        external_id=_text(raw, "id"),
        name=_text(raw, "name"),
        aliases=tuple(_texts(raw, "aliases")),
        accounts=tuple(_account(item) for item in _list(raw, "accounts")),
        lists=tuple(_texts(raw, "lists")),
        notes=_text(raw, "notes", required=False),
        provenance=replace(origin, basis=_text(raw, "basis", required=False) or origin.basis),
    )
    relations = tuple(_relation(item) for item in _list(raw, "relations"))
    photos = tuple(_photo(base, item) for item in _texts(raw, "photos"))
    return ImportRow(line, record, relations, photos)


def _text(raw: dict[str, Any], key: str, required: bool = True) -> str:
    value = raw.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _BadRow(f"{key} is missing or empty")
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise _BadRow(f"{key} must be text, not {_kind(value)}")
    text = str(value).strip()
    if len(text) > _MAX_TEXT:
        raise _BadRow(f"{key} is longer than {_MAX_TEXT} characters")
    return text


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise _BadRow(f"{key} must be a list, not {_kind(value)}")
    return value


def _texts(raw: dict[str, Any], key: str) -> list[str]:
    values = _list(raw, key)
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise _BadRow(f"every entry of {key} must be non-empty text, not {value!r}")
    return [value.strip() for value in values]


def _account(item: Any) -> Account:
    if not isinstance(item, dict) or not item.get("platform") or not item.get("handle"):
        raise _BadRow(f"an account needs a platform and a handle (platform:handle), not {item!r}")
    url = item.get("url")
    if url is not None and not (isinstance(url, str) and url.startswith(("https://", "http://"))):
        raise _BadRow(f"an account url must start with http:// or https://, not {url!r}")
    return Account(str(item["platform"]).strip().lower(), str(item["handle"]).strip(), url)


def _relation(item: Any) -> tuple[str, str]:
    if not isinstance(item, dict) or not item.get("kind") or not item.get("to"):
        raise _BadRow(f"a relation needs a kind and the other person's id (kind:id), not {item!r}")
    return str(item["kind"]).strip().lower(), str(item["to"]).strip()


def _photo(base: Path, item: str) -> str:
    if item.startswith(("http://", "https://")):
        return item
    if "://" in item:
        raise _BadRow(f"photos are paths or http(s) URLs, not {item!r}")
    return os.path.normpath(base / item)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false"}.get(
        type(value), type(value).__name__
    )
