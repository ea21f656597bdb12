"""Erasing a person leaves no trace: rows, embeddings, index entries, crops, bytes on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from fastapi.testclient import TestClient

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.web import ServerSettings, create_app

from conftest import WebCatalogue, copy_data


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def files_holding(root: Path, needle: bytes) -> list[Path]:
    """Files under `root` whose bytes contain `needle`."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_erase_over_the_api_leaves_no_trace(web_catalogue: WebCatalogue, tmp_path: Path) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    with Catalogue(data) as catalogue:
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
        erased = client.delete(f"/api/people/{person.id}", headers=admin)
        assert erased.status_code == 200, erased.text
        token = erased.json()["token"]
        assert erased.json()["faces"] == len(faces)
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
    with Catalogue(data) as catalogue:
        assert catalogue.stats().faces == others_before
        held = set(catalogue.vector_index().ids().tolist())
        assert held and not held & {f.id for f in faces}
    assert not files_holding(data, b"biden"), "the name or a path naming them is still stored"
    for vector in vectors:
        assert not files_holding(data, vector.astype("<f4").tobytes()), "an embedding is left"
    assert not list((data / "media").rglob(f"{faces[0].id}.jpg"))


def test_erase_command_asks_first_and_keeps_other_people(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    runner = CliRunner()
    declined = runner.invoke(main, ["erase", "obama", "--data", str(data)], input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    with Catalogue(data) as catalogue:
        people_before = {p.name for p in catalogue.people()}
    assert "obama" in people_before
    erased = runner.invoke(main, ["erase", "obama", "--yes", "--data", str(data)])
    assert erased.exit_code == 0, erased.output
    assert "names this erasure erase_" in erased.output
    with Catalogue(data) as catalogue:
        assert {p.name for p in catalogue.people()} == people_before - {"obama"}
    missing = runner.invoke(main, ["erase", "obama", "--yes", "--data", str(data)])
    assert missing.exit_code == 1 and "no person" in missing.output


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
