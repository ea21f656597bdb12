"""Discovering people over HTTP: clusters, naming, moving, rejecting, merging and undoing, and
the pages for them, on the deepface set indexed without labels (its faces form clusters)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from iddetective.access import ROLES
from iddetective.catalogue import Catalogue
from iddetective.web import ServerSettings, create_app

from support.facesets import Labelled, copy_data, read_labels, require_set

pytestmark = pytest.mark.faces

#: An id that names no cluster, face, person or edit.
UNKNOWN = 999_999


@pytest.fixture(scope="module")
def unlabelled(
    built_catalogue: Callable[[str, list[Labelled], list[str]], Path],
) -> tuple[Path, list[Labelled]]:
    """The deepface set indexed without labels: every face unnamed, most in clusters."""
    rows = read_labels(require_set("deepface"))
    # Same key and photos as tests/test_clustering.py: the set is embedded once per run.
    return built_catalogue("deepface-unlabelled", [], [r.path for r in rows]), rows


@dataclass(frozen=True)
class Site:
    """An app over a private copy of the unlabelled catalogue, with a key per role."""

    client: TestClient
    keys: dict[str, str]
    photos: dict[str, str]  # SHA-256 -> a path of that photo

    def key(self, role: str | None) -> dict[str, str]:
        """The headers that call as `role` (none: no key)."""
        return {"Authorization": f"Bearer {self.keys[role]}"} if role else {}

    def actor(self, role: str) -> str:
        """How the edits name a caller with the `role` key."""
        return f"key:{self.keys[role].split('_')[1]}"


def open_site(source: tuple[Path, list[Labelled]], target: Path) -> Iterator[Site]:
    data = copy_data(source[0], target)
    with Catalogue(data) as catalogue:
        keys = {role: catalogue.create_key(role, f"test {role}")[0] for role in ROLES}
    photos = {hashlib.sha256(Path(r.path).read_bytes()).hexdigest(): r.path for r in source[1]}
    with TestClient(create_app(ServerSettings(data, analysis_workers=0))) as client:
        yield Site(client, keys, photos)


@pytest.fixture(scope="module")
def shared(
    unlabelled: tuple[Path, list[Labelled]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """For tests that change nothing (refused or failing edits change nothing either)."""
    yield from open_site(unlabelled, tmp_path_factory.mktemp("clusters") / "data")


@pytest.fixture
def site(unlabelled: tuple[Path, list[Labelled]], tmp_path: Path) -> Iterator[Site]:
    """A private copy for a test that changes who is who."""
    yield from open_site(unlabelled, tmp_path / "data")


def clusters(site: Site, role: str = "admin", min_size: int = 2) -> list[dict[str, Any]]:
    answer = site.client.get(f"/api/clusters?min_size={min_size}&limit=200", headers=site.key(role))
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def post(site: Site, url: str, body: object = None, role: str = "admin") -> dict[str, Any]:
    answer = site.client.post(url, json=body, headers=site.key(role))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def name_cluster(site: Site, cluster: int, name: str, role: str = "admin") -> dict[str, Any]:
    return post(site, f"/api/clusters/{cluster}/name", {"new_name": name}, role)


def person_id(site: Site, name: str) -> str:
    people = site.client.get("/api/people?limit=200", headers=site.key("search")).json()
    (found,) = [p["id"] for p in people["items"] if p["name"] == name]
    return str(found)


def face_ids(site: Site, person: str) -> list[int]:
    detail = site.client.get(f"/api/people/{person}?limit=200", headers=site.key("search"))
    return [face["face_id"] for face in detail.json()["faces"]["items"]]


def who_is_who(site: Site) -> dict[str, Any]:
    """What the API shows of people and clusters: everyone with their faces, every cluster
    (single faces included) with all its faces."""
    people = site.client.get("/api/people?limit=200", headers=site.key("search")).json()["items"]
    every = clusters(site, min_size=1)
    assert len(every) < 200
    return {
        "people": [{**p, "face_ids": face_ids(site, p["id"])} for p in people],
        "clusters": [
            site.client.get(f"/api/clusters/{c['id']}", headers=site.key("admin")).json()
            for c in every
        ],
    }


# -- who may --------------------------------------------------------------------------------

#: Seeing clusters shows faces, which is searching (and audited): (method, URL, status).
VIEWS: dict[str, tuple[str, str, int]] = {
    "GET /api/clusters": ("GET", "/api/clusters", 200),
    "GET /api/clusters/{id}": ("GET", "/api/clusters/{cluster}", 200),
    "GET cluster face crop": ("GET", "/api/clusters/{cluster}/faces/{face}/crop", 200),
}


@pytest.mark.parametrize("role", [*ROLES, None])
@pytest.mark.parametrize("endpoint", sorted(VIEWS))
def test_seeing_clusters_needs_a_role_that_may_search(
    shared: Site, endpoint: str, role: str | None
) -> None:
    method, url, allowed = VIEWS[endpoint]
    cluster = clusters(shared)[0]
    url = url.format(cluster=cluster["id"], face=cluster["faces"][0]["face_id"])
    answer = shared.client.request(method, url, headers=shared.key(role))
    if role is None:
        assert answer.status_code == 401
    elif role in ("admin", "search"):
        assert answer.status_code == allowed, answer.text
    else:
        assert answer.status_code == 403
        assert "the ingest role may not search" in answer.json()["error"]["message"]


#: (method, URL, JSON body, the status for roles that may curate). The writes name things
#: that do not exist, so the catalogue refuses them with 404 and the shared copy stays as is.
ENDPOINTS: dict[str, tuple[str, str, object, int]] = {
    "POST /api/clusters/run": ("POST", "/api/clusters/run", {"full": False}, 200),
    "POST /api/clusters/{id}/name": (
        "POST",
        f"/api/clusters/{UNKNOWN}/name",
        {"new_name": "Nobody"},
        404,
    ),
    "POST /api/faces/move": (
        "POST",
        "/api/faces/move",
        {"face_ids": [UNKNOWN], "person": "x"},
        404,
    ),
    "POST /api/faces/reject": ("POST", "/api/faces/reject", {"face_ids": [UNKNOWN]}, 404),
    "POST /api/people/{id}/merge": ("POST", "/api/people/nobody/merge", {"source": "x"}, 404),
    "GET /api/edits": ("GET", "/api/edits", None, 200),
    "POST /api/edits/{id}/undo": ("POST", f"/api/edits/{UNKNOWN}/undo", None, 404),
}


@pytest.mark.parametrize("role", [*ROLES, None])
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_curation_needs_a_role_that_may_curate(
    shared: Site, endpoint: str, role: str | None
) -> None:
    method, url, body, allowed = ENDPOINTS[endpoint]
    cluster = clusters(shared)[0]
    url = url.format(cluster=cluster["id"], face=cluster["faces"][0]["face_id"])
    answer = shared.client.request(method, url, json=body, headers=shared.key(role))
    if role is None:
        assert answer.status_code == 401
    elif role in ("admin", "ingest"):
        assert answer.status_code == allowed, answer.text
    else:
        assert answer.status_code == 403
        assert "the search role may not curate" in answer.json()["error"]["message"]


#: Each page, the roles that may open it, and the words of the refusal for the others.
PAGES = {
    "/clusters": ({"admin", "search"}, "may not search"),
    "/edits": ({"admin", "ingest"}, "may not curate"),
}


@pytest.mark.parametrize("role", [*ROLES, None])
@pytest.mark.parametrize("page", sorted(PAGES))
def test_cluster_and_edit_pages_allow_exactly_their_roles(
    shared: Site, page: str, role: str | None
) -> None:
    client = shared.client
    client.cookies.clear()
    if role:
        client.post("/login", data={"key": shared.keys[role]}, follow_redirects=False)
    answer = client.get(page, follow_redirects=False, headers={"accept": "text/html"})
    edits = client.get("/edits", follow_redirects=False).text
    client.cookies.clear()
    allowed, refusal = PAGES[page]
    if role is None:
        assert answer.status_code == 303 and answer.headers["location"] == f"/login?next={page}"
    elif role in allowed:
        assert answer.status_code == 200 and "<main>" in answer.text
        assert f'href="{page}"' in answer.text  # the navigation links the page
    else:
        assert answer.status_code == 403 and refusal in answer.text
    if role == "ingest":
        assert 'href="/clusters"' not in edits  # no link to a page the role may not open


def test_a_cookie_session_needs_the_csrf_token_to_edit(shared: Site) -> None:
    client = shared.client
    client.cookies.clear()
    client.post("/login", data={"key": shared.keys["ingest"]}, follow_redirects=False)
    page = client.get("/edits").text
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    refused = client.post("/api/clusters/run", json={})
    accepted = client.post("/api/clusters/run", json={}, headers={"X-CSRF-Token": token})
    client.cookies.clear()
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    assert accepted.status_code == 200 and accepted.json()["considered"] == 0  # nothing new


# -- naming, and the round trip of every edit -----------------------------------------------------


def test_naming_a_cluster_makes_a_person_whom_search_finds(site: Site) -> None:
    client = site.client
    listed = clusters(site, "search", min_size=3)
    cluster = listed[0]
    assert cluster["size"] >= 3 and 3 <= len(cluster["faces"]) <= cluster["size"]
    assert [c["size"] for c in listed] == sorted((c["size"] for c in listed), reverse=True)
    face = cluster["faces"][0]
    crop = client.get(face["crop_url"], headers=site.key("search"))
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
    # The ingest role names the cluster (an edit) but sees none of its faces.
    for url in (face["crop_url"], f"/api/faces/{face['face_id']}/crop"):
        assert client.get(url, headers=site.key("ingest")).status_code == 403
    whole = client.get(f"/api/clusters/{cluster['id']}", headers=site.key("search")).json()
    assert whole["size"] == cluster["size"] == len(whole["faces"])

    edit = name_cluster(site, cluster["id"], "Named Over Http", role="ingest")
    assert edit["kind"] == "name-cluster" and edit["faces"] == cluster["size"]
    assert edit["actor"] == site.actor("ingest") and edit["undone_at"] is None
    assert "Named Over Http" in edit["summary"]

    person = person_id(site, "Named Over Http")
    assert sorted(face_ids(site, person)) == sorted(f["face_id"] for f in whole["faces"])
    gone = client.get(f"/api/clusters/{cluster['id']}", headers=site.key("search"))
    assert gone.status_code == 404 and f"no cluster has the id {cluster['id']}" in gone.text
    assert client.get(face["crop_url"], headers=site.key("search")).status_code == 404
    probe = site.photos[face["sha256"]]
    with open(probe, "rb") as photo:
        files = {"photo": (Path(probe).name, photo.read(), "image/jpeg")}
    found = client.post("/api/search", headers=site.key("search"), files=files).json()
    best = [f["matches"][0]["person"] for f in found["faces"] if f["verdict"] == "match"]
    assert {"id": person, "name": "Named Over Http"} in best
    edits = client.get("/api/edits", headers=site.key("admin")).json()["items"]
    assert edits[0] == edit


def test_move_reject_merge_and_undo_put_everything_back(site: Site) -> None:
    first, second = clusters(site, min_size=3)[:2]
    untouched = who_is_who(site)
    named = [
        name_cluster(site, first["id"], "Ann Http"),
        name_cluster(site, second["id"], "Bo Http"),
    ]
    ann, bo = person_id(site, "Ann Http"), person_id(site, "Bo Http")
    ann_faces, bo_faces = face_ids(site, ann), face_ids(site, bo)
    before = who_is_who(site)

    moved = post(site, "/api/faces/move", {"face_ids": ann_faces[:1], "new_name": "Cy Http"})
    rejected = post(site, "/api/faces/reject", {"face_ids": bo_faces[:1]})
    merged = post(site, f"/api/people/{ann}/merge", {"source": "Bo Http"}, role="ingest")
    assert [moved["kind"], rejected["kind"], merged["kind"]] == [
        "move-faces",
        "reject-faces",
        "merge-people",
    ]
    assert face_ids(site, person_id(site, "Cy Http")) == ann_faces[:1]
    assert sorted(face_ids(site, ann)) == sorted(ann_faces[1:] + bo_faces[1:])
    assert site.client.get(f"/api/people/{bo}", headers=site.key("search")).status_code == 404
    profile = site.client.get(f"/api/people/{ann}", headers=site.key("search")).json()
    assert profile["aliases"] == ["Bo Http"]
    listed = site.client.get("/api/edits?limit=3", headers=site.key("admin")).json()["items"]
    assert [e["id"] for e in listed] == [merged["id"], rejected["id"], moved["id"]]
    assert listed[0]["actor"] == site.actor("ingest")

    for edit in (merged, rejected, moved):
        undone = post(site, f"/api/edits/{edit['id']}/undo", role="ingest")
        assert undone["kind"] == "undo" and f"undid edit {edit['id']}" in undone["summary"]
    assert who_is_who(site) == before
    for edit in reversed(named):
        post(site, f"/api/edits/{edit['id']}/undo")
    assert who_is_who(site) == untouched
    history = site.client.get("/api/edits", headers=site.key("admin")).json()["items"]
    undone_by = {e["id"]: e["undone_by"] for e in history}
    assert undone_by[merged["id"]] == site.actor("ingest") and undone_by[named[0]["id"]]


def test_moving_unnamed_faces_to_someone_and_running_the_clustering(site: Site) -> None:
    first, second = clusters(site, min_size=2)[:2]
    name_cluster(site, first["id"], "Dee Http")
    dee = person_id(site, "Dee Http")
    faces = [f["face_id"] for f in second["faces"]]
    moved = post(site, "/api/faces/move", {"face_ids": faces, "person": dee})
    assert moved["faces"] == len(faces) and set(faces) <= set(face_ids(site, dee))
    report = post(site, "/api/clusters/run", {"full": True}, role="ingest")
    assert report["considered"] >= report["clustered"] > 0 and report["clusters"] >= 1
    assert {c["id"] for c in clusters(site)} <= {c["id"] for c in clusters(site, min_size=1)}


# -- bad input ------------------------------------------------------------------------------


def test_bad_input_gets_a_specific_error_and_changes_nothing(shared: Site) -> None:
    before = who_is_who(shared)
    cluster = clusters(shared)[0]
    unnamed = cluster["faces"][0]["face_id"]

    def refused(url: str, body: object, status: int, says: str) -> None:
        answer = shared.client.post(url, json=body, headers=shared.key("admin"))
        assert answer.status_code == status, answer.text
        assert says in answer.json()["error"]["message"], answer.text

    missing = shared.client.get(f"/api/clusters/{UNKNOWN}", headers=shared.key("admin"))
    assert missing.status_code == 404 and f"no cluster has the id {UNKNOWN}" in missing.text
    refused(f"/api/clusters/{UNKNOWN}/name", {"new_name": "X"}, 404, "no cluster has the id")
    either = "give either an existing person or a new name, not both"
    refused(f"/api/clusters/{cluster['id']}/name", {"person": "x", "new_name": "y"}, 400, either)
    refused(f"/api/clusters/{cluster['id']}/name", {}, 400, either)
    refused(f"/api/clusters/{cluster['id']}/name", {"new_name": "   "}, 400, "not empty")
    refused(f"/api/clusters/{cluster['id']}/name", {"person": "Nobody Here"}, 404, "Nobody Here")
    refused(f"/api/clusters/{cluster['id']}/name", {"new_name": 7}, 422, "new_name")
    refused("/api/faces/move", {"face_ids": [], "new_name": "X"}, 422, "face_ids")
    refused("/api/faces/move", {"face_ids": [str(unnamed)], "new_name": "X"}, 422, "face_ids")
    refused("/api/faces/move", {"face_ids": [unnamed]}, 400, either)
    refused(
        "/api/faces/reject", {"face_ids": [unnamed, UNKNOWN]}, 404, f"no face has the id {UNKNOWN}"
    )
    refused("/api/faces/reject", {"face_ids": [unnamed]}, 400, "belong to nobody")
    refused("/api/people/nobody/merge", {"source": "x"}, 404, "nobody")
    refused(f"/api/edits/{UNKNOWN}/undo", None, 404, f"no edit has the id {UNKNOWN}")
    limit = shared.client.get("/api/edits?limit=0", headers=shared.key("admin"))
    assert limit.status_code == 422 and "limit" in limit.json()["error"]["message"]
    assert who_is_who(shared) == before


def test_edits_that_cannot_be_undone_say_why(site: Site) -> None:
    first = clusters(site)[0]
    named = name_cluster(site, first["id"], "Eve Http")
    eve = person_id(site, "Eve Http")
    moved = post(site, "/api/faces/move", {"face_ids": face_ids(site, eve)[:1], "new_name": "Fay"})

    def refused(url: str, body: object, says: str) -> None:
        answer = site.client.post(url, json=body, headers=site.key("admin"))
        assert answer.status_code == 400 and says in answer.json()["error"]["message"], answer.text

    refused(f"/api/edits/{named['id']}/undo", None, f"changed by edit {moved['id']}; undo that")
    undo = post(site, f"/api/edits/{moved['id']}/undo")
    refused(f"/api/edits/{moved['id']}/undo", None, "already undone")
    refused(f"/api/edits/{undo['id']}/undo", None, "is an undo")
    refused(f"/api/people/{eve}/merge", {"source": "Eve Http"}, "merged with themselves")


# -- the pages -------------------------------------------------------------------------------


def log_in(site: Site, role: str) -> str:
    """Log the test client in as `role`; the session's CSRF token."""
    site.client.cookies.clear()
    site.client.post("/login", data={"key": site.keys[role]}, follow_redirects=False)
    page = site.client.get("/edits" if role == "ingest" else "/").text
    return page.split('name="csrf-token" content="')[1].split('"')[0]


