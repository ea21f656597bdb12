"""A damaged or foreign data directory is refused or repaired, never taken as empty or trusted.

Each test damages a real catalogue of the face_recognition photos the way a crash, a bad copy
or a hostile operator would, then runs what a user runs (`iddetective ...`, the library).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from iddetective.catalogue import CATALOG_FILE, Catalogue
from iddetective.cli import main
from iddetective.errors import StoreError
from iddetective.vector_index.integrity import file_digests, sealed
from iddetective.web import ServerSettings, create_app

from support.facesets import Labelled, copy_data, read_labels, require_set, split_enrol_probe

pytestmark = pytest.mark.faces


@pytest.fixture(scope="module")
def fr_rows() -> tuple[list[Labelled], list[Labelled]]:
    rows = read_labels(require_set("face_recognition"))
    return split_enrol_probe([r for r in rows if r.person != "lin_manuel_miranda"])


@pytest.fixture
def data(
    built_catalogue: Callable[[str, list[Labelled], list[str]], Path],
    fr_rows: tuple[list[Labelled], list[Labelled]],
    tmp_path: Path,
) -> Path:
    """A private copy of the face_recognition catalogue (built once per run, as the web's)."""
    source = built_catalogue("face_recognition", fr_rows[0], [])
    return copy_data(source, tmp_path / "data")


def probe_of(rows: tuple[list[Labelled], list[Labelled]], person: str) -> str:
    return next(p.path for p in rows[1] if p.person == person)


def run(*args: str) -> tuple[int, str, str]:
    """Run the command; an exception it did not turn into a message (a traceback for the
    user) fails the test."""
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: uncaught {result.exception!r}") from result.exception
    return result.exit_code, result.stdout, result.stderr


def best_person(data: Path, photo: str) -> str | None:
    with Catalogue(data) as catalogue:
        (face,) = catalogue.search_photo(photo).faces
    best = face.matches[0]
    return best.person.name if best.person and best.verdict == "match" else None


def index_pointer(data: Path) -> Path:
    (pointer,) = [p for p in (data / "vectors").glob("ivf-*") if p.is_file()]
    return pointer


def index_folder(data: Path) -> Path:
    pointer = index_pointer(data)
    return pointer.parent / pointer.read_text()


# -- the vector index's pointer file (item 1) ---------------------------------------------------


@pytest.mark.parametrize("pointer", ["../../victim", "..", "../.."])
def test_a_hostile_index_pointer_deletes_nothing_and_the_index_is_rebuilt(
    data: Path, fr_rows: tuple[list[Labelled], list[Labelled]], pointer: str
) -> None:
    victim = data.parent / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    index_pointer(data).write_text(pointer)
    code, out, err = run("search", probe_of(fr_rows, "obama"), "--data", str(data))
    assert code == 0, err
    assert "MATCH" in out and "obama" in out
    assert "rebuilding the vector index" in err
    assert (victim / "keep.txt").read_text() == "precious"
    assert (data / CATALOG_FILE).is_file() and data.parent.is_dir()
    assert index_folder(data).is_dir()


# -- the catalogue file (item 2) ----------------------------------------------------------------


def damage_catalogue(data: Path, how: str) -> None:
    path = data / CATALOG_FILE
    content = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(content[: len(content) // 3])
    elif how == "not sqlite":
        path.write_bytes(b"%PDF-1.7 a document that landed here by mistake\n" * 100)
    elif how == "another program's":
        path.unlink()
        with sqlite3.connect(path) as other:
            other.execute("CREATE TABLE notes (text TEXT)")
            other.execute("INSERT INTO notes VALUES ('mine')")
        other.close()


@pytest.mark.parametrize("how", ["empty", "truncated", "not sqlite", "another program's"])
@pytest.mark.parametrize(
    "command", [["stats"], ["search", "PROBE"], ["find", "obama"], ["index", "PROBE"], ["people"]]
)
def test_a_catalogue_that_is_not_one_is_refused_and_nothing_is_written(
    data: Path,
    fr_rows: tuple[list[Labelled], list[Labelled]],
    how: str,
    command: list[str],
) -> None:
    damage_catalogue(data, how)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    probe = probe_of(fr_rows, "obama")
    code, out, err = run(*[probe if a == "PROBE" else a for a in command], "--data", str(data))
    assert code == 1, (out, err)
    assert str(data / CATALOG_FILE) in err and "Traceback" not in err
    assert err.count("\n") == 1  # one line: what and where
    assert "refusing" in err or "not a catalogue" in err
    after = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert after == before  # no new catalogue, no new index, no key


def test_serve_refuses_a_damaged_catalogue_without_minting_a_key(data: Path) -> None:
    damage_catalogue(data, "empty")
    code, _, err = run("serve", "--data", str(data), "--port", "8999")
    assert code == 1 and "empty (0 bytes)" in err
    assert (data / CATALOG_FILE).stat().st_size == 0


def test_a_catalogue_damaged_inside_fails_with_one_line(data: Path) -> None:
    """Pages overwritten in the middle: SQLite finds it mid-query; the user gets one line."""
    path = data / CATALOG_FILE
    content = bytearray(path.read_bytes())
    page = 4096
    for start in range(2 * page, len(content) - page, 2 * page):
        content[start : start + page] = b"\xa5" * page
    path.write_bytes(bytes(content))
    for command in (["stats"], ["people"], ["find", "obama"], ["maintenance"]):
        code, _, err = run(*command, "--data", str(data))
        assert code == 1, (command, err)
        assert "Traceback" not in err and str(path) in err, (command, err)


def test_a_new_catalogue_is_never_left_empty(tmp_path: Path) -> None:
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        assert catalogue.stats().photos == 0
    assert (tmp_path / "data" / CATALOG_FILE).stat().st_size > 0
    assert not [p.name for p in (tmp_path / "data").iterdir() if p.name.endswith(".new")]


# -- the vector index's contents (item 3) -------------------------------------------------------


def faces_of(data: Path, name: str) -> list[int]:
    with Catalogue(data) as catalogue:
        return [face.id for face in catalogue.person(name)[1]]


def swap_rows(folder: Path, data: Path, first: int, second: int) -> None:
    ids = np.load(folder / "ids.npy")
    vectors = np.load(folder / "vectors.npy")
    a, b = int(np.flatnonzero(ids == first)[0]), int(np.flatnonzero(ids == second)[0])
    vectors[[a, b]] = vectors[[b, a]]
    np.save(folder / "vectors.npy", vectors)


def test_swapped_vector_rows_never_give_a_wrong_match(
    data: Path, fr_rows: tuple[list[Labelled], list[Labelled]]
) -> None:
    obama, biden = faces_of(data, "obama")[0], faces_of(data, "biden")[0]
    swap_rows(index_folder(data), data, obama, biden)
    code, out, err = run("search", probe_of(fr_rows, "obama"), "--data", str(data))
    assert code == 0, err
    assert "MATCH" in out and "obama" in out and "biden" not in out.split("no match")[0]
    assert "damaged" in err and "rebuilding the vector index" in err


@pytest.mark.parametrize("name", ["vectors.npy", "ids.npy", "meta.json"])
def test_zeroed_index_files_are_rebuilt_not_trusted(
    data: Path, fr_rows: tuple[list[Labelled], list[Labelled]], name: str
) -> None:
    target = index_folder(data) / name
    target.write_bytes(bytes(target.stat().st_size))
    assert best_person(data, probe_of(fr_rows, "biden")) == "biden"


def test_an_index_changed_after_it_was_loaded_is_caught_by_the_catalogue(
    data: Path, fr_rows: tuple[list[Labelled], list[Labelled]]
) -> None:
    """Memory-mapped vectors rewritten under a running server: no checksum sees it then, but
    every reported distance is checked against the catalogue's own embedding."""
    notices: list[str] = []
    obama, biden = faces_of(data, "obama")[0], faces_of(data, "biden")[0]
    with Catalogue(data, notice=notices.append) as catalogue:
        index = catalogue.vector_index()
        vectors = np.array(index._vectors)  # type: ignore[attr-defined]
        ids = index.ids()
        a, b = int(np.flatnonzero(ids == obama)[0]), int(np.flatnonzero(ids == biden)[0])
        vectors[[a, b]] = vectors[[b, a]]
        index._vectors = vectors  # type: ignore[attr-defined]
        (face,) = catalogue.search_photo(probe_of(fr_rows, "biden")).faces
    assert face.matches[0].person is not None and face.matches[0].person.name == "biden"
    assert face.matches[0].verdict == "match"
    assert any("catalogue's embedding" in n for n in notices), notices


def test_the_library_refuses_a_damaged_catalogue_with_store_error(data: Path) -> None:
    damage_catalogue(data, "not sqlite")
    with pytest.raises(StoreError, match="not a catalogue"):
        Catalogue(data)


# -- thumbnails and crops (item 6) --------------------------------------------------------------


@pytest.fixture
def own_photos(fr_rows: tuple[list[Labelled], list[Labelled]], tmp_path: Path) -> Path:
    """Copies of one photo each of obama and biden, indexed: files the test may overwrite."""
    folder = tmp_path / "photos"
    for person in ("obama", "biden"):
        (folder / person).mkdir(parents=True)
        source = Path(next(r.path for r in fr_rows[0] if r.person == person))
        (folder / person / source.name).write_bytes(source.read_bytes())
    code, out, err = run(
        "index", str(folder), "--people-from-folders", "--data", str(tmp_path / "data")
    )
    assert code == 0, (out, err)
    return folder


def rewrite_keeping_size_and_time(path: Path, data: bytes) -> None:
    info = path.stat()
    data = (data + bytes(info.st_size))[: info.st_size]
    path.write_bytes(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


@pytest.mark.parametrize("rewrite", ["another photo", "same size and time"])
def test_a_photo_overwritten_after_indexing_is_reported_not_rendered(
    own_photos: Path, tmp_path: Path, rewrite: str
) -> None:
    data = tmp_path / "data"
    with Catalogue(data) as catalogue:
        key, _ = catalogue.create_key("admin")
        (face,) = catalogue.person("obama")[1]
    (obama,) = (own_photos / "obama").iterdir()
    (biden,) = (own_photos / "biden").iterdir()
    if rewrite == "another photo":
        obama.write_bytes(biden.read_bytes())
    else:
        original = bytearray(obama.read_bytes())
        original[len(original) // 2 :] = biden.read_bytes()[len(original) // 2 :]
        rewrite_keeping_size_and_time(obama, bytes(original))
    app = create_app(ServerSettings(data, analysis_workers=0, broker=None))
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {key}"}
        crop = client.get(f"/api/faces/{face.id}/crop", headers=headers)
        thumb = client.get(f"/api/photos/{face.photo.sha256}/thumbnail", headers=headers)
    for answer in (crop, thumb):
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["code"] == "photo_changed"
        assert str(obama) in answer.json()["error"]["message"]
    assert not list((data / "media").rglob("*.jpg"))  # nothing cached from the other bytes


# -- a full disk and a read-only data directory (item 12) -------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB file system of its own (tmpfs), so a test can fill it or make it read-only."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Take every free byte of `disk`."""
    with open(disk / "filler", "wb") as handle:
        try:
            while True:
                handle.write(bytes(65536))
                handle.flush()
        except OSError:
            pass
    while True:  # and the last few blocks
        try:
            with open(disk / f"filler-{os.urandom(4).hex()}", "wb") as handle:
                handle.write(bytes(4096))
        except OSError:
            break


def photo_count(data: Path) -> int:
    with Catalogue(data) as catalogue:
        return catalogue.stats().photos


def test_a_full_disk_gives_one_line_and_loses_nothing(
    data: Path, small_disk: Path, fr_rows: tuple[list[Labelled], list[Labelled]]
) -> None:
    on_disk = copy_data(data, small_disk / "data")
    before = photo_count(on_disk)
    shutil.rmtree(on_disk / "vectors")  # the next command must rebuild and save it
    fill(small_disk)
    new_photo = next(p.path for p in fr_rows[1] if p.person == "biden")
    commands = [
        ["stats"],
        ["search", probe_of(fr_rows, "obama")],
        ["find", "obama"],
        ["index", new_photo],
        ["maintenance"],
        ["reindex"],
    ]
    for command in commands:
        code, _, err = run(*command, "--data", str(on_disk))
        assert "Traceback" not in err, (command, err)
        assert code in (0, 1, 3), (command, code, err)
        if code:
            assert str(small_disk) in err or "disk is full" in err, (command, err)
            assert len(err.strip().splitlines()) <= 2, (command, err)  # progress + one line
    for filler in small_disk.glob("filler*"):
        filler.unlink()
    assert photo_count(on_disk) >= before
    assert best_person(on_disk, probe_of(fr_rows, "obama")) == "obama"


def test_a_read_only_data_directory_gives_one_line(
    data: Path, small_disk: Path, fr_rows: tuple[list[Labelled], list[Labelled]]
) -> None:
    on_disk = copy_data(data, small_disk / "data")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for command in (["stats"], ["search", probe_of(fr_rows, "obama")], ["index", str(on_disk)]):
        code, _, err = run(*command, "--data", str(on_disk))
        assert code == 1 and "Traceback" not in err, (command, err)
        assert str(on_disk) in err and len(err.strip().splitlines()) == 1, (command, err)


# -- iddetective check (item 12) ----------------------------------------------------------------


def test_check_passes_an_intact_data_directory(data: Path) -> None:
    code, out, err = run("check", "--data", str(data))
    assert code == 0, (out, err)
    for part in ("catalogue", "vector index", "photo files", "media cache"):
        assert f"{part}: " in out and "problems" not in out


def reseal(folder: Path) -> None:
    """Recompute the index's checksums, as someone altering it on purpose would."""
    meta = json.loads((folder / "meta.json").read_text())
    meta.pop("seal")
    meta["sha256"] = file_digests(folder, sorted(meta["sha256"]))
    (folder / "meta.json").write_text(sealed(meta))


def test_check_finds_each_kind_of_damage_and_changes_nothing(
    own_photos: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    obama, biden = faces_of(data, "obama")[0], faces_of(data, "biden")[0]
    folder = index_folder(data)
    swap_rows(folder, data, obama, biden)
    code, out, _ = run("check", "--data", str(data))
    assert code == 1 and f"vector index: {index_pointer(data)}" in out and "damaged" in out
    reseal(folder)  # checksums that agree with the swapped rows: the catalogue still differs
    code, out, _ = run("check", "--data", str(data))
    assert code == 1 and "2 faces' vectors differ from the catalogue's" in out
    (photo,) = (own_photos / "obama").iterdir()
    rewrite_keeping_size_and_time(photo, photo.read_bytes()[::-1])
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    code, out, _ = run("check", "--data", str(data))
    assert code == 1 and f"photo files: {photo}: changed since it was indexed" in out
    code, out, _ = run("check", "--quick", "--data", str(data))
    assert f"{photo}" not in out  # same size and time: only reading it tells
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_check_reports_damage_inside_the_catalogue(data: Path) -> None:
    with sqlite3.connect(data / CATALOG_FILE) as db:
        db.execute("PRAGMA writable_schema = ON")
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute("DELETE FROM photo WHERE id = (SELECT min(photo_id) FROM face)")
    db.close()
    code, out, _ = run("check", "--data", str(data))
    assert code == 1 and f"catalogue: {data / CATALOG_FILE}" in out
    assert "refers to a missing photo" in out


def test_the_server_answers_503_when_the_disk_fills(data: Path, small_disk: Path) -> None:
    on_disk = copy_data(data, small_disk / "data")
    with Catalogue(on_disk) as catalogue:
        key, _ = catalogue.create_key("admin")
        catalogue.vector_index()
    app = create_app(ServerSettings(on_disk, analysis_workers=0, broker=None))
    with TestClient(app, raise_server_exceptions=False) as client:
        fill(small_disk)
        headers = {"Authorization": f"Bearer {key}"}
        answers = [client.get(f"/api/find?q=obama{n}", headers=headers) for n in range(50)]
    failed = [a for a in answers if a.status_code != 200]
    assert failed, "50 audited searches on a full disk all succeeded"
    for answer in failed:  # the audit cannot be written: the search is refused, not unaudited
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "store_unavailable"
        assert str(on_disk / CATALOG_FILE) in answer.json()["error"]["message"]


# -- an erasure interrupted by a crash (item 15) ------------------------------------------------

#: Erase a person (argv 2) in the data directory (argv 1), dying as the vector index is saved:
#: the catalogue has committed the erasure, the index files still hold the faces.
ERASE_THEN_DIE = """
import os, sys
from iddetective.catalogue import Catalogue
from iddetective.vector_index.ivf import IvfIndex

IvfIndex.save = lambda self, path, epoch: os._exit(9)
with Catalogue(sys.argv[1]) as catalogue:
    catalogue.erase_person(sys.argv[2])
"""


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_an_erasure_killed_before_the_index_is_saved_leaves_no_vector_after_maintenance(
    data: Path, fr_rows: tuple[list[Labelled], list[Labelled]]
) -> None:
    with Catalogue(data) as catalogue:
        faces = catalogue.person("biden")[1]
        _, vectors = catalogue.store.embeddings_of(np.array([f.id for f in faces]))
    needle = vectors[0].astype("<f4").tobytes()
    # A save killed earlier left a directory of the index beside the current one.
    abandoned = index_folder(data).with_name(f"{index_pointer(data).name}.1.abandoned")
    shutil.copytree(index_folder(data), abandoned)
    os.utime(abandoned, (1, 1))
    died = subprocess.run(
        [sys.executable, "-c", ERASE_THEN_DIE, str(data), "biden"], check=False, timeout=300
    )
    assert died.returncode == 9
    assert files_holding(data / "vectors", needle)  # the crash left the erased vectors
    code, out, _ = run("search", probe_of(fr_rows, "biden"), "--data", str(data), "--json")
    matches = [m for face in json.loads(out)["faces"] for m in face["matches"]]
    named = {m["person"]["name"] for m in matches if m["person"]}
    assert code == 0 and "biden" not in named  # caught up before any answer
    code, _, err = run("maintenance", "--data", str(data))
    assert code == 0, err
    assert not files_holding(data, needle)
    assert not abandoned.exists()
