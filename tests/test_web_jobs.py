"""Long operations as background jobs: a full clustering run and an erasure answer 202 with a
job at once, and GET /api/jobs/{id} says how it stands and what it did."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iddetective.web import ServerSettings, create_app

from support.facesets import WebCatalogue, copy_data

pytestmark = pytest.mark.faces


@pytest.fixture()
def site(web_catalogue: WebCatalogue, tmp_path: Path) -> Iterator[tuple[TestClient, WebCatalogue]]:
    data = copy_data(web_catalogue.data_dir, tmp_path / "data")
    app = create_app(ServerSettings(data, analysis_workers=0, broker=None))
    with TestClient(app) as client:
        yield client, web_catalogue


def bearer(web: WebCatalogue, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {web.keys[role]}"}


def finished(client: TestClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = client.get(url, headers=headers).json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_a_full_clustering_run_in_the_background(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    curator = bearer(web, "admin")
    for stranger in web.strangers[:2]:  # unnamed faces to cluster
        files = {
            "photo": (Path(stranger.path).name, Path(stranger.path).read_bytes(), "image/jpeg")
        }
        assert client.post("/api/photos", files=files, headers=curator).status_code == 201
    started = client.post(
        "/api/clusters/run", json={"full": True, "background": True}, headers=curator
    )
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["kind"] == "clustering" and job["state"] in ("queued", "running", "done")
    done = finished(client, job["status_url"], curator)
    assert done["state"] == "done" and done["error"] is None and done["finished_at"]
    again = client.post("/api/clusters/run", json={"full": True}, headers=curator)
    assert again.status_code == 200
    assert done["result"]["considered"] == again.json()["considered"] >= 1
    assert client.get(job["status_url"], headers=bearer(web, "search")).status_code == 403
    assert client.get("/api/jobs/j_0000000000000000", headers=curator).status_code == 404


def test_an_erasure_in_the_background(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    admin = bearer(web, "admin")
    person = client.get("/api/people?limit=1", headers=admin).json()["items"][0]
    started = client.delete(f"/api/people/{person['id']}?background=true", headers=admin)
    assert started.status_code == 202, started.text
    done = finished(client, started.json()["status_url"], admin)
    assert done["state"] == "done" and done["kind"] == "erasure"
    assert done["result"]["faces"] == person["faces"] and done["result"]["token"]
    assert client.get(f"/api/people/{person['id']}", headers=admin).status_code == 404
    unknown = client.delete("/api/people/p_nobody?background=true", headers=admin)
    assert unknown.status_code == 404  # checked before the job is started


# -- the list of jobs, and the /jobs page ----------------------------------------------------


def key_id(client: TestClient, web: WebCatalogue, role: str) -> str:
    keys = client.get("/api/keys", headers=bearer(web, "admin")).json()
    return str(next(key["id"] for key in keys if key["label"] == f"test {role}"))


def start_erasure_and_clustering(client: TestClient, web: WebCatalogue) -> tuple[str, str]:
    """An erasure started by the admin key, then a full clustering run by the ingest key; the
    ids of their jobs, once both are done."""
    person = client.get("/api/people?limit=1", headers=bearer(web, "admin")).json()["items"][0]
    erasure = client.delete(
        f"/api/people/{person['id']}?background=true", headers=bearer(web, "admin")
    )
    clustering = client.post(
        "/api/clusters/run", json={"full": True, "background": True}, headers=bearer(web, "ingest")
    )
    assert erasure.status_code == clustering.status_code == 202, (erasure.text, clustering.text)
    for job in (erasure.json(), clustering.json()):
        assert finished(client, job["status_url"], bearer(web, "admin"))["state"] == "done"
    return erasure.json()["id"], clustering.json()["id"]


def test_jobs_are_listed_newest_first_to_the_roles_that_may_see_them(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    assert client.get("/api/jobs", headers=bearer(web, "admin")).json() == {"items": []}
    erasure, clustering = start_erasure_and_clustering(client, web)

    listed = client.get("/api/jobs", headers=bearer(web, "admin")).json()["items"]
    assert [job["id"] for job in listed] == [clustering, erasure]
    assert [(job["kind"], job["actor"]) for job in listed] == [
        ("clustering", f"key:{key_id(client, web, 'ingest')}"),
        ("erasure", f"key:{key_id(client, web, 'admin')}"),
    ]
    for job in listed:
        assert job["state"] == "done" and job["error"] is None and job["result"]
        assert job["created_at"] <= job["started_at"] <= job["finished_at"]
        assert job == client.get(job["status_url"], headers=bearer(web, "admin")).json()

    # An erasure is admin's: the ingest key lists the clustering run alone, as it may ask
    # for that one only.
    mine = client.get("/api/jobs", headers=bearer(web, "ingest")).json()["items"]
    assert [job["id"] for job in mine] == [clustering]
    assert client.get(f"/api/jobs/{erasure}", headers=bearer(web, "ingest")).status_code == 403
    refused = client.get("/api/jobs", headers=bearer(web, "search"))
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == (
        "the search role may not curate; needs admin or ingest"
    )
    assert client.get("/api/jobs").status_code == 401


def page(client: TestClient, web: WebCatalogue, role: str | None, url: str) -> Any:
    """`url` as a browser logged in with the key of `role` (or not logged in) gets it."""
    client.cookies.clear()
    if role is not None:
        client.post("/login", data={"key": web.keys[role]}, follow_redirects=False)
    answer = client.get(url, headers={"accept": "text/html"}, follow_redirects=False)
    client.cookies.clear()
    return answer


def test_the_jobs_page_lists_the_jobs_a_role_may_see(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    empty = page(client, web, "ingest", "/jobs")
    assert empty.status_code == 200 and 'id="no-jobs"' in empty.text
    assert 'href="/jobs"' in empty.text  # the navigation links it
    erasure, clustering = start_erasure_and_clustering(client, web)

    every = page(client, web, "admin", "/jobs").text
    assert every.index(f'data-job="{clustering}"') < every.index(f'data-job="{erasure}"')
    assert 'http-equiv="refresh"' not in every  # nothing left to wait for
    ingest = page(client, web, "ingest", "/jobs").text
    assert f'data-job="{clustering}"' in ingest and erasure not in ingest
    assert f"key:{key_id(client, web, 'ingest')}" in ingest
    assert page(client, web, "ingest", f"/jobs?id={erasure}").status_code == 403
    search = page(client, web, "search", "/jobs")
    assert search.status_code == 403 and "may not curate" in search.text
    assert 'href="/jobs"' not in page(client, web, "search", "/").text
    anonymous = page(client, web, None, "/jobs")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login?next=/jobs"
    unknown = page(client, web, "admin", "/jobs?id=j_0000000000000000")
    assert unknown.status_code == 404 and "no job has the id" in unknown.text


def test_the_page_of_a_started_job_shows_its_state_and_reloads_until_it_ends(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    # A job of the test's own holds the server's one job thread, so the clustering run
    # started after it stays queued until the test lets it go.
    release = threading.Event()
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    holding = jobs.start("clustering", "admin", "test", lambda: {"held": release.wait(60)})
    try:
        deadline = time.monotonic() + 60
        while jobs.get(holding.id).state != "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        started = client.post(
            "/api/clusters/run",
            json={"full": True, "background": True},
            headers=bearer(web, "admin"),
        )
        assert started.status_code == 202, started.text
        job = started.json()["id"]
        waiting = page(client, web, "admin", f"/jobs?id={job}")
        assert waiting.status_code == 200
        assert f"<h1>Job <code>{job}</code></h1>" in waiting.text
        assert '<td class="state">queued</td>' in waiting.text
        assert '<meta http-equiv="refresh" content="2">' in waiting.text
        listed = page(client, web, "admin", "/jobs").text
        assert '<td class="state">running</td>' in listed and holding.id in listed
        assert 'http-equiv="refresh"' in listed
    finally:
        release.set()
    done = finished(client, f"/api/jobs/{job}", bearer(web, "admin"))
    ended = page(client, web, "admin", f"/jobs?id={job}").text
    assert '<td class="state">done</td>' in ended and 'http-equiv="refresh"' not in ended
    assert f'"considered": {done["result"]["considered"]}' in ended
    assert holding.id not in ended  # the page of one job shows that job alone
