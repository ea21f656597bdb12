"""Erasing a person leaves no trace: rows, embeddings, index entries, crops, their unnamed
look-alikes, mentions in the audit log and review notes, bytes on disk; and re-indexing the
operator's files afterwards never gives their name to anyone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.web import ServerSettings, create_app

from support.facesets import Labelled, WebCatalogue, copy_data, write_manifest
from support.terminal import run_in_terminal

pytestmark = pytest.mark.faces


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def files_holding(root: Path, needle: bytes) -> list[Path]:
    """Files under `root` whose bytes contain `needle` (in any case)."""
    return [p for p in root.rglob("*") if p.is_file() and needle.lower() in p.read_bytes().lower()]


def group_photo(web: WebCatalogue, folder: Path) -> Path:
    """A copy of the face_recognition set's photo of three people (obama, biden, a third) at
    a path that names nobody."""
    images = Path(web.enrolled[0].path).parent.parent
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(images / "multi" / "obama_and_biden.jpg", folder / "group.jpg"))


def test_erase_over_the_api_leaves_no_trace(web_catalogue: WebCatalogue, tmp_path: Path) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    labelled = write_manifest(
        tmp_path / "group.csv", [Labelled(str(group_photo(web_catalogue, tmp_path)), "biden")]
    )
    with Catalogue(data) as catalogue:
        catalogue.index([], people=str(labelled))  # a review note naming them: 3 faces
        assert any("biden" in r.reason for r in catalogue.reviews())
        person, faces = catalogue.person("biden")
        _, vectors = catalogue.store.embeddings_of(np.array([f.id for f in faces]))
        others_before = catalogue.stats().faces - len(faces)
    probe = next(p for p in web_catalogue.probes if p.person == "biden")
    with TestClient(create_app(ServerSettings(data, analysis_workers=0))) as client:
        admin, search = bearer(web_catalogue.keys["admin"]), bearer(web_catalogue.keys["search"])
        crop = client.get(f"/api/faces/{faces[0].id}/crop", headers=search)
        assert crop.status_code == 200
        for role in ("search", "ingest"):
            refused = client.delete(
                f"/api/people/{person.id}", headers=bearer(web_catalogue.keys[role])
            )
            assert refused.status_code == 403
        assert client.delete(f"/api/people/{person.id}").status_code == 401
        # Searches that name them, as text, as a query, and on the people page.
        assert client.get("/api/find", params={"q": "Biden"}, headers=search).status_code == 200
        queried = client.post("/api/query", data={"q": 'name:"biden" has:face'}, headers=search)
        assert queried.status_code == 200, queried.text
        client.post("/login", data={"key": web_catalogue.keys["search"]})
        assert client.get("/people", params={"q": "bIdEn"}).status_code == 200
        client.cookies.clear()
        erased = client.delete(f"/api/people/{person.id}", headers=admin)
        assert erased.status_code == 200, erased.text
        token, unnamed = erased.json()["token"], erased.json()["unnamed"]
        assert erased.json()["faces"] == len(faces) + unnamed
        again = client.delete(f"/api/people/{person.id}", headers=admin)
        assert again.status_code == 404
        found = client.post(
            "/api/search",
            headers=search,
            files={"photo": ("b.jpg", Path(probe.path).read_bytes(), "image/jpeg")},
        ).json()
        named = {m["person"]["name"] for f in found["faces"] for m in f["matches"] if m["person"]}
        assert "biden" not in named and all(
            m["person"] is not None or m["verdict"] == "no_match"
            for f in found["faces"]
            for m in f["matches"]
        )
        audit = client.get("/api/audit", headers=admin).json()["items"]
    erasures = [e for e in audit if e["kind"] == "erase"]
    assert [e["query_text"] for e in erasures] == [token]
    assert (erasures[0]["results"], erasures[0]["people"]) == (len(faces) + unnamed, 1)
    texts = [e["query_text"] for e in audit if e["kind"] in ("text", "query")]
    assert len(texts) == 3 and all(
        t == f"redacted at {token}: it named an erased person" for t in texts
    )
    with Catalogue(data) as catalogue:
        assert not [r for r in catalogue.reviews() if "biden" in r.reason.lower()]
        assert catalogue.stats().faces == others_before - unnamed
        held = set(catalogue.vector_index().ids().tolist())
        assert held and not held & {f.id for f in faces}
    assert (data / "catalog.sqlite").exists()
    assert not files_holding(data, b"biden"), "the name or a path naming them is still stored"
    for vector in vectors:
        assert not files_holding(data, vector.astype("<f4").tobytes()), "an embedding is left"
    assert not list((data / "media").rglob(f"{faces[0].id}.jpg"))


def test_erase_command_asks_first_and_keeps_other_people(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    runner = CliRunner()
    with Catalogue(data) as catalogue:
        people_before = {p.name for p in catalogue.people()}
    assert "obama" in people_before
    unattended = runner.invoke(main, ["erase", "obama", "--data", str(data)])
    assert unattended.exit_code == 2 and "pass --yes" in unattended.output
    assert "obama (p_" in unattended.output and "1 faces" in unattended.output
    declined = run_in_terminal(["erase", "obama", "--data", str(data)], "n")
    assert declined.exit_code == 1, declined
    assert "for good? [y/N]" in declined.terminal and "Aborted" in declined.terminal
    with Catalogue(data) as catalogue:
        assert {p.name for p in catalogue.people()} == people_before
    accepted = run_in_terminal(["erase", "obama", "--data", str(data)], "y")
    assert accepted.exit_code == 0, accepted
    assert "names this erasure erase_" in accepted.stdout
    assert "your photo files are not touched" in accepted.stdout
    with Catalogue(data) as catalogue:
        assert {p.name for p in catalogue.people()} == people_before - {"obama"}
    missing = runner.invoke(main, ["erase", "obama", "--yes", "--data", str(data)])
    assert missing.exit_code == 1 and "no person" in missing.output


def test_reindexing_after_erase_gives_their_name_to_nobody(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    """Erase obama, then index the same folder and manifest again: the label of the group
    photo (kept for the other faces) must not go to a bystander, nor obama's come back."""
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    group = group_photo(web_catalogue, tmp_path / "photos")
    rows = [*web_catalogue.enrolled, Labelled(str(group), "obama")]
    manifest = str(write_manifest(tmp_path / "people.csv", rows))
    runner = CliRunner()
    assert runner.invoke(main, ["index", "--people", manifest, "--data", str(data)]).exit_code == 0
    with Catalogue(data) as catalogue:
        _, faces = catalogue.person("obama")
        assert sorted(f.photo.paths[0] for f in faces) == sorted(
            [str(group), *(r.path for r in web_catalogue.enrolled if r.person == "obama")]
        )
    erased = runner.invoke(main, ["erase", "obama", "--yes", "--data", str(data)])
    assert erased.exit_code == 0, erased.output
    again = runner.invoke(main, ["index", "--people", manifest, "--data", str(data)])
    assert again.exit_code == 0, again.output
    with Catalogue(data) as catalogue:
        assert "obama" not in {p.name for p in catalogue.people()}
        in_group = [
            f
            for f in catalogue.store.faces(
                catalogue.store.face_ids(catalogue.model).tolist()
            ).values()
            if f.photo.paths == (str(group),)
        ]
        assert len(in_group) == 2 and all(f.person is None for f in in_group)
        refused = {r.photo.paths[0]: r.reason for r in catalogue.reviews() if r.photo.paths}
    token = erased.output.split("names this erasure ")[1].split()[0]
    obama_photo = next(r.path for r in web_catalogue.enrolled if r.person == "obama")
    for path in (str(group), obama_photo):
        assert refused[path] == f"label not applied: it names a person who was erased ({token})"


