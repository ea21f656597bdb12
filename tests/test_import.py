"""`iddetective import`: good and bad rows, idempotence, CSV, photos by path and by URL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.sources.fetch import FetchSettings

from support.facesets import Labelled, read_labels, require_set

pytestmark = pytest.mark.faces


@pytest.fixture(scope="module")
def photos() -> dict[str, list[Labelled]]:
    rows = read_labels(require_set("face_recognition"))
    by_person: dict[str, list[Labelled]] = {}
    for row in rows:
        by_person.setdefault(row.person, []).append(row)
    return by_person


@pytest.fixture()
def photo_server(photos: dict[str, list[Labelled]]) -> Iterator[str]:
    """http://127.0.0.1:PORT serving /biden.jpg, a redirect to a metadata address, a 404."""
    body = Path(photos["biden"][0].path).read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/biden.jpg":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/sneaky.jpg":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data")
                self.end_headers()
            else:
                self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def write_jsonl(path: Path, rows: list[object]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_mix_of_good_and_bad_rows(
    tmp_path: Path, photos: dict[str, list[Labelled]], photo_server: str
) -> None:
    obama = photos["obama"][0].path
    source = write_jsonl(
        tmp_path / "people.jsonl",
        [
            {
                "id": "e1",
                "name": "Barack Obama",
                "aliases": ["Barry"],
                "accounts": [
                    {"platform": "X", "handle": "barackobama", "url": "https://x.com/barackobama"}
                ],
                "lists": ["Presidents"],
                "relations": [{"kind": "colleague", "to": "e2"}],
                "photos": [obama],
            },
            {
                "id": "e2",
                "name": "Joe Biden",
                "lists": ["Presidents", "Senators"],
                "photos": [f"{photo_server}/biden.jpg", f"{photo_server}/sneaky.jpg"],
            },
            {"id": "e3"},  # line 3: no name
            {"id": "e4", "name": "X", "phtos": []},  # line 4: typo
            "{not json",  # line 5
            {"id": "e1", "name": "Again"},  # line 6: duplicate id
            {"id": "e7", "name": "Thief", "accounts": [{"platform": "x", "handle": "barackobama"}]},
            {"id": "e8", "name": "Lonely", "relations": [{"kind": "friend", "to": "nobody"}]},
            {"id": "e9", "name": "Ftp", "photos": ["ftp://example.org/a.jpg"]},
            ["not", "an", "object"],  # line 10
            {"id": "e11", "name": "Missing photo", "photos": ["no/such/file.jpg"]},
        ],
    )
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        report = catalogue.import_file(str(source), fetch=FetchSettings(allow=("127.0.0.1/32",)))
        problems = {p.line: p.reason for p in report.problems}
        assert "name is missing" in problems[3]
        assert "unknown field 'phtos' (did you mean 'photos'?)" in problems[4]
        assert "not valid JSON" in problems[5]
        assert "already used on line 1" in problems[6]
        assert "already belongs to Barack Obama" in problems[7]
        assert "no person has the id 'nobody'" in problems[8]
        assert "http(s) URLs" in problems[9]
        assert "must be an object" in problems[10]
        assert "169.254.169.254" in problems[2] and "link-local" in problems[2]
        assert sorted(problems) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
        assert (report.created, report.updated, report.relations) == (4, 0, 1)
        assert report.photos is not None and report.photos.indexed == 2
        assert [f.path.endswith("no/such/file.jpg") for f in report.photos.failed] == [True]
        found = catalogue.find("barackob")
        assert [(f.person.name, f.field) for f in found] == [("Barack Obama", "handle")]
        obama_profile = catalogue.profile("Barack Obama")
        assert obama_profile.lists == ("Presidents",) and obama_profile.aliases == ("Barry",)
        assert [(k, p.name) for k, p in obama_profile.relations] == [("colleague", "Joe Biden")]
        senators = catalogue.query("list:senators has:face")
        assert [p.name for p in senators.people] == ["Joe Biden"]
        probe = photos["biden"][1].path
        best = catalogue.search_photo(probe).faces[0].matches[0]
        assert best.person is not None and best.person.name == "Joe Biden"
        assert list((tmp_path / "data" / "fetched").rglob("*.jpg"))


def test_importing_again_changes_nothing(tmp_path: Path, photos: dict[str, list[Labelled]]) -> None:
    source = write_jsonl(
        tmp_path / "people.jsonl",
        [
            {
                "id": "a",
                "name": "Kit",
                "photos": [photos["kit_harington"][0].path],
                "relations": [{"kind": "friend", "to": "b"}],
            },
            {"id": "b", "name": "Rose", "accounts": [{"platform": "instagram", "handle": "rose"}]},
        ],
    )
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        first = catalogue.import_file(str(source))
        faces = catalogue.stats().faces
        second = catalogue.import_file(str(source))
        assert (first.created, first.relations) == (2, 1)
        assert (second.created, second.updated, second.relations) == (0, 2, 0)
        assert second.photos is not None and second.photos.unchanged == 1
        assert catalogue.stats().faces == faces and len(catalogue.people()) == 2
        assert not first.problems and not second.problems


def test_csv_import(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text(
        "id,name,aliases,accounts,lists,relations\n"
        "1,Пётр Иванов,Петя,telegram:petr_iv;email:petr@example.org,Alumni 2010,friend:2\n"
        "2,Ann Lee,,,Alumni 2010;Team,\n"
        "3,,,,,\n"
        "4,Broken,,telegram,,\n",
        encoding="utf-8",
    )
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        report = catalogue.import_file(str(source))
        assert {p.line: p.reason for p in report.problems}.keys() == {4, 5}
        assert [f.person.name for f in catalogue.find("petr")] == ["Пётр Иванов"]
        friends = catalogue.query('friends-of:"Ann Lee" list:"alumni 2010"')
        assert [p.name for p in friends.people] == ["Пётр Иванов"]


def test_import_command_lists_problems_and_exits_3(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "name": "Ann"}, {"id": "2"}])
    result = CliRunner().invoke(main, ["import", str(source), "--data", str(tmp_path / "d")])
    assert result.exit_code == 3, result.output
    assert "1 new" in result.output and f"{source}:2: name is missing" in result.output
    missing = CliRunner().invoke(
        main, ["import", str(tmp_path / "nope.csv"), "--data", str(tmp_path / "d")]
    )
    assert missing.exit_code == 2 and "cannot read the import file" in missing.output


def test_urls_to_this_machine_are_refused_unless_allowed(tmp_path: Path, photo_server: str) -> None:
    source = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "1", "name": "Joe", "photos": [f"{photo_server}/biden.jpg"]}]
    )
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        report = catalogue.import_file(str(source))
    assert len(report.problems) == 1 and "loopback" in report.problems[0].reason
    assert "--allow-network" in report.problems[0].reason
