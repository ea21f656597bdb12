"""The HTTP API in-process: every endpoint against every role, errors, audit, uploads, media."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from iddetective.access import ROLES
from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.errors import UsageError
from iddetective.faces.pipeline import PipelineSettings
from iddetective.web import ServerSettings, create_app, first_admin_key
from iddetective.web.analysis import AnalysisPool, Busy

from support.facesets import WebCatalogue, copy_data

pytestmark = pytest.mark.faces


@pytest.fixture(scope="module")
def site(
    web_catalogue: WebCatalogue, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, WebCatalogue]]:
    """One app over a private copy of the web catalogue, shared by the read-mostly tests."""
    data = copy_data(web_catalogue.data_dir, tmp_path_factory.mktemp("api") / "data")
    app = create_app(ServerSettings(data, analysis_workers=0, broker=None))
    with TestClient(app) as client:
        yield client, web_catalogue


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def photo_file(path: str) -> dict[str, tuple[str, bytes, str]]:
    # Always "image/jpeg": the server sniffs the content and must not trust the header.
    return {"photo": (Path(path).name, Path(path).read_bytes(), "image/jpeg")}


def a_person_and_face(client: TestClient, key: str) -> tuple[str, int, str]:
    """(person id, one of their face ids, that face's photo SHA-256)."""
    people = client.get("/api/people", headers=bearer(key)).json()["items"]
    person = next(p for p in people if p["faces"])
    face = client.get(f"/api/people/{person['id']}", headers=bearer(key)).json()["faces"]
    first = face["items"][0]
    return person["id"], first["face_id"], first["sha256"]


# -- every endpoint against every role --------------------------------------------------------

ALLOWED = {
    "search": {"admin", "search"},
    "ingest": {"admin", "ingest"},
    "stats": {"admin", "search", "ingest"},
    "admin": {"admin"},
}


def call(client: TestClient, endpoint: str, key: str | None, web: WebCatalogue) -> int:
    """Call one endpoint with `key`; returns the status."""
    headers = bearer(key)
    admin = web.keys["admin"]
    person, face, sha = a_person_and_face(client, admin)
    probe = web.probes[0].path
    requests = {
        "POST /api/search": lambda: client.post(
            "/api/search", headers=headers, files=photo_file(probe)
        ),
        "GET /api/people": lambda: client.get("/api/people", headers=headers),
        "GET /api/find": lambda: client.get("/api/find?q=o", headers=headers),
        "POST /api/query": lambda: client.post(
            "/api/query", headers=headers, data={"q": "has:face"}
        ),
        "GET /api/people/{id}": lambda: client.get(f"/api/people/{person}", headers=headers),
        "GET thumbnail": lambda: client.get(f"/api/photos/{sha}/thumbnail", headers=headers),
        "GET crop": lambda: client.get(f"/api/faces/{face}/crop", headers=headers),
        "POST /api/photos": lambda: client.post(
            "/api/photos", headers=headers, files=photo_file(probe)
        ),
        "GET /api/stats": lambda: client.get("/api/stats", headers=headers),
        "GET /api/keys": lambda: client.get("/api/keys", headers=headers),
        "POST /api/keys": lambda: client.post(
            "/api/keys", headers=headers, json={"role": "search"}
        ),
        "DELETE /api/keys/{id}": lambda: client.delete(
            f"/api/keys/{_new_key_id(client, admin)}", headers=headers
        ),
        "GET /api/audit": lambda: client.get("/api/audit", headers=headers),
        "GET /metrics": lambda: client.get("/metrics", headers=headers),
    }
    return requests[endpoint]().status_code


def _new_key_id(client: TestClient, admin: str) -> str:
    created = client.post("/api/keys", headers=bearer(admin), json={"role": "search"})
    return str(created.json()["id"])


ENDPOINTS = {
    "POST /api/search": "search",
    "GET /api/people": "search",
    "GET /api/find": "search",
    "POST /api/query": "search",
    "GET /api/people/{id}": "search",
    "GET thumbnail": "search",
    "GET crop": "search",
    "POST /api/photos": "ingest",
    "GET /api/stats": "stats",
    "GET /api/keys": "admin",
    "POST /api/keys": "admin",
    "DELETE /api/keys/{id}": "admin",
    "GET /api/audit": "admin",
    "GET /metrics": "admin",
}


@pytest.mark.parametrize("role", [*ROLES, None])
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_every_endpoint_allows_exactly_its_roles(
    site: tuple[TestClient, WebCatalogue], endpoint: str, role: str | None
) -> None:
    client, web = site
    status = call(client, endpoint, web.keys[role] if role else None, web)
    if role is None:
        assert status == 401
    elif role in ALLOWED[ENDPOINTS[endpoint]]:
        assert status in (200, 201)
    else:
        assert status == 403


@pytest.mark.parametrize("role", [*ROLES, None])
@pytest.mark.parametrize(
    ("page", "action"),
    [
        ("/", "search"),
        ("/people", "search"),
        ("/query", "search"),
        ("/people/{person}", "search"),
        ("/admin", "admin"),
    ],
)
def test_pages_allow_exactly_their_roles(
    site: tuple[TestClient, WebCatalogue], page: str, action: str, role: str | None
) -> None:
    client, web = site
    page = page.format(person=a_person_and_face(client, web.keys["admin"])[0])
    client.cookies.clear()
    if role:
        login = client.post("/login", data={"key": web.keys[role]}, follow_redirects=False)
        assert login.status_code == 303
    answer = client.get(page, follow_redirects=False, headers={"accept": "text/html"})
    client.cookies.clear()
    if role is None:
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    elif role in ALLOWED[action]:
        assert answer.status_code == 200 and "<main>" in answer.text
    else:
        assert answer.status_code == 403 and "may not" in answer.text


def test_health_needs_no_key(site: tuple[TestClient, WebCatalogue]) -> None:
    client, _ = site
    assert client.get("/healthz").json() == {"status": "ok"}


# -- every view of faces is audited, once ------------------------------------------------------


def new_key(client: TestClient, web: WebCatalogue, role: str) -> tuple[str, str]:
    """A fresh key (nothing shown to it yet) and how the audit log names it."""
    created = client.post("/api/keys", headers=bearer(web.keys["admin"]), json={"role": role})
    return str(created.json()["key"]), f"key:{created.json()['id']}"


def audit_of(client: TestClient, web: WebCatalogue, actor: str) -> list[tuple[str, str, int]]:
    """(kind, what: the query text or photo, results) of `actor`'s audit entries, oldest first."""
    entries = client.get("/api/audit?limit=1000", headers=bearer(web.keys["admin"])).json()
    return [
        (e["kind"], e["query_text"] or e["query_sha256"], e["results"])
        for e in reversed(entries["items"])
        if e["actor"] == actor
    ]


def test_every_view_of_a_persons_faces_is_audited_once(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    key, actor = new_key(client, web, "search")
    person, _, _ = a_person_and_face(client, web.keys["admin"])
    client.cookies.clear()
    client.post("/login", data={"key": key}, follow_redirects=False)
    page = client.get(f"/people/{person}").text
    crops = re.findall(r'src="(/api/faces/\d+/crop)"', page)
    thumbnails = re.findall(r'href="(/api/photos/[0-9a-f]{64}/thumbnail\?size=1024)"', page)
    assert crops and len(thumbnails) == len(crops)
    for url in crops + thumbnails:  # what the page shows, as a browser fetches it
        assert client.get(url).status_code == 200
    client.cookies.clear()
    assert audit_of(client, web, actor) == [("view", f"person {person}", len(crops))]

    detail = client.get(f"/api/people/{person}", headers=bearer(key)).json()
    for item in detail["faces"]["items"]:
        client.get(f"/api/faces/{item['face_id']}/crop", headers=bearer(key))
        client.get(f"/api/photos/{item['sha256']}/thumbnail", headers=bearer(key))
    shown = len(detail["faces"]["items"])
    assert audit_of(client, web, actor)[1:] == [("view", f"person {person}", shown)]

    others = [p for p in client.get("/api/people", headers=bearer(key)).json()["items"]]
    other = next(p["id"] for p in others if p["id"] != person and p["faces"])
    first = client.get(f"/api/people/{other}", headers=bearer(web.keys["admin"])).json()
    face, sha = first["faces"]["items"][0]["face_id"], first["faces"]["items"][0]["sha256"]
    for _ in range(2):  # fetched by id: a view of its own, audited once
        assert client.get(f"/api/faces/{face}/crop", headers=bearer(key)).status_code == 200
        assert client.get(f"/api/photos/{sha}/thumbnail", headers=bearer(key)).status_code == 200
    assert audit_of(client, web, actor)[2:] == [
        ("view", f"face {face}", 1),
        ("view", f"photo {sha}", 1),
    ]


def test_a_persons_faces_come_a_page_at_a_time(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    key = bearer(web.keys["admin"])
    people = client.get("/api/people?limit=200", headers=key).json()["items"]
    most = max(people, key=lambda p: p["faces"])
    assert most["faces"] >= 1  # the store's contract suite pages longer lists
    url = f"/api/people/{most['id']}"
    whole = client.get(f"{url}?limit=200", headers=key).json()
    pages = [
        client.get(f"{url}?limit=1&offset={start}", headers=key).json()
        for start in range(most["faces"] + 1)
    ]
    assert [i for page in pages for i in page["faces"]["items"]] == whole["faces"]["items"]
    assert len(whole["faces"]["items"]) == whole["faces"]["total"] == most["faces"]
    assert {(p["faces"]["total"], p["photos"]) for p in pages} == {
        (most["faces"], whole["photos"])
    }
    assert whole["photos"] == len({i["sha256"] for i in whole["faces"]["items"]})


def test_the_crops_of_a_searchs_matches_are_not_audited_again(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    key, actor = new_key(client, web, "search")
    probe = next(p for p in web.probes if p.person == "biden")
    result = client.post("/api/search", headers=bearer(key), files=photo_file(probe.path)).json()
    hits = [h["face_id"] for f in result["faces"] for m in f["matches"] for h in m["photos"]]
    assert hits
    for face in hits:
        assert client.get(f"/api/faces/{face}/crop", headers=bearer(key)).status_code == 200
    sha = hashlib.sha256(Path(probe.path).read_bytes()).hexdigest()
    assert [(kind, what) for kind, what, _ in audit_of(client, web, actor)] == [("photo", sha)]


# -- keys, sessions, CSRF -----------------------------------------------------------------------


def test_wrong_malformed_and_revoked_keys_get_401(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    admin = bearer(web.keys["admin"])
    created = client.post("/api/keys", headers=admin, json={"role": "search", "label": "x"}).json()
    assert client.get("/api/stats", headers=bearer(created["key"])).status_code == 200
    assert client.delete(f"/api/keys/{created['id']}", headers=admin).json()["revoked_at"]
    revoked = client.get("/api/stats", headers=bearer(created["key"]))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]
    assert revoked.headers["www-authenticate"] == "Bearer"
    forged = created["key"][:-4] + "AAAA"
    assert client.get("/api/stats", headers=bearer(forged)).status_code == 401
    basic = client.get("/api/stats", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401 and "Bearer" in basic.json()["error"]["message"]
    listed = {k["id"]: k for k in client.get("/api/keys", headers=admin).json()}
    assert listed[created["id"]]["revoked_at"] and "key" not in listed[created["id"]]


def test_cookie_sessions_need_the_csrf_token_to_change_things(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    client.cookies.clear()
    client.post("/login", data={"key": web.keys["admin"]}, follow_redirects=False)
    page = client.get("/admin").text
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    refused = client.post("/api/keys", json={"role": "search"})
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    accepted = client.post("/api/keys", json={"role": "search"}, headers={"X-CSRF-Token": token})
    assert accepted.status_code == 201
    assert client.get("/api/stats").status_code == 200  # reading needs no token
    client.post("/logout")
    client.cookies.clear()
    assert client.get("/api/stats").status_code == 401


def test_login_refuses_bad_keys_and_foreign_redirects(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    client.cookies.clear()
    bad = client.post("/login", data={"key": "idd_nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "API key" in bad.text
    good = client.post(
        "/login",
        data={"key": web.keys["search"], "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert good.status_code == 303 and good.headers["location"] == "/"
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    client.cookies.clear()


def test_revoking_a_key_ends_its_page_sessions(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    admin = bearer(web.keys["admin"])
    created = client.post("/api/keys", headers=admin, json={"role": "search"}).json()
    client.cookies.clear()
    client.post("/login", data={"key": created["key"]}, follow_redirects=False)
    assert client.get("/", follow_redirects=False).status_code == 200
    client.delete(f"/api/keys/{created['id']}", headers=admin)
    assert client.get("/", follow_redirects=False).status_code == 303
    client.cookies.clear()


# -- searching and the audit log --------------------------------------------------------------


def test_photo_search_finds_the_person_and_is_audited(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    probe = next(p for p in web.probes if p.person == "biden")
    answer = client.post(
        "/api/search", headers=bearer(web.keys["search"]), files=photo_file(probe.path)
    )
    result = answer.json()
    assert answer.status_code == 200 and result["schema"] == "iddetective/search/v1"
    best = result["faces"][0]["matches"][0]
    assert best["person"]["name"] == "biden" and best["verdict"] == "match"
    sha = hashlib.sha256(Path(probe.path).read_bytes()).hexdigest()
    assert result["query"]["sha256"] == sha and result["query"]["path"] is None
    entries = client.get("/api/audit?limit=5", headers=bearer(web.keys["admin"])).json()["items"]
    mine = next(e for e in entries if e["query_sha256"] == sha)
    search_key_id = web.keys["search"].split("_")[1]
    assert mine["kind"] == "photo" and mine["actor"] == f"key:{search_key_id}"
    assert mine["results"] >= 1 and mine["query_text"] is None


def test_stranger_gets_no_match(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    answer = client.post(
        "/api/search", headers=bearer(web.keys["search"]), files=photo_file(web.strangers[0].path)
    )
    assert [face["verdict"] for face in answer.json()["faces"]] == ["no_match"]


def test_text_search_is_audited_and_paginated(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    key = bearer(web.keys["search"])
    found = client.get("/api/find?q=BID", headers=key).json()
    assert [(f["person"]["name"], f["field"], f["rank"]) for f in found["items"]] == [
        ("biden", "name", 1)
    ]
    entries = client.get("/api/audit?limit=3", headers=bearer(web.keys["admin"])).json()["items"]
    assert any(
        e["kind"] == "text" and e["query_text"] == "BID" and e["results"] == 1 for e in entries
    )
    everyone = client.get("/api/people?limit=2", headers=key).json()
    rest = client.get("/api/people?limit=2&offset=2", headers=key).json()
    assert len(everyone["items"]) == 2 and everyone["total"] == len(web.enrolled)
    assert not {p["id"] for p in everyone["items"]} & {p["id"] for p in rest["items"]}


def test_audit_pages_go_back_in_time(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    for text in ("ob", "ki", "ro"):
        client.get(f"/api/find?q={text}", headers=bearer(web.keys["search"]))
    admin = bearer(web.keys["admin"])
    first = client.get("/api/audit?limit=2", headers=admin).json()
    second = client.get(f"/api/audit?limit=2&before={first['next_before']}", headers=admin).json()
    ids = [e["id"] for e in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 4


def test_search_filtered_to_people(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    probe = next(p for p in web.probes if p.person == "biden")
    answer = client.post(
        "/api/search?person=obama",
        headers=bearer(web.keys["search"]),
        files=photo_file(probe.path),
    ).json()
    names = {m["person"]["name"] for f in answer["faces"] for m in f["matches"] if m["person"]}
    assert names <= {"obama"}
    unknown = client.post(
        "/api/search?person=nobody-at-all",
        headers=bearer(web.keys["search"]),
        files=photo_file(probe.path),
    )
    assert unknown.status_code == 404 and "nobody-at-all" in unknown.json()["error"]["message"]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"", 400, "bad_request"),
        (b"GIF89a this is not really a gif", 422, "bad_image"),
        (b"%PDF-1.4 not a photo at all", 422, "bad_image"),
    ],
)
def test_bad_uploads_get_specific_errors(
    site: tuple[TestClient, WebCatalogue], payload: bytes, status: int, code: str
) -> None:
    client, web = site
    for url, key in (("/api/search", "search"), ("/api/photos", "ingest")):
        answer = client.post(
            url, headers=bearer(web.keys[key]), files={"photo": ("x.jpg", payload, "image/jpeg")}
        )
        assert answer.status_code == status, answer.text
        assert (
            answer.json()["error"]["code"] == code and "x.jpg" in answer.json()["error"]["message"]
        )


def test_missing_or_wrong_parameters_are_422_with_a_reason(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    key = bearer(web.keys["admin"])
    missing = client.post("/api/search", headers=key)
    assert missing.status_code == 422 and "photo" in missing.json()["error"]["message"]
    top = client.post("/api/search?top=0", headers=key, files=photo_file(web.probes[0].path))
    assert top.status_code == 422 and "top" in top.json()["error"]["message"]
    sha = client.get("/api/photos/not-a-sha/thumbnail", headers=key)
    assert sha.status_code == 422
    gone = client.get(f"/api/photos/{'0' * 64}/thumbnail", headers=key)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert client.get("/api/faces/999999999/crop", headers=key).status_code == 404
    role = client.post("/api/keys", headers=key, json={"role": "root"})
    assert role.status_code == 422
    assert client.get("/no/such/page").json()["error"]["code"] == "not_found"


def test_upload_over_the_limit_is_413_and_stores_nothing(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    app = create_app(ServerSettings(data, analysis_workers=0, max_upload_bytes=10_000, broker=None))
    with TestClient(app) as client:
        key = bearer(web_catalogue.keys["ingest"])
        before = client.get("/api/stats", headers=key).json()
        answer = client.post(
            "/api/photos", headers=key, files=photo_file(web_catalogue.probes[0].path)
        )
        assert answer.status_code == 413 and "10,000" in answer.json()["error"]["message"]
        after = client.get("/api/stats", headers=key).json()
    assert after["photos"] == before["photos"] and not (data / "uploads").exists()


def test_uploaded_photos_are_indexed_and_searchable(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    stranger = web_catalogue.strangers[0].path
    with TestClient(create_app(ServerSettings(data, analysis_workers=0, broker=None))) as client:
        ingest, search = bearer(web_catalogue.keys["ingest"]), bearer(web_catalogue.keys["search"])
        stored = client.post(
            "/api/photos", headers=ingest, files=photo_file(stranger), data={"person": "Lin"}
        )
        assert stored.status_code == 201 and stored.json()["status"] == "indexed"
        again = client.post("/api/photos", headers=ingest, files=photo_file(stranger))
        assert again.json()["status"] == "unchanged"
        found = client.post("/api/search", headers=search, files=photo_file(stranger)).json()
    assert found["faces"][0]["matches"][0]["person"]["name"] == "Lin"
    kept = [p for p in (data / "uploads").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in kept] == [Path(stranger).read_bytes()]
    assert kept[0].suffix == ".png"  # sniffed from the bytes, not taken from the name


def test_a_full_analysis_pool_answers_503_with_retry_after(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    pool = client.app.state.analysis  # type: ignore[attr-defined]
    pool._pending = pool.capacity  # every slot taken (white-box: no timing games)
    try:
        answer = client.post(
            "/api/search", headers=bearer(web.keys["search"]), files=photo_file(web.probes[0].path)
        )
    finally:
        pool._pending = 0
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["error"]["code"] == "busy"


def test_analysis_pool_admits_no_more_than_its_capacity(web_catalogue: WebCatalogue) -> None:
    pool = AnalysisPool(PipelineSettings(), workers=0, queue=1)
    data = Path(web_catalogue.probes[0].path).read_bytes()

    async def three_at_once() -> list[object]:
        calls = [pool.analyse(data, "probe.jpg") for _ in range(3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(three_at_once())
    assert sum(isinstance(o, Busy) for o in outcomes) == 1
    assert pool.pending == 0


# -- media ------------------------------------------------------------------------------------


def test_thumbnails_and_crops_carry_no_exif_and_are_cached(
    web_catalogue: WebCatalogue, tmp_path: Path
) -> None:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    original = Image.open(web_catalogue.strangers[0].path).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x013B] = "Jane Photographer"  # Artist
    buffer = io.BytesIO()
    original.save(buffer, "JPEG", exif=exif.tobytes())
    tagged = buffer.getvalue()
    assert b"SecretCam" in tagged
    with TestClient(create_app(ServerSettings(data, analysis_workers=0, broker=None))) as client:
        ingest, search = bearer(web_catalogue.keys["ingest"]), bearer(web_catalogue.keys["search"])
        client.post(
            "/api/photos",
            headers=ingest,
            files={"photo": ("t.jpg", tagged, "image/jpeg")},
            data={"person": "Tagged"},
        )
        person, face, sha = next(
            (f["person"]["id"], *_first_face(client, search, f["person"]["id"]))
            for f in client.get("/api/find?q=Tagged", headers=search).json()["items"]
        )
        for size in (256, 1024):
            thumb = client.get(f"/api/photos/{sha}/thumbnail?size={size}", headers=search)
            _assert_clean_jpeg(thumb.content, max_side=size)
            assert (
                "max-age" in thumb.headers["cache-control"]
                and "private" in thumb.headers["cache-control"]
            )
        crop = client.get(f"/api/faces/{face}/crop", headers=search)
        _assert_clean_jpeg(crop.content, max_side=160)
        cached = sorted(p.name for p in (data / "media").rglob("*.jpg"))
        assert cached == sorted([f"{sha}-256.jpg", f"{sha}-1024.jpg", f"{face}.jpg"])
        assert client.get(f"/api/photos/{sha}/thumbnail?size=77", headers=search).status_code == 404
        assert person


def _first_face(client: TestClient, key: dict[str, str], person: str) -> tuple[int, str]:
    item = client.get(f"/api/people/{person}", headers=key).json()["faces"]["items"][0]
    return item["face_id"], item["sha256"]


def _assert_clean_jpeg(content: bytes, max_side: int) -> None:
    image = Image.open(io.BytesIO(content))
    assert image.format == "JPEG" and max(image.size) <= max_side
    assert not image.getexif() and b"SecretCam" not in content and b"Jane" not in content


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_count_requests_searches_and_the_catalogue(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    client.get("/api/find?q=ob", headers=bearer(web.keys["search"]))
    text = client.get("/metrics", headers=bearer(web.keys["admin"])).text
    assert 'iddetective_searches_total{kind="text"}' in text
    assert 'route="/api/find",status="200"' in text
    assert "iddetective_http_request_seconds_bucket" in text
    faces = next(
        line for line in text.splitlines() if line.startswith("iddetective_catalogue_faces ")
    )
    with Catalogue(client.app.state.catalogue.data_dir) as catalogue:  # type: ignore[attr-defined]
        assert float(faces.split()[1]) == catalogue.stats().faces


# -- serve and the key commands -----------------------------------------------------------------


def test_first_serve_creates_an_admin_key_only_on_this_machine(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"refusing to serve on 0\.0\.0\.0 with no API key"):
        first_admin_key(tmp_path / "a", "0.0.0.0")
    key = first_admin_key(tmp_path / "a", "127.0.0.1")
    assert key and first_admin_key(tmp_path / "a", "127.0.0.1") is None
    assert first_admin_key(tmp_path / "a", "0.0.0.0") is None  # a key exists now: allowed
    with Catalogue(tmp_path / "a") as catalogue:
        assert catalogue.authenticate(key).role == "admin"


def test_serve_elsewhere_without_keys_exits_2_with_the_reason(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--data", str(tmp_path / "d")])
    assert result.exit_code == 2 and "keys create --role admin" in result.output


def test_keys_and_audit_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(tmp_path / "d")
    created = runner.invoke(
        main, ["keys", "create", "--role", "ingest", "--label", "scanner", "--data", data]
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    key_id = secret.split("_")[1]
    listed = runner.invoke(main, ["keys", "list", "--data", data])
    assert key_id in listed.output and "scanner" in listed.output and secret not in listed.output
    assert runner.invoke(main, ["keys", "revoke", key_id, "--data", data]).exit_code == 0
    missing = runner.invoke(main, ["keys", "revoke", "0123456789ab", "--data", data])
    assert missing.exit_code == 1 and "no API key" in missing.output
    bad_role = runner.invoke(main, ["keys", "create", "--role", "root", "--data", data])
    assert bad_role.exit_code == 2
    with Catalogue(data) as catalogue:
        catalogue.find("ann")
    audit = runner.invoke(main, ["audit", "--json", "--data", data])
    entry = json.loads(audit.output.splitlines()[0])
    assert entry["kind"] == "text" and entry["actor"] == "cli" and entry["query_text"] == "ann"


# -- the query language over HTTP ---------------------------------------------------------


def test_query_selects_people_and_errors_carry_their_position(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    key = bearer(web.keys["search"])
    answer = client.post("/api/query", headers=key, data={"q": "has:face NOT biden"})
    names = {p["name"] for p in answer.json()["people"]}
    assert answer.status_code == 200 and answer.json()["search"] is None
    assert names == {r.person for r in web.enrolled} - {"biden"}
    wrong = client.post("/api/query", headers=key, data={"q": "has:face OR (obama"})
    error = wrong.json()["error"]
    assert wrong.status_code == 400 and error["code"] == "query_error"
    assert (error["line"], error["column"]) == (1, 19) and "expected ')'" in error["message"]
    entries = client.get("/api/audit?limit=3", headers=bearer(web.keys["admin"])).json()["items"]
    assert any(e["kind"] == "query" and e["query_text"] == "has:face NOT biden" for e in entries)


def test_query_with_a_face_searches_the_uploaded_photo_among_the_selected_people(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    key = bearer(web.keys["search"])
    probe = next(p for p in web.probes if p.person == "biden")
    among_all = client.post(
        "/api/query", headers=key, data={"q": "face:mine.jpg"}, files=photo_file(probe.path)
    ).json()
    assert among_all["search"]["faces"][0]["matches"][0]["person"]["name"] == "biden"
    assert among_all["search"]["query"]["path"] is None
    without = client.post(
        "/api/query", headers=key, data={"q": "NOT biden face:x"}, files=photo_file(probe.path)
    ).json()
    named = {m["person"]["name"] for m in without["search"]["faces"][0]["matches"]}
    assert "biden" not in named and without["search"]["faces"][0]["verdict"] == "no_match"
    no_photo = client.post("/api/query", headers=key, data={"q": "face:x.jpg"})
    assert no_photo.status_code == 400 and "uploaded photo" in no_photo.json()["error"]["message"]
    stray = client.post(
        "/api/query", headers=key, data={"q": "biden"}, files=photo_file(probe.path)
    )
    assert stray.status_code == 400 and "no face: term" in stray.json()["error"]["message"]