def test_erase_takes_their_unnamed_faces(web_catalogue: WebCatalogue, tmp_path: Path) -> None:
    """Photos of biden uploaded without a name are erased with him: a search with his photo
    lists no unnamed match afterwards."""
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    biden2 = next(p.path for p in web_catalogue.probes if p.path.endswith("biden2.jpg"))
    group = group_photo(web_catalogue, tmp_path)
    with TestClient(create_app(ServerSettings(data, analysis_workers=0))) as client:
        ingest = bearer(web_catalogue.keys["ingest"])
        for path in (biden2, group):
            sent = {"photo": (Path(path).name, Path(path).read_bytes(), "image/jpeg")}
            assert client.post("/api/photos", headers=ingest, files=sent).status_code == 201
    with Catalogue(data) as catalogue:
        before = catalogue.search_photo(biden2)
        unnamed = {
            hit.face_id
            for face in before.faces
            for m in face.matches
            if m.person is None
            for hit in m.photos
            if hit.distance <= catalogue.thresholds.match
        }
        assert len(unnamed) == 2  # his uploaded face, and his face in the group photo
        preview = catalogue.preview_erasure("biden")
        assert set(preview.unnamed) == unnamed
        erasure = catalogue.erase_person(preview)
        assert erasure.unnamed == 2 and set(erasure.faces) >= unnamed
        after = catalogue.search_photo(biden2)
        assert all(
            m.person is not None or m.verdict == "no_match" for f in after.faces for m in f.matches
        )
        assert not catalogue.store.faces(sorted(unnamed))
        assert catalogue.stats().photos_without_face == 0
    assert not list((data / "uploads").rglob("biden2*")), "our copy of the upload is left"


def test_erase_with_optout_keeps_them_out_of_a_reindex(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    runner = CliRunner()
    erased = runner.invoke(main, ["erase", "biden", "--yes", "--optout", "--data", str(data)])
    assert erased.exit_code == 0, erased.output
    assert "opted their faces out as optout_" in erased.output
    listed = runner.invoke(main, ["optout", "list", "--data", str(data)])
    assert listed.output.count("optout_") == 1 and "1 faces" in listed.output
    biden = [r for r in web_catalogue.enrolled + web_catalogue.probes if r.person == "biden"]
    manifest = write_manifest(tmp_path / "biden.csv", biden)
    with Catalogue(data) as catalogue:
        faces = catalogue.stats().faces
        catalogue.index([], people=str(manifest))
        assert catalogue.stats().faces == faces  # none of his faces is stored again
        assert "biden" not in {p.name for p in catalogue.people()}
        result = catalogue.search_photo(biden[-1].path)
        assert all(not f.matches for f in result.faces)


def test_only_admins_see_the_erase_button(web_catalogue: WebCatalogue, tmp_path: Path) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    with Catalogue(data) as catalogue:
        person, _ = catalogue.person("biden")
    with TestClient(create_app(ServerSettings(data, analysis_workers=0))) as client:
        for role, shown in (("admin", True), ("search", False)):
            client.cookies.clear()
            client.post("/login", data={"key": web_catalogue.keys[role]})
            page = client.get(f"/people/{person.id}").text
            assert ('id="erase"' in page) is shown and ("person.js" in page) is shown