def test_the_pages_show_clusters_edits_and_the_controls_to_curators(site: Site) -> None:
    client = site.client
    cluster = clusters(site)[0]
    log_in(site, "admin")
    page = client.get("/clusters").text
    assert f"Cluster {cluster['id']} · {cluster['size']} faces" in page
    for face in cluster["faces"]:
        assert f'src="{face["crop_url"]}"' in page
    assert f'<form class="name-cluster" data-cluster="{cluster["id"]}">' in page
    log_in(site, "search")  # sees the clusters, may not name them
    page = client.get("/clusters").text
    assert f'src="{cluster["faces"][0]["crop_url"]}"' in page
    assert "name-cluster" not in page and "run-clustering" not in page
    assert "clusters.js" not in page
    log_in(site, "ingest")

    named = name_cluster(site, cluster["id"], "Gus Http")
    undo = post(site, "/api/edits/{}/undo".format(named["id"]))
    again = name_cluster(site, cluster["id"], "Gus Http")
    page = client.get("/edits").text
    assert f'aria-label="Undo edit {again["id"]}"' in page
    assert f'aria-label="Undo edit {named["id"]}"' not in page  # undone already
    assert f'aria-label="Undo edit {undo["id"]}"' not in page  # an undo
    assert "undone" in page and named["summary"] in page

    gus = person_id(site, "Gus Http")
    log_in(site, "admin")
    admin_view = client.get(f"/people/{gus}").text
    assert admin_view.count('class="pick-face"') == cluster["size"]
    assert "Move to…" in admin_view and "Reject" in admin_view
    assert "Merge another person into this one" in admin_view
    log_in(site, "search")
    search_view = client.get(f"/people/{gus}").text
    client.cookies.clear()
    assert "pick-face" not in search_view and "merge-person" not in search_view
    assert "person.js" not in search_view


