"""Turn the command line's paths and a people manifest into photo jobs.

Who is in a photo comes from a manifest (CSV with a `path,person` header, or JSONL objects
with `path` and `person`; paths relative to the manifest's folder) or from the folder layout
`PERSON_NAME/photo.jpg` under each given folder. Problems with single rows are returned as
failures so the run goes on; a path argument that does not exist or a manifest that cannot be
read at all is a `UsageError`, raised before anything is indexed.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..entities import FailedPhoto, FileStat, Provenance
from ..errors import BadManifest, UsageError

__all__ = ["PHOTO_SUFFIXES", "PhotoJob", "Plan", "manifest_rows", "plan_sources", "read_manifest"]

#: Files with these suffixes are picked up when a folder is scanned. Files named on the
#: command line or in a manifest are tried whatever their name.
PHOTO_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".heic", ".heif", ".avif"}
    | {".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".pnm"}
)


@dataclass(frozen=True)
class PhotoJob:
    """One file to index, with the name of the person it shows, if known."""

    path: str
    label: str | None = None
    provenance: Provenance | None = None


@dataclass
class Plan:
    """The files to index, rows that failed before any reading, and what was passed over."""

    jobs: list[PhotoJob] = field(default_factory=list)
    problems: list[FailedPhoto] = field(default_factory=list)
    not_photos: int = 0
    roots: list[str] = field(default_factory=list)
    #: The manifest read (absolute path), whose earlier row failures this run replaces.
    manifest: str | None = None


def plan_sources(
    paths: Sequence[str], manifest: str | None = None, people_from_folders: bool = False
) -> Plan:
    """The jobs for `paths` (folders are scanned recursively) and an optional manifest."""
    if manifest and people_from_folders:
        raise UsageError("give either a people manifest or --people-from-folders, not both")
    missing = [p for p in paths if not os.path.lexists(p)]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    if not paths and not manifest:
        raise UsageError("nothing to index: give photo files or folders, or --people FILE")
    plan = Plan(roots=[os.path.abspath(p) for p in paths])
    labels: dict[str, str] = {}
    if manifest:
        labels, plan.problems = read_manifest(manifest)
        plan.manifest = str(Path(manifest).resolve())
    jobs: dict[str, str | None] = {}
    for root in plan.roots:
        for path, folder_label in _scan(root, plan):
            jobs[path] = labels.get(path, folder_label if people_from_folders else None)
    for path, label in labels.items():
        jobs.setdefault(path, label)
    plan.jobs = [PhotoJob(path, label) for path, label in jobs.items()]
    return plan


def _scan(root: str, plan: Plan) -> Iterator[tuple[str, str | None]]:
    if not os.path.isdir(root):
        yield root, os.path.basename(os.path.dirname(root)) or None
        return
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        relative = os.path.relpath(folder, root)
        label = None if relative == "." else relative.split(os.sep)[0]
        for name in sorted(files):
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() not in PHOTO_SUFFIXES:
                plan.not_photos += 1
                continue
            yield os.path.join(folder, name), label


def read_manifest(manifest: str) -> tuple[dict[str, str], list[FailedPhoto]]:
    """Labels by absolute path from a CSV or JSONL manifest, and the rows that were bad."""
    path = Path(manifest)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadManifest(f"people manifest {manifest}: file does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BadManifest(f"people manifest {manifest}: cannot read it ({error})") from None
    jsonl = path.suffix.lower() == ".jsonl"
    rows = _jsonl_rows(text, manifest) if jsonl else _csv_rows(text, manifest)
    base_manifest = str(path.resolve())
    base = path.resolve().parent
    labels: dict[str, str] = {}
    problems: list[FailedPhoto] = []
    for line, row in rows:
        where = f"{manifest_rows(base_manifest)}{line}"
        if isinstance(row, str):
            problems.append(_row_problem(where, row))
            continue
        photo, person = (row.get("path") or "").strip(), (row.get("person") or "").strip()
        if not photo or not person:
            problems.append(_row_problem(where, "needs both a path and a person"))
            continue
        absolute = os.path.abspath(os.path.join(base, photo))
        if labels.get(absolute, person) != person:
            problems.append(
                _row_problem(where, f"{photo} is already labelled {labels[absolute]!r}")
            )
            continue
        if not os.path.lexists(absolute):
            reason = f"listed in {where} but the file does not exist"
            problems.append(FailedPhoto(FileStat(absolute, -1, -1), reason))
            continue
        labels[absolute] = person
    return labels, problems


def manifest_rows(manifest: str) -> str:
    """How failures name the rows of a manifest: `/abs/people.csv line ` + the line number."""
    return f"{manifest} line "


def _row_problem(where: str, reason: str) -> FailedPhoto:
    return FailedPhoto(FileStat(where, -1, -1), f"bad manifest row: {reason}")


def _csv_rows(text: str, manifest: str) -> list[tuple[int, dict[str, str] | str]]:
    reader = csv.DictReader(text.splitlines())
    try:
        found = [name.strip() for name in reader.fieldnames or []]
        header = [name.lower() for name in found]
        if "path" not in header or "person" not in header:
            raise BadManifest(
                f"people manifest {manifest}: the first line must be a header with the columns "
                f"path and person (found: {', '.join(found) or 'nothing'})"
            )
        reader.fieldnames = header
        return [(reader.line_num, _csv_row(row)) for row in reader]
    except csv.Error as error:
        line = reader.reader.line_num  # the DictReader's own count skips the failed line
        raise BadManifest(
            f"people manifest {manifest} line {line}: not readable as CSV ({error})"
        ) from None


def _csv_row(row: dict[str | None, Any]) -> dict[str, str] | str:
    """The row's fields by column (missing ones empty), or what is wrong with it."""
    extra = row.get(None)
    if isinstance(extra, list):
        return f"more fields than the header names (extra: {', '.join(extra)})"
    return {name: value or "" for name, value in row.items() if name is not None}


def _jsonl_rows(text: str, manifest: str) -> list[tuple[int, dict[str, str] | str]]:
    rows: list[tuple[int, dict[str, str] | str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            rows.append((number, f"not valid JSON ({error.msg} at column {error.colno})"))
            continue
        if not isinstance(value, dict):
            rows.append((number, "each line must be a JSON object"))
            continue
        rows.append((number, {k: v if isinstance(v, str) else "" for k, v in value.items()}))
    if not rows:
        raise BadManifest(f"people manifest {manifest}: no rows")
    return rows
