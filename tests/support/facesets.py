"""The labelled face sets ($IDDETECTIVE_FACES): finding them, their labels, subsets, copies."""

from __future__ import annotations

import csv
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.needs import require

__all__ = [
    "ABSENT_SETS",
    "REPO",
    "Labelled",
    "LfwSubset",
    "WebCatalogue",
    "copy_data",
    "faces_root",
    "lfw_subset",
    "read_labels",
    "require_set",
    "split_enrol_probe",
    "write_manifest",
]


REPO = Path(__file__).resolve().parents[2]
ABSENT_SETS: set[str] = set()


def faces_root() -> Path:
    """The labelled sets: $IDDETECTIVE_FACES, default ../shared/faces beside the repo."""
    return Path(os.environ.get("IDDETECTIVE_FACES", REPO.parent / "shared" / "faces")).resolve()


def require_set(name: str) -> Path:
    """The folder of one labelled set; fails under CI when absent, else skips with the reason
    (and the run ends with a warning naming it). The test must be marked `faces`."""
    require("faces")
    folder = faces_root() / name
    if not (folder / "labels.csv").exists():
        reason = f"labelled face set {folder} is absent (set IDDETECTIVE_FACES)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        ABSENT_SETS.add(str(folder))
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


@dataclass(frozen=True)
class LfwSubset:
    """lfw_dev's crowded subset: 50 people with 4+ photos (one enrolled, three probes each),
    150 people enrolled with their only photo (distractors), 50 more never enrolled."""

    enrol: list[Labelled]
    probes: list[Labelled]
    distractors: list[Labelled]
    strangers: list[Labelled]


def lfw_subset() -> LfwSubset:
    """The subset (tests/test_search_accuracy.py and tests/test_optout.py enrol the same
    photos, so the catalogue is built once per run: `built_catalogue("lfw_dev", ...)`)."""
    by_person: dict[str, list[Labelled]] = defaultdict(list)
    for row in read_labels(require_set("lfw_dev")):
        by_person[row.person].append(row)
    several = [p for p in by_person.values() if len(p) >= 4][:50]
    singles = [p[0] for p in by_person.values() if len(p) == 1]
    enrol, probes = split_enrol_probe([r for p in several for r in p], probes_per_person=3)
    return LfwSubset(enrol, probes, singles[:150], singles[150:200])


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
