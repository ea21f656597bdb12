"""Opt-out: a face opted out never matches again, is erased now (but never faces labelled as
someone else unless the operator says so), and is dropped at ingestion.
Retention: `maintenance` purges old audit entries and orphaned cache files."""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from iddetective.catalogue import CATALOG_FILE, Catalogue
from iddetective.cli import main
from iddetective.entities import OptOut, StoredFace
from iddetective.errors import UsageError
from iddetective.matching.calibration import calibration_for
from iddetective.store.migrations import MIGRATIONS
from iddetective.store.sqlite import SqliteStore

from support.facesets import Labelled, WebCatalogue, copy_data, lfw_subset, write_manifest
from support.terminal import run_in_terminal

pytestmark = pytest.mark.faces


def photos_of(web: WebCatalogue, person: str) -> list[str]:
    return [r.path for r in web.enrolled + web.probes if r.person == person]


def named_matches(catalogue: Catalogue, photo: str) -> set[str]:
    """Names matched (verdict match) by any face of `photo`."""
    result = catalogue.search_photo(photo)
    return {
        m.person.name
        for face in result.faces
        for m in face.matches
        if m.person and m.verdict == "match"
    }


@pytest.fixture()
def opted_out(web_catalogue: WebCatalogue, tmp_path: Path) -> tuple[Catalogue, list[str]]:
    """A copy of the web catalogue where obama opted out with one photo; his other photos."""
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    obama = photos_of(web_catalogue, "obama")
    assert len(obama) == 5
    catalogue = Catalogue(data)
    assert "obama" in named_matches(catalogue, obama[1])  # found before the opt-out
    result = catalogue.add_optout(obama[2])
    assert result.optout.token.startswith("optout_")
    assert len(result.erased.faces) >= 1  # the enrolled photo's face
    return catalogue, [p for p in obama if p != obama[2]]


def test_after_opting_out_no_photo_of_them_matches(
    opted_out: tuple[Catalogue, list[str]], web_catalogue: WebCatalogue
) -> None:
    catalogue, others = opted_out
    for photo in others:
        result = catalogue.search_photo(photo)
        assert result.faces and all(face.verdict == "no_match" for face in result.faces), photo
        assert all(not face.matches for face in result.faces)
    biden = next(p for p in photos_of(web_catalogue, "biden") if p.endswith("biden2.jpg"))
    assert named_matches(catalogue, biden) == {"biden"}  # other people are unaffected
    assert (
        catalogue.store.face_ids_of_people([catalogue.store.resolve_person("obama").id]).size == 0
    )
    catalogue.close()


def test_indexing_their_photos_stores_none_of_their_faces(
    opted_out: tuple[Catalogue, list[str]], tmp_path: Path
) -> None:
    catalogue, others = opted_out
    faces_before = catalogue.stats().faces
    manifest = tmp_path / "obama.csv"
    manifest.write_text("path,person\n" + "".join(f"{p},Barack\n" for p in others))
    report = catalogue.index([], people=str(manifest))
    assert report.indexed + report.no_face + report.unchanged + report.duplicates == len(others)
    assert catalogue.stats().faces == faces_before
    assert all(
        review.reason == "label not applied: a face in this photo is withheld"
        for review in catalogue.reviews()
        if review.photo.paths and review.photo.paths[0] in others
    )
    assert not [p for p in catalogue.people() if p.name == "Barack" and p.faces]
    catalogue.close()


def crowded_optout(catalogue: Catalogue) -> tuple[StoredFace, dict[int, StoredFace]]:
    """A face alone in its photo whose opt-out reaches faces labelled as other people, and
    those faces (by id)."""
    store, index = catalogue.store, catalogue.vector_index()
    every = store.faces(store.face_ids(catalogue.model).tolist())
    per_photo = Counter(f.photo.id for f in every.values())
    for face in every.values():
        if face.person is None or per_photo[face.photo.id] != 1:
            continue
        _, vector = store.embeddings_of(np.array([face.id]))
        (near,) = index.range_search(vector, calibration_for().thresholds.optout)
        others = {
            int(i): every[int(i)]
            for i in near.ids
            if every[int(i)].person not in (None, face.person)
        }
        if others:
            return face, others
    raise AssertionError("no opt-out in this catalogue reaches someone else's face")


def test_an_optout_keeps_faces_labelled_as_someone_else(
    built_catalogue: Callable[[str, list[Labelled], list[str]], Path], tmp_path: Path
) -> None:
    """On lfw_dev's crowded subset, opting one person out reaches faces of other people
    (within the loose opt-out distance): they are listed, and kept unless asked for."""
    subset = lfw_subset()
    source = built_catalogue("lfw_dev", subset.enrol + subset.distractors, [])
    with Catalogue(copy_data(source, tmp_path / "data")) as catalogue:
        face, others = crowded_optout(catalogue)
        result = catalogue.add_optout(face.photo.paths[0])
        assert set(catalogue.store.faces(list(others))) == set(others), "someone else erased"
        assert face.id in result.erased.faces and not catalogue.store.faces([face.id])
        assert {f for g in result.kept for f in g.faces} == set(others)
        assert {g.person for g in result.kept} == {f.person for f in others.values()}
        (entry,) = [e for e in catalogue.audit() if e.kind == "optout_erase"]
        assert (entry.results, entry.people) == (len(result.erased.faces), 1)
        # Told to, the same opt-out takes them too, and the audit says how many people.
        again = catalogue.add_optout(face.photo.paths[0], erase_others=True)
        assert set(again.erased.faces) >= set(others) and not again.kept
        assert not catalogue.store.faces(list(others))
        latest = next(e for e in catalogue.audit() if e.kind == "optout_erase")
        assert latest.people == len({f.person for f in others.values()})


