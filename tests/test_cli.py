"""The command line: output, JSON schema and exit codes, checked against the library."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from iddetective.catalogue import CATALOG_FILE, Catalogue
from iddetective.cli import main
from iddetective.schemas import search_schema

from support.facesets import copy_data, read_labels, require_set

pytestmark = pytest.mark.faces


@pytest.fixture(scope="module")
def fr_set() -> Path:
    return require_set("face_recognition")


@pytest.fixture(scope="module")
def indexed(fr_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The face_recognition set indexed by the CLI with folder names as people."""
    data = tmp_path_factory.mktemp("cli") / "data"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "index",
            str(fr_set / "images"),
            "--people-from-folders",
            "--data",
            str(data),
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "indexed 18 photos" in result.output
    assert "labelled photos to review" in result.output
    return data


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_search_json_follows_schema(indexed: Path, fr_set: Path) -> None:
    code, out, _ = run(
        "search", str(fr_set / "images/obama/obama2.jpg"), "--data", str(indexed), "--json"
    )
    assert code == 0
    document = json.loads(out)
    jsonschema.validate(document, search_schema())
    (face,) = document["faces"]
    best = face["matches"][0]
    assert best["person"]["name"] == "obama" and best["verdict"] == "match"
    assert best["distance"] == 0.0  # the photo itself is in the catalogue
    assert len(best["photos"]) == 5  # every obama photo lies within the threshold
    distances = [m["distance"] for m in face["matches"]]
    assert distances == sorted(distances)


def test_search_text_output_and_top(indexed: Path, fr_set: Path) -> None:
    code, out, _ = run(
        "search", str(fr_set / "images/biden/biden.jpg"), "--data", str(indexed), "--top", "2"
    )
    assert code == 0
    assert "MATCH" in out and "biden" in out
    assert out.count("no match ") + out.count("MATCH ") == 2


def test_search_photo_without_face(indexed: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    gradient = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (150, 1))
    Image.fromarray(gradient).save(blank)
    code, out, _ = run("search", str(blank), "--data", str(indexed), "--json")
    assert code == 0 and json.loads(out)["faces"] == []
    code, out, _ = run("search", str(blank), "--data", str(indexed))
    assert "No face found" in out


def test_search_restricted_to_a_person(indexed: Path, fr_set: Path) -> None:
    photo = str(fr_set / "images/obama/obama2.jpg")
    code, out, _ = run("search", photo, "--data", str(indexed), "--person", "biden", "--json")
    assert code == 0
    (face,) = json.loads(out)["faces"]
    assert {m["person"]["name"] for m in face["matches"]} == {"biden"}
    assert face["verdict"] == "no_match"


def test_ambiguous_and_unknown_person_are_errors(
    indexed: Path, fr_set: Path, tmp_path: Path
) -> None:
    data = copy_data(indexed, tmp_path / "data")
    with sqlite3.connect(data / CATALOG_FILE) as db:
        db.execute(
            "INSERT INTO person (id, name, created_at, updated_at) "
            "VALUES ('p_other_biden', 'Biden', '', '')"
        )
    photo = str(fr_set / "images/obama/obama2.jpg")
    code, _, err = run("search", photo, "--data", str(data), "--person", "biden")
    assert code == 1 and "matches 2 people" in err and "p_other_biden" in err
    code, _, err = run("search", photo, "--data", str(data), "--person", "nobody")
    assert code == 1 and "no person has the id or name 'nobody'" in err


def test_bad_arguments_exit_2(indexed: Path, tmp_path: Path) -> None:
    code, _, err = run("search", str(tmp_path / "missing.jpg"), "--data", str(indexed))
    assert code == 2 and "missing.jpg: file does not exist" in err
    code, _, err = run("index", str(tmp_path / "nowhere"), "--data", str(tmp_path / "d"))
    assert code == 2 and "no such file or folder" in err and "nowhere" in err
    assert (
        not (tmp_path / "d" / CATALOG_FILE).exists() or not Catalogue(tmp_path / "d").stats().photos
    )
    code, _, err = run("search", str(tmp_path), "--data", str(indexed), "--top", "0")
    assert code == 2


def test_missing_data_directory_exit_1(tmp_path: Path, fr_set: Path) -> None:
    code, _, err = run("people", "--data", str(tmp_path / "none"))
    assert code == 1 and "no catalogue in" in err


def test_people_stats_review(indexed: Path) -> None:
    code, out, _ = run("people", "--data", str(indexed), "--json")
    people = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert {p["name"]: p["photos"] for p in people}["obama"] == 5
    code, out, _ = run("stats", "--data", str(indexed), "--json")
    figures = json.loads(out)
    with Catalogue(indexed) as catalogue:
        assert figures == catalogue.stats().__dict__
    assert figures["photos"] == 18 and figures["data_bytes"] > 0
    code, out, _ = run("review", "--data", str(indexed))
    assert code == 0 and "obama_and_biden.jpg" in out and "largest, most central" in out


def test_remove_then_search_no_longer_finds_it(indexed: Path, fr_set: Path, tmp_path: Path) -> None:
    data = copy_data(indexed, tmp_path / "data")
    photo = str(fr_set / "images/rose_leslie/img1.jpg")
    code, out, _ = run("remove", photo, "--data", str(data))
    assert code == 0 and "removed photo" in out
    code, out, _ = run("search", photo, "--data", str(data), "--json")
    hits = [h["paths"] for m in json.loads(out)["faces"][0]["matches"] for h in m["photos"]]
    assert [photo] not in hits
    code, _, err = run("remove", photo, "--data", str(data))
    assert code == 1 and "no stored photo" in err


def test_reindex_is_a_no_op(indexed: Path, fr_set: Path, tmp_path: Path) -> None:
    data = copy_data(indexed, tmp_path / "data")
    code, out, _ = run(
        "index", str(fr_set / "images"), "--people-from-folders", "--data", str(data)
    )
    assert code == 0 and "indexed 0 photos" in out and "18 unchanged" in out


def test_labels_in_dev_set_manifest(tmp_path: Path, fr_set: Path) -> None:
    rows = read_labels(fr_set)
    code, out, _ = run(
        "index", "--people", str(fr_set / "labels.csv"), "--data", str(tmp_path / "d")
    )
    assert code == 0, out
    with Catalogue(tmp_path / "d") as catalogue:
        assert {p.name for p in catalogue.people()} == {r.person for r in rows}
        assert catalogue.stats().photos == len(rows)


def test_reindex_rebuilds_a_deleted_index(indexed: Path, tmp_path: Path) -> None:
    data = copy_data(indexed, tmp_path / "data")
    shutil.rmtree(data / "vectors")
    code, out, _ = run("reindex", "--data", str(data))
    with Catalogue(data) as catalogue:
        faces = catalogue.stats().faces
    assert code == 0 and f"the vector index holds {faces} faces" in out
    assert any((data / "vectors").iterdir())
