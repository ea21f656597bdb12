"""Indexing through the library: idempotence, changed and moved files, prune, remove, index file.

Checked through the store, as a user of the library would see it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from iddetective.catalogue import CATALOG_FILE, Catalogue
from iddetective.errors import AmbiguousPerson, NotFound
from iddetective.ingest import indexing as ingest

from support.facesets import read_labels, require_set, write_manifest

pytestmark = pytest.mark.faces


@pytest.fixture(scope="module")
def lfw_people() -> dict[str, list[str]]:
    """A few lfw_dev people with several photos: name -> paths."""
    rows = read_labels(require_set("lfw_dev"))
    chosen: dict[str, list[str]] = {}
    for row in rows:
        chosen.setdefault(row.person, []).append(row.path)
    several = {k: v for k, v in chosen.items() if len(v) >= 3}
    return dict(list(several.items())[:3])


@pytest.fixture
def photos(tmp_path: Path, lfw_people: dict[str, list[str]]) -> Path:
    """A private folder PERSON/photo.jpg with copies of three people's photos."""
    folder = tmp_path / "photos"
    for person, paths in lfw_people.items():
        (folder / person).mkdir(parents=True)
        for path in paths[:3]:
            shutil.copy2(path, folder / person / os.path.basename(path))
    return folder