def test_optout_add_shows_what_it_would_erase_and_asks(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    """A face labelled as someone else within reach (here: another photo of obama labelled
    'Barry') is listed as kept; without a terminal the command refuses unless --yes."""
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    obama = photos_of(web_catalogue, "obama")
    manifest = write_manifest(tmp_path / "barry.csv", [Labelled(obama[3], "Barry")])
    with Catalogue(data) as catalogue:
        catalogue.index([], people=str(manifest))
        faces_before = catalogue.stats().faces
    runner = CliRunner()
    refused = runner.invoke(main, ["optout", "add", obama[2], "--data", str(data)])
    assert refused.exit_code == 2 and "pass --yes" in refused.output, refused.output
    assert "obama (p_" in refused.output and "erased: the person opting out" in refused.output
    assert "Barry (p_" in refused.output and "kept: labelled as someone else" in refused.output
    with Catalogue(data) as catalogue:
        assert catalogue.stats().faces == faces_before and catalogue.optouts() == []
    declined = run_in_terminal(["optout", "add", obama[2], "--data", str(data)], "n")
    assert declined.exit_code == 1 and "[y/N]" in declined.terminal, declined
    with Catalogue(data) as catalogue:
        assert catalogue.optouts() == []
    done = run_in_terminal(["optout", "add", obama[2], "--data", str(data)], "y")
    assert done.exit_code == 0, done
    assert "erased 1 faces (1 people's, 0 unnamed)" in done.stdout
    assert "kept 1 faces of 1 people labelled as someone else" in done.stdout
    with Catalogue(data) as catalogue:
        _, faces = catalogue.person("Barry")
        assert len(faces) == 1 and catalogue.person("obama")[1] == []
    logged = runner.invoke(main, ["audit", "--data", str(data)])
    (row,) = [line for line in logged.output.splitlines() if "optout_erase" in line]
    assert "1 (1 people)" in row


def test_an_optout_photo_must_show_one_face(web_catalogue: WebCatalogue, tmp_path: Path) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    group = Path(web_catalogue.enrolled[0].path).parent.parent / "multi" / "obama_and_biden.jpg"
    with Catalogue(data) as catalogue:
        with pytest.raises(UsageError, match=r"exactly one face; it shows \d+ faces"):
            catalogue.add_optout(str(group))
        assert catalogue.optouts() == []


def test_optout_commands_list_and_withdraw(web_catalogue: WebCatalogue, tmp_path: Path) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    runner = CliRunner()
    rose = photos_of(web_catalogue, "rose_leslie")
    added = runner.invoke(main, ["optout", "add", rose[1], "--yes", "--data", str(data)])
    assert added.exit_code == 0, added.output
    token = added.output.split("opted out as ")[1].split(";")[0]
    listed = runner.invoke(main, ["optout", "list", "--data", str(data)])
    assert token in listed.output
    removed = runner.invoke(main, ["optout", "remove", token, "--data", str(data)])
    assert removed.exit_code == 0 and token in removed.output
    again = runner.invoke(main, ["optout", "remove", token, "--data", str(data)])
    assert again.exit_code == 1 and "no opt-out" in again.output
    with Catalogue(data) as catalogue:
        kinds = [e.kind for e in catalogue.audit(limit=10)]
        assert {"optout", "optout_erase", "optout_removed"} <= set(kinds)
        assert all(e.query_text is None or "rose" not in e.query_text for e in catalogue.audit())


def test_opt_outs_made_before_several_faces_per_token_survive_the_migration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.sqlite"
    with sqlite3.connect(path) as db:
        for script in MIGRATIONS[:5]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 5")
        blocked = (np.ones(128) / np.sqrt(128)).astype("<f4")
        db.execute(
            "INSERT INTO optout (token, model, embedding, created_at) VALUES (?, ?, ?, ?)",
            ("optout_old", "m", blocked.tobytes(), "2024-01-01T00:00:00+00:00"),
        )
    db.close()
    store = SqliteStore(path)
    assert store.optouts() == [OptOut("optout_old", "2024-01-01T00:00:00+00:00", 1)]
    assert np.array_equal(store.optout_embeddings("m"), blocked[None])
    store.close()


def test_the_blocked_embedding_is_never_shown(opted_out: tuple[Catalogue, list[str]]) -> None:
    catalogue, _ = opted_out
    shown = catalogue.optouts()
    assert len(shown) == 1 and set(vars(shown[0])) == {"token", "created_at", "faces"}
    catalogue.close()


def test_maintenance_purges_old_audit_entries_and_orphans(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    with sqlite3.connect(data / CATALOG_FILE) as db:
        db.execute(
            "INSERT INTO audit (at, actor, kind, results) "
            "VALUES ('2020-01-01T00:00:00+00:00', 'cli', 'text', 0)"
        )
    orphan = data / "media" / "face" / "999" / "123456999.jpg"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    stale = data / "uploads" / "ab" / ".abc.jpg.1.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    with Catalogue(data) as catalogue:
        catalogue.find("obama")  # a fresh entry, which stays
        report = catalogue.maintenance(audit_days=30)
        assert (report.audit_entries, report.media_files, report.partial_files) == (1, 1, 1)
        kept = catalogue.audit()
        assert kept[0].kind == "text" and kept[0].query_text == "obama"
        assert all(not e.at.startswith("2020") for e in kept)
    assert not orphan.exists() and not stale.exists()
    refused = CliRunner().invoke(main, ["maintenance", "--audit-days", "0", "--data", str(data)])
    assert refused.exit_code == 2
