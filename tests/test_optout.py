"""Opt-out: a face opted out never matches again, is erased now, and is dropped at ingestion.
Retention: `maintenance` purges old audit entries and orphaned cache files."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from iddetective.catalogue import CATALOG_FILE, Catalogue
from iddetective.cli import main
from iddetective.errors import UsageError

from conftest import WebCatalogue, copy_data


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
    added = runner.invoke(main, ["optout", "add", rose[1], "--data", str(data)])
    assert added.exit_code == 0, added.output
    token = added.output.split()[3].rstrip(";")
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