# -- seeing faces through clusters: the search role's, audited ---------------------------------


def new_key(site: Site, role: str) -> tuple[dict[str, str], str]:
    """A fresh key (nothing shown to it yet): its headers and how the audit log names it."""
    created = site.client.post("/api/keys", headers=site.key("admin"), json={"role": role})
    key = created.json()["key"]
    return {"Authorization": f"Bearer {key}"}, f"key:{created.json()['id']}"


def views_of(site: Site, actor: str) -> list[tuple[str, int]]:
    """(what, faces) of the audited views by `actor`, oldest first."""
    entries = site.client.get("/api/audit?limit=1000", headers=site.key("admin")).json()["items"]
    mine = [e for e in reversed(entries) if e["actor"] == actor]
    assert all(e["kind"] == "view" for e in mine), mine
    return [(e["query_text"], e["results"]) for e in mine]


def test_an_ingest_key_cannot_search_by_face_through_the_clusters(site: Site) -> None:
    # The attack: upload a photo of someone (the ingest role's job), see which cluster their
    # face joins, and look at the other faces there: a face search nobody audited.
    target = clusters(site, min_size=3)[0]
    known = target["faces"][0]
    with Image.open(site.photos[known["sha256"]]) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=80)  # other bytes, the same face
    upload = site.client.post(
        "/api/photos",
        headers=site.key("ingest"),
        files={"photo": ("someone.jpg", buffer.getvalue(), "image/jpeg")},
    )
    assert upload.status_code == 201 and upload.json()["faces"] >= 1, upload.text
    whole = site.client.get(f"/api/clusters/{target['id']}", headers=site.key("admin")).json()
    assert upload.json()["sha256"] in {f["sha256"] for f in whole["faces"]}  # it joined
    _, ingest_actor = new_key(site, "ingest")
    for url in (
        "/api/clusters?min_size=1",
        f"/api/clusters/{target['id']}",
        known["crop_url"],
        f"/api/faces/{known['face_id']}/crop",
        f"/api/photos/{known['sha256']}/thumbnail",
    ):
        answer = site.client.get(url, headers=site.key("ingest"))
        assert answer.status_code == 403, (url, answer.text)
        assert "the ingest role may not search" in answer.json()["error"]["message"]
    log_in(site, "ingest")
    page = site.client.get("/clusters")
    site.client.cookies.clear()
    assert page.status_code == 403 and known["crop_url"] not in page.text
    assert views_of(site, ingest_actor) == []


