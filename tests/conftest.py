"""Shared fixtures: the labelled face sets, and catalogues built from them once per run."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from iddetective.catalogue import Catalogue

REPO = Path(__file__).resolve().parent.parent


def faces_root() -> Path:
    """The labelled sets: $IDDETECTIVE_FACES, default ../shared/faces beside the repo."""
    return Path(os.environ.get("IDDETECTIVE_FACES", REPO.parent / "shared" / "faces")).resolve()


def require_set(name: str) -> Path:
    """The folder of one labelled set; fails under CI when absent, else skips with the reason."""
    folder = faces_root() / name
    if not (folder / "labels.csv").exists():
        reason = f"labelled face set {folder} is absent (set IDDETECTIVE_FACES)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


@dataclass(frozen=True)
class Labelled:
    """One photo of a labelled set."""

    path: str
    person: str


def read_labels(folder: Path) -> list[Labelled]:
    """Rows of a set's labels.csv with absolute paths."""
    with open(folder / "labels.csv", newline="") as handle:
        return [
            Labelled(str(folder / row["path"]), row["person"]) for row in csv.DictReader(handle)
        ]


def write_manifest(path: Path, rows: list[Labelled]) -> Path:
    """A path,person CSV manifest of `rows`."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "person"])
        writer.writerows((row.path, row.person) for row in rows)
    return path


@pytest.fixture(scope="session")
def built_catalogue(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, list[Labelled], list[str]], Path]:
    """Build (once per run and key) a data directory enrolling `rows` plus unlabelled photos.

    Returns the data directory; tests that change it must copy it first (`copy_data`).
    """
    built: dict[str, Path] = {}

    def build(key: str, rows: list[Labelled], unlabelled: list[str]) -> Path:
        if key not in built:
            folder = tmp_path_factory.mktemp(key)
            manifest = write_manifest(folder / "enrol.csv", rows)
            with Catalogue(folder / "data", create=True) as catalogue:
                report = catalogue.index(unlabelled, people=str(manifest), workers=2)
            assert not report.failed, report.failed
            built[key] = folder / "data"
        return built[key]

    return build


def copy_data(source: Path, target: Path) -> Path:
    """A private copy of a built data directory."""
    shutil.copytree(source, target)
    return target
