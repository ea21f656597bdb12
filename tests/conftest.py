"""Shared fixtures: the labelled face sets, and catalogues built from them once per run."""

from __future__ import annotations

import csv
import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from iddetective.access import ROLES
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


def split_enrol_probe(
    rows: list[Labelled], probes_per_person: int = 99
) -> tuple[list[Labelled], list[Labelled]]:
    """First photo of each person enrolled, up to `probes_per_person` of the others as probes."""
    by_person: dict[str, list[Labelled]] = defaultdict(list)
    for row in rows:
        by_person[row.person].append(row)
    enrol = [photos[0] for photos in by_person.values()]
    probes = [p for photos in by_person.values() for p in photos[1 : 1 + probes_per_person]]
    return enrol, probes


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


@dataclass(frozen=True)
class WebCatalogue:
    """A data directory for the web app: face_recognition's people enrolled, a key per role."""

    data_dir: Path
    keys: dict[str, str]  # role -> API key
    enrolled: list[Labelled]
    probes: list[Labelled]  # other photos of enrolled people
    strangers: list[Labelled]  # photos of a person not enrolled


@pytest.fixture(scope="session")
def web_catalogue(
    built_catalogue: Callable[[str, list[Labelled], list[str]], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> WebCatalogue:
    """Shared by the web tests; tests that change the catalogue copy it first (`copy_data`)."""
    rows = read_labels(require_set("face_recognition"))
    known = [r for r in rows if r.person != "lin_manuel_miranda"]
    enrol, probes = split_enrol_probe(known)
    # Same key and rows as tests/test_search_accuracy.py: the set is embedded once per run.
    source = built_catalogue("face_recognition", enrol, [])
    data = copy_data(source, tmp_path_factory.mktemp("web") / "data")
    with Catalogue(data) as catalogue:
        keys = {role: catalogue.create_key(role, f"test {role}")[0] for role in ROLES}
    strangers = [r for r in rows if r.person == "lin_manuel_miranda"]
    return WebCatalogue(data, keys, enrol, probes, strangers)
