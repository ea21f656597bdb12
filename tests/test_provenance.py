"""Provenance: every photo and person records where it came from, who added it, on what basis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.web import ServerSettings, create_app

from support.facesets import WebCatalogue, copy_data, read_labels, require_set

pytestmark = pytest.mark.faces


def test_index_records_who_and_on_what_basis(tmp_path: Path) -> None:
    rows = read_labels(require_set("face_recognition"))
    rose = [r for r in rows if r.person == "rose_leslie"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,person\n" + "".join(f"{r.path},Rose\n" for r in rose))
    result = CliRunner().invoke(
        main,
        [
            "index",
            "--people",
            str(manifest),
            "--basis",
            "press accreditation",
            "--data",
            str(tmp_path / "d"),
        ],
    )
    assert result.exit_code == 0, result.output
    with Catalogue(tmp_path / "d") as catalogue:
        person, faces = catalogue.person("Rose")
        origin = catalogue.profile(person.id).provenance
        assert origin.source.startswith("label of ") and origin.source.endswith(
            tuple(Path(r.path).name for r in rose)
        )
        assert (origin.added_by, origin.basis) == ("cli", "press accreditation")
        photos = catalogue.photo_provenance([f.photo.id for f in faces])
        assert {p.source for p in photos.values()} == {r.path for r in rose}
        assert {(p.added_by, p.basis) for p in photos.values()} == {("cli", "press accreditation")}


def test_import_records_file_line_and_the_row_basis(tmp_path: Path) -> None:
    rows = read_labels(require_set("face_recognition"))
    kit = next(r for r in rows if r.person == "kit_harington")
    source = tmp_path / "people.jsonl"
    source.write_text(
        json.dumps({"id": "1", "name": "Kit", "photos": [kit.path], "basis": "contract"})
        + "\n"
        + json.dumps({"id": "2", "name": "Rose"})
        + "\n"
    )
    with Catalogue(tmp_path / "d", create=True) as catalogue:
        catalogue.import_file(str(source), basis="staff directory")
        kit_profile = catalogue.profile("Kit")
        assert kit_profile.provenance.source == f"{source}:1"
        assert (kit_profile.provenance.added_by, kit_profile.provenance.basis) == (
            "cli",
            "contract",
        )
        assert catalogue.profile("Rose").provenance.basis == "staff directory"
        _, faces = catalogue.person("Kit")
        (photo,) = catalogue.photo_provenance([faces[0].photo.id]).values()
        assert (photo.source, photo.basis) == (f"{source}:1", "contract")


def test_uploads_record_the_key_and_basis_and_the_page_shows_them(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    stranger = Path(web_catalogue.strangers[0].path)
    with TestClient(create_app(ServerSettings(data, analysis_workers=0))) as client:
        key = web_catalogue.keys["admin"]
        headers = {"Authorization": f"Bearer {key}"}
        stored = client.post(
            "/api/photos",
            headers=headers,
            files={"photo": ("lin.png", stranger.read_bytes(), "image/png")},
            data={"person": "Lin", "basis": "event registration consent"},
        )
        assert stored.status_code == 201, stored.text
        person = client.get("/api/find?q=Lin", headers=headers).json()["items"][0]["person"]
        detail = client.get(f"/api/people/{person['id']}", headers=headers).json()
        origin = detail["faces"]["items"][0]["provenance"]
        key_id = key.split("_")[1]
        assert origin == {
            "source": "upload of lin.png",
            "added_by": f"key:{key_id}",
            "basis": "event registration consent",
        }
        assert detail["provenance"]["source"] == "label of upload of lin.png"
        client.post("/login", data={"key": key})
        page = client.get(f"/people/{person['id']}").text
        assert "event registration consent" in page and "upload of lin.png" in page