def photo_rows(data: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(data / CATALOG_FILE) as db:
        return db.execute("SELECT sha256, face_count FROM photo ORDER BY sha256").fetchall()


def test_reindex_skips_unchanged_files_without_reading(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    with Catalogue(data, create=True) as catalogue:
        first = catalogue.index([str(photos)], people_from_folders=True)
        assert first.indexed == 9 and not first.failed
        before = photo_rows(data)

        def no_reading(path: str) -> None:
            raise AssertionError(f"{path} was read again")

        monkeypatch.setattr(ingest, "_read", no_reading)
        again = catalogue.index([str(photos)], people_from_folders=True)
    assert again.unchanged == 9 and again.indexed == 0
    assert photo_rows(data) == before


def test_labels_from_folders_and_people(
    photos: Path, tmp_path: Path, lfw_people: dict[str, list[str]]
) -> None:
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        catalogue.index([str(photos)], people_from_folders=True)
        people = {p.name: p for p in catalogue.people()}
        assert set(people) == set(lfw_people)
        assert all(p.photos == 3 and p.faces == 3 for p in people.values())
        name = next(iter(lfw_people))
        assert catalogue.store.resolve_person(name.upper()).id == people[name].id
        assert catalogue.store.resolve_person(people[name].id).name == name
        with pytest.raises(NotFound, match="no person"):
            catalogue.store.resolve_person("Nobody At All")


def test_ambiguous_name_lists_candidates(photos: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Catalogue(data, create=True) as catalogue:
        catalogue.index([str(photos)], people_from_folders=True)
        name = catalogue.people()[0].name
    with sqlite3.connect(data / CATALOG_FILE) as db:
        db.execute(
            "INSERT INTO person (id, name, created_at, updated_at) VALUES ('p_twin', ?, '', '')",
            (name,),
        )
    with Catalogue(data) as catalogue, pytest.raises(AmbiguousPerson) as raised:
        catalogue.store.resolve_person(name)
    assert "p_twin" in str(raised.value) and "2 people" in str(raised.value)


def test_same_bytes_at_new_path_records_the_path(photos: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Catalogue(data, create=True) as catalogue:
        catalogue.index([str(photos)])
        original = next(photos.rglob("*.jpg"))
        copy = tmp_path / "elsewhere" / "copy.jpg"
        copy.parent.mkdir()
        shutil.copy2(original, copy)
        report = catalogue.index([str(copy)])
        assert report.duplicates == 1 and report.indexed == 0
        stored = catalogue.stats()
    assert stored.photos == 9
    with sqlite3.connect(data / CATALOG_FILE) as db:
        (count,) = db.execute("SELECT count(*) FROM photo_file").fetchone()
    assert count == 10


def test_changed_file_is_picked_up_and_prune_forgets_missing(photos: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Catalogue(data, create=True) as catalogue:
        catalogue.index([str(photos)])
        first, second = sorted(photos.rglob("*.jpg"))[:2]
        shutil.copy2(second, first)  # `first` now holds other bytes
        os.utime(first, ns=(1, 1))
        report = catalogue.index([str(photos)])
        assert report.unchanged == 8 and report.duplicates == 1
        assert catalogue.stats().photos == 8  # the old bytes of `first` are gone
        second.unlink()
        pruned = catalogue.index([str(photos)], prune=True)
        assert pruned.pruned == 1
        assert catalogue.stats().photos == 8  # `first` still holds those bytes
        first.unlink()
        catalogue.index([str(photos)], prune=True)
        assert catalogue.stats().photos == 7


def test_remove_photo_by_path_and_by_sha(photos: Path, tmp_path: Path) -> None:
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        catalogue.index([str(photos)])
        paths = sorted(photos.rglob("*.jpg"))
        removed = catalogue.remove_photo(str(paths[0]))
        assert removed.paths == (str(paths[0]),)
        catalogue.remove_photo(catalogue.store.faces([2])[2].photo.sha256)
        assert catalogue.stats().photos == 7
        assert len(catalogue.vector_index()) == catalogue.stats().faces
        with pytest.raises(NotFound, match="no stored photo"):
            catalogue.remove_photo(str(paths[0]))


def test_missing_or_corrupt_index_file_is_rebuilt(photos: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Catalogue(data, create=True) as catalogue:
        catalogue.index([str(photos)], people_from_folders=True)
        query = next(photos.rglob("*.jpg"))
        expected = catalogue.search_photo(str(query))
    vectors = data / "vectors"

    def garble() -> None:
        for saved in [p for p in vectors.rglob("*") if p.is_file()]:
            saved.write_bytes(b"garbage")

    for damage in (garble, lambda: shutil.rmtree(vectors)):
        damage()
        with Catalogue(data) as catalogue:
            again = catalogue.search_photo(str(query))
        assert again.faces[0].matches == expected.faces[0].matches
        assert any(vectors.iterdir())


def test_stale_index_file_is_not_trusted(photos: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    people = sorted(p for p in photos.iterdir())
    with Catalogue(data, create=True) as catalogue:
        catalogue.index([str(people[0])], people_from_folders=True)
    stale = tmp_path / "stale-vectors"
    shutil.copytree(data / "vectors", stale)
    with Catalogue(data) as catalogue:
        catalogue.index([str(people[1])])
    shutil.rmtree(data / "vectors")
    shutil.copytree(stale, data / "vectors")  # the index files from before the second run
    with Catalogue(data) as catalogue:
        assert len(catalogue.vector_index()) == catalogue.stats().faces == 6


def test_search_restricted_to_people(photos: Path, tmp_path: Path) -> None:
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        catalogue.index([str(photos)], people_from_folders=True)
        names = sorted(p.name for p in catalogue.people())
        query = str(sorted((photos / names[0]).iterdir())[0])
        everyone = catalogue.search_photo(query)
        best = everyone.faces[0].matches[0].person
        assert best is not None and best.name == names[0]
        others = catalogue.search_photo(query, people=names[1:])
        found = {m.person.name for m in others.faces[0].matches if m.person}
        assert found <= set(names[1:])
        allowed = catalogue.store.face_ids_of_people([catalogue.store.resolve_person(names[1]).id])
        assert len(allowed) == 3 and np.all(np.diff(allowed) > 0)


def test_manifest_labels_apply_to_already_indexed_photos(photos: Path, tmp_path: Path) -> None:
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        catalogue.index([str(photos)])
        assert catalogue.people() == []
        rows = read_labels(require_set("lfw_dev"))
        manifest_rows = [r for r in rows if r.person == photos.iterdir().__next__().name][:1]
        copies = [
            type(r)(str(photos / r.person / os.path.basename(r.path)), r.person)
            for r in manifest_rows
        ]
        manifest = write_manifest(tmp_path / "labels.csv", copies)
        report = catalogue.index([], people=str(manifest))
        assert report.unchanged == 1
        assert [p.faces for p in catalogue.people()] == [1]


def test_missing_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no catalogue in"):
        Catalogue(tmp_path / "nothing-here")


def test_fixed_manifest_row_no_longer_listed_as_failed(photos: Path, tmp_path: Path) -> None:
    photo = next(photos.rglob("*.jpg"))
    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,person\n{photo},\n")
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        catalogue.index([], people=str(manifest))
        assert [f.path for f in catalogue.failures()] == [f"{manifest} line 2"]
        manifest.write_text(f"path,person\n{photo},Ann Lee\n")
        report = catalogue.index([], people=str(manifest))
        assert report.indexed == 1 and not report.failed
        assert catalogue.failures() == []
