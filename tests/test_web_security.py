"""The web's defences: the last admin key, login and logout against other sites, NUL bytes in
text parameters, and the security headers of every answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.errors import LastAdminKey
from iddetective.web import ServerSettings, create_app

from support.facesets import WebCatalogue, copy_data

pytestmark = pytest.mark.faces


@pytest.fixture(scope="module")
def site(
    web_catalogue: WebCatalogue, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, WebCatalogue]]:
    data = copy_data(web_catalogue.data_dir, tmp_path_factory.mktemp("security") / "data")
    with TestClient(create_app(ServerSettings(data, analysis_workers=0, broker=None))) as client:
        yield client, web_catalogue


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def logged_in(client: TestClient, key: str) -> str:
    """Log the client in with `key`; the session's CSRF token."""
    client.cookies.clear()
    answer = client.post("/login", data={"key": key}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    page = client.get("/").text
    return page.split('name="csrf-token" content="')[1].split('"')[0]


# -- the last admin key ------------------------------------------------------------------


def test_the_last_active_admin_key_cannot_be_revoked_over_http(tmp_path: Path) -> None:
    with Catalogue(tmp_path / "d", create=True) as catalogue:
        admin, first = catalogue.create_key("admin")
        search, _ = catalogue.create_key("search")
    with TestClient(create_app(ServerSettings(tmp_path / "d", analysis_workers=0))) as client:
        refused = client.delete(f"/api/keys/{first.id}", headers=bearer(admin))
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == {
            "code": "last_admin_key",
            "message": f"key {first.id} is the last active admin key: revoking it would "
            "leave nobody able to manage keys; create another admin key first",
        }
        assert client.get("/api/keys", headers=bearer(admin)).status_code == 200
        second = client.post("/api/keys", headers=bearer(admin), json={"role": "admin"}).json()
        assert client.delete(f"/api/keys/{first.id}", headers=bearer(admin)).status_code == 200
        last = client.delete(f"/api/keys/{second['id']}", headers=bearer(second["key"]))
        assert last.status_code == 409
        assert client.get("/api/stats", headers=bearer(search)).status_code == 200


def test_the_last_active_admin_key_cannot_be_revoked_on_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "d"
    with Catalogue(data, create=True) as catalogue:
        _, admin = catalogue.create_key("admin")
        _, search = catalogue.create_key("search")
    runner = CliRunner()
    refused = runner.invoke(main, ["keys", "revoke", admin.id, "--data", str(data)])
    assert refused.exit_code == LastAdminKey.exit_code == 1
    assert "is the last active admin key" in refused.output
    assert runner.invoke(main, ["keys", "revoke", search.id, "--data", str(data)]).exit_code == 0
    with Catalogue(data) as catalogue:
        kept = catalogue.store.key(admin.id)
        assert kept is not None and kept.active


# -- login and logout --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_login_refuses_a_post_from_another_site(
    site: tuple[TestClient, WebCatalogue], headers: dict[str, str]
) -> None:
    client, web = site
    client.cookies.clear()
    answer = client.post(
        "/login", data={"key": web.keys["search"]}, headers=headers, follow_redirects=False
    )
    assert answer.status_code == 403, answer.text
    assert "another site" in answer.text and "set-cookie" not in answer.headers


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a client that is not a browser sends neither
        {"Origin": "http://testserver"},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed by the user
        {"Origin": "https://id.example.org", "X-Forwarded-Host": "id.example.org"},  # a proxy
    ],
)
def test_login_accepts_its_own_site(
    site: tuple[TestClient, WebCatalogue], headers: dict[str, str]
) -> None:
    client, web = site
    client.cookies.clear()
    answer = client.post(
        "/login", data={"key": web.keys["search"]}, headers=headers, follow_redirects=False
    )
    assert answer.status_code == 303 and "idd_session" in answer.headers["set-cookie"]
    client.cookies.clear()


def test_logout_needs_the_sessions_csrf_token(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    token = logged_in(client, web.keys["search"])
    refused = client.post("/logout", follow_redirects=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert client.get("/", follow_redirects=False).status_code == 200  # still logged in
    wrong = client.post("/logout", data={"csrf": "x" + token}, follow_redirects=False)
    assert wrong.status_code == 403
    done = client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/login"
    client.cookies.clear()
    assert client.get("/", follow_redirects=False).status_code == 303


def test_the_pages_logout_form_carries_the_token(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    token = logged_in(client, web.keys["search"])
    page = client.get("/people").text
    form = page.split('action="/logout"')[1].split("</form>")[0]
    assert f'name="csrf" value="{token}"' in form
    client.cookies.clear()


# -- NUL bytes ---------------------------------------------------------------------------


def test_a_nul_byte_in_any_text_parameter_is_422_naming_it(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    key = bearer(web.keys["admin"])
    answers = {
        "query.q": client.get("/api/find?q=a%00b", headers=key),
        "path.person_id": client.get("/api/people/a%00b", headers=key),
        "body.q": client.post("/api/query", headers=key, data={"q": "biden\x00"}),
        "body.label": client.post(
            "/api/keys", headers=key, json={"role": "search", "label": "a\u0000b"}
        ),
        "body.new_name": client.post(
            "/api/faces/move", headers=key, json={"face_ids": [1], "new_name": "x\u0000"}
        ),
    }
    for where, answer in answers.items():
        assert answer.status_code == 422, (where, answer.text)
        assert answer.json()["error"] == {
            "code": "invalid_request",
            "message": f"{where}: text may not contain a NUL character (\\x00)",
        }
    listed = client.get("/api/keys", headers=key).json()
    assert not any("\x00" in k["label"] for k in listed)


def test_a_nul_byte_in_a_page_query_is_an_error_page(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    logged_in(client, web.keys["search"])
    page = client.get("/people?q=a%00b", headers={"accept": "text/html"})
    assert page.status_code == 422 and "NUL character" in page.text
    assert page.headers["content-type"].startswith("text/html")
    client.cookies.clear()


# -- security headers --------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(site: tuple[TestClient, WebCatalogue]) -> None:
    client, web = site
    token_key = bearer(web.keys["search"])
    answers = [
        client.get("/login"),
        client.get("/api/people", headers=token_key),
        client.get("/api/people"),  # an error
        client.get("/static/app.css"),
        client.get("/healthz"),
    ]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "same-origin"


def test_personal_data_is_not_cached_but_media_is_kept_privately(
    site: tuple[TestClient, WebCatalogue],
) -> None:
    client, web = site
    key = bearer(web.keys["search"])
    people = client.get("/api/people", headers=key)
    assert people.headers["cache-control"] == "no-store"
    assert client.get("/api/people").headers["cache-control"] == "no-store"  # errors too
    person = people.json()["items"][0]["id"]
    detail = client.get(f"/api/people/{person}", headers=key)
    assert detail.headers["cache-control"] == "no-store"
    logged_in(client, web.keys["search"])
    assert client.get(f"/people/{person}").headers["cache-control"] == "no-store"
    client.cookies.clear()
    face = detail.json()["faces"]["items"][0]["face_id"]
    crop = client.get(f"/api/faces/{face}/crop", headers=key)
    assert crop.headers["cache-control"] == "private, max-age=86400, immutable"