def test_every_view_of_cluster_faces_is_audited_once(site: Site) -> None:
    listed = clusters(site, min_size=2)
    first, second = listed[0], listed[1]
    headers, actor = new_key(site, "search")
    page = site.client.get("/api/clusters?min_size=2&limit=200", headers=headers).json()
    shown = sum(len(c["faces"]) for c in page["items"])
    for face in first["faces"]:  # what a page shows fetches no second entry
        assert site.client.get(face["crop_url"], headers=headers).status_code == 200
    assert views_of(site, actor) == [("clusters from 0", shown)]

    whole = site.client.get(f"/api/clusters/{second['id']}", headers=headers).json()
    assert views_of(site, actor)[-1] == (f"cluster {second['id']}", second["size"])
    for face in whole["faces"]:
        site.client.get(face["crop_url"], headers=headers)
    assert len(views_of(site, actor)) == 2

    other, other_actor = new_key(site, "search")  # a crop fetched by id: a view of its own
    face = whole["faces"][-1]
    assert site.client.get(face["crop_url"], headers=other).status_code == 200
    assert site.client.get(face["crop_url"], headers=other).status_code == 200
    what = f"face {face['face_id']} of cluster {second['id']}"
    assert views_of(site, other_actor) == [(what, 1)]
    assert site.client.get(f"/api/faces/{face['face_id']}/crop", headers=other).status_code == 200
    assert views_of(site, other_actor) == [(what, 1)]  # the same face, seen already

    site.client.cookies.clear()
    login = site.client.post("/login", data={"key": other["Authorization"][7:]})
    assert login.status_code == 200  # followed to the search page
    html = site.client.get("/clusters").text
    site.client.cookies.clear()
    assert f'src="{first["faces"][0]["crop_url"]}"' in html
    assert views_of(site, other_actor)[-1] == ("clusters from 0", shown)
