"""The contract every `Store` passes, on synthetic outcomes (no face model needed).

Every test runs against each registered store: SQLite on a file, PostgreSQL on a fresh
database of the session's server (tests/conftest.py). The tests at the end compare the two
directly on random catalogues and queries, and check what only the server store has.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iddetective.entities import (
    Account,
    ApiKey,
    Box,
    FaceAnalysis,
    FailedPhoto,
    FileStat,
    FoundPerson,
    IndexedPhoto,
    KnownPhoto,
    Outcome,
    PersonRecord,
    PhotoAnalysis,
    Provenance,
)
from iddetective.errors import (
    AmbiguousPerson,
    LastAdminKey,
    NotFound,
    StoreBusy,
    StoreError,
    UsageError,
)
from iddetective.faces.model_cards import ModelCard, ModelCardError
from iddetective.matching import distances
from iddetective.matching.calibration import CalibrationError, calibration_for
from iddetective.query.language import And, Expr, Not, Or, QueryError, Term, parse_query
from iddetective.registry import available, resolve_class
from iddetective.store import Store
from iddetective.store.sqlite import SqliteStore
from iddetective.vector_index.exact import ExactIndex

from support.outcomes import MODEL, photo, vector
from support.plans import hnsw_plan
from support.postgres import EmbeddedPostgres

Opener = Callable[[], Store]


# -- opening catalogues ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def catalogue_template(postgres_server: EmbeddedPostgres) -> str:
    """A database the PostgreSQL store has migrated once: tests copy it instead of migrating
    their own (test_postgres_migrates_an_empty_database_once migrates one)."""
    name = postgres_server.new_database()
    resolve_class("store", "postgresql")(postgres_server.url(name)).close()
    return name


def catalogue_opener(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens connections to one new, empty catalogue of the store `name`: a file for SQLite,
    a fresh database of the session's PostgreSQL server (started only when such a test runs)."""
    where: object = tmp_path / "catalog.sqlite"
    if name == "postgresql":
        server: EmbeddedPostgres = request.getfixturevalue("postgres_server")
        database = server.new_database(request.getfixturevalue("catalogue_template"))
        request.addfinalizer(lambda: server.drop_database(database))
        where = server.url(database)
    opened: list[Store] = []

    def open_catalogue() -> Store:
        store: Store = resolve_class("store", name)(where)
        assert isinstance(store, Store)
        opened.append(store)
        return store

    def close_opened() -> None:
        for store in opened:
            store.close()

    request.addfinalizer(close_opened)
    return open_catalogue


@pytest.fixture(params=available("store"))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return catalogue_opener(request.param, request, tmp_path)


@pytest.fixture()
def store(opener: Opener) -> Store:
    return opener()


def add(store: Store, external_id: str, name: str, **details: object) -> str:
    person, _ = store.upsert_person(PersonRecord(external_id, name, **details))  # type: ignore[arg-type]
    return person.id


def names(found: list[FoundPerson]) -> list[str]:
    return [f.person.name for f in found]


def face_ids(store: Store) -> list[int]:
    return [int(i) for i in store.face_ids(MODEL)]


# -- ingestion ----------------------------------------------------------------------------------


def test_save_is_idempotent_by_sha256(store: Store) -> None:
    first = store.save([photo("a.jpg", faces=2)])
    again = store.save([photo("a.jpg", faces=2)])
    assert [r.status for r in first] == ["indexed"] and first[0].faces == 2
    assert [r.status for r in again] == ["unchanged"]
    assert store.stats().photos == 1 and store.stats().faces == 2


def test_epoch_moves_with_faces_only(store: Store) -> None:
    start = store.faces_epoch()
    store.save([FailedPhoto(FileStat("/photos/bad.jpg", 1, 1), "empty file (0 bytes)")])
    assert store.faces_epoch() == start
    store.save([photo("a.jpg")])
    assert store.faces_epoch() > start


def test_known_photo_that_vanished_becomes_a_failure(store: Store) -> None:
    sha = hashlib.sha256(b"gone").hexdigest()
    (result,) = store.save([KnownPhoto(FileStat("/photos/gone.jpg", 5, 5), sha, None)])
    assert result.status == "failed" and "removed from the catalogue" in (result.reason or "")
    record = store.file_record("/photos/gone.jpg")
    assert record is not None and record.stat.size == -1  # never skipped as unchanged


def test_success_clears_an_earlier_failure(store: Store) -> None:
    store.save([FailedPhoto(FileStat("/photos/a.jpg", 1, 1), "truncated")])
    assert [f.path for f in store.failures()] == ["/photos/a.jpg"]
    store.save([photo("a.jpg")])
    assert store.failures() == []
    record = store.file_record("/photos/a.jpg")
    assert record is not None and record.sha256 == photo("a.jpg").sha256


def test_label_goes_to_one_face_and_flags_review(store: Store) -> None:
    store.save([photo("group.jpg", faces=3, label="Ann Lee")])
    (person,) = store.people()
    assert (person.name, person.faces, person.photos) == ("Ann Lee", 1, 1)
    (review,) = store.reviews()
    assert review.person is not None and review.person.id == person.id
    assert review.faces == 3 and "largest, most central" in review.reason


def test_embeddings_faces_and_people_filter(store: Store) -> None:
    store.save([photo("a.jpg", label="Ann"), photo("b.jpg", faces=2)])
    ids, vectors = next(store.embeddings("m"))
    assert len(ids) == 3 and vectors.shape == (3, 128) and vectors.dtype == np.float32
    assert list(store.embeddings("other-model")) == []
    faces = store.faces(ids.tolist())
    ann = store.resolve_person("ann")
    assert store.face_ids_of_people([ann.id]).tolist() == [
        i for i, f in faces.items() if f.person == ann
    ]


def test_remove_photo(store: Store) -> None:
    store.save([photo("a.jpg"), photo("b.jpg")])
    removed = store.remove_photo("/photos/a.jpg")
    assert removed.paths == ("/photos/a.jpg",)
    assert store.stats().photos == 1 and store.stats().faces == 1
    with pytest.raises(NotFound):
        store.remove_photo("/photos/a.jpg")


def test_the_same_bytes_at_another_path_are_one_photo(store: Store) -> None:
    original = photo("a.jpg")
    copy = IndexedPhoto(FileStat("/photos/copy.jpg", 100, 2), original.sha256, original.analysis)
    store.save([original])
    (result,) = store.save([copy])
    assert result.status == "duplicate"
    assert store.has_photo(original.sha256) and not store.has_photo("0" * 64)
    stored = store.photo(original.sha256.upper())  # a SHA-256 in any case
    assert (
        stored.paths == ("/photos/a.jpg", "/photos/copy.jpg") == store.photo("/photos/a.jpg").paths
    )
    assert (stored.width, stored.height) == (400, 100)
    record = store.file_record("/photos/copy.jpg")
    assert record is not None and (record.stat.size, record.stat.mtime_ns) == (100, 2)
    assert store.file_record("/photos/elsewhere.jpg") is None
    assert store.stats().photos == 1
    with pytest.raises(NotFound):
        store.photo("/photos/elsewhere.jpg")


def test_a_changed_file_leaves_its_old_photo_behind_only_if_another_file_has_it(
    store: Store,
) -> None:
    store.save([photo("a.jpg", content="old")])
    epoch = store.faces_epoch()
    (result,) = store.save([photo("a.jpg", content="new")])
    assert result.status == "indexed"
    assert store.stats().photos == 1 and store.faces_epoch() > epoch
    assert not store.has_photo(photo("a.jpg", content="old").sha256)


def test_forgetting_files_that_are_gone(store: Store, tmp_path: Path) -> None:
    kept, gone = tmp_path / "kept.jpg", tmp_path / "gone.jpg"
    kept.write_bytes(b"x")
    outcomes: list[Outcome] = [
        IndexedPhoto(FileStat(str(kept), 1, 1), "a" * 64, photo("k.jpg").analysis),
        IndexedPhoto(FileStat(str(gone), 1, 1), "b" * 64, photo("g.jpg").analysis),
        FailedPhoto(FileStat(str(tmp_path / "bad.jpg"), 1, 1), "truncated"),
        FailedPhoto(FileStat("/manifest/row-3", 0, 0), "bad row"),
        FailedPhoto(FileStat("/manifest/row-4", 0, 0), "bad row"),
    ]
    store.save(outcomes)
    assert store.forget_missing_files([str(tmp_path) + "/"]) == 1
    assert store.stats().photos == 1 and not store.has_photo("b" * 64)
    assert sorted(f.path for f in store.failures()) == ["/manifest/row-3", "/manifest/row-4"]
    assert store.forget_failures("/manifest/") == 2 and store.failures() == []


def test_provenance_of_photos(store: Store) -> None:
    given_origin = Provenance("upload:42", "key k_1", "consent form 7")
    store.save([photo("a.jpg", provenance=given_origin), photo("bb.jpg")])
    ids = {f.photo.paths[0]: f.photo.id for f in store.faces(face_ids(store)).values()}
    found = store.photo_provenance([ids["/photos/a.jpg"], ids["/photos/bb.jpg"], 999])
    assert found == {
        ids["/photos/a.jpg"]: given_origin,
        ids["/photos/bb.jpg"]: Provenance("/photos/bb.jpg"),
    }


def test_two_writers_store_each_photo_once(opener: Opener) -> None:
    first, second = opener(), opener()
    batch = [photo(f"p{i:02d}.jpg", content=f"bytes {i}") for i in range(12)]
    copies = [
        IndexedPhoto(FileStat(f"/copies/{i:02d}.jpg", 1, 1), p.sha256, p.analysis)
        for i, p in enumerate(batch)
    ]
    results: list[list[str]] = []

    def write(store: Store, outcomes: list[IndexedPhoto]) -> None:
        for start in range(0, len(outcomes), 4):
            results.append([r.status for r in store.save(outcomes[start : start + 4])])

    threads = [
        threading.Thread(target=write, args=(first, batch)),
        threading.Thread(target=write, args=(second, list(reversed(copies)))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = [status for done in results for status in done]
    assert statuses.count("indexed") == 12 and statuses.count("duplicate") == 12
    assert store_photos(first) == (12, 12) == store_photos(second)
    assert all(len(first.photo(p.sha256).paths) == 2 for p in batch)


def store_photos(store: Store) -> tuple[int, int]:
    stats = store.stats()
    return stats.photos, stats.faces


# -- faces --------------------------------------------------------------------------------------


def test_embeddings_come_back_as_stored_in_batches(store: Store) -> None:
    store.save([photo("a.jpg", seeds=[1, 2]), photo("b.jpg", seeds=[3]), photo("c.jpg", seeds=[])])
    batches = list(store.embeddings(MODEL, batch=2))
    assert [len(ids) for ids, _ in batches] == [2, 1]
    ids = np.concatenate([ids for ids, _ in batches])
    vectors = np.concatenate([v for _, v in batches])
    assert ids.dtype == np.int64 and list(ids) == sorted(ids) == face_ids(store)
    assert np.array_equal(vectors, np.stack([vector(1), vector(2), vector(3)]).astype(np.float32))
    some, found = store.embeddings_of(np.array([ids[2], 10**9, ids[0]]))
    assert list(some) == [ids[0], ids[2]] and np.array_equal(found, vectors[[0, 2]])
    none, empty = store.embeddings_of(np.array([10**9]))
    assert none.shape == (0,) and empty.shape == (0, 0)
    assert store.face_ids("other").shape == (0,)
    assert set(store.faces([int(ids[0]), 10**9])) == {int(ids[0])}
    assert store.stats().photos_without_face == 1


#: A second embedding model, wider than dlib's ResNet: a catalogue holds faces of both.
WIDE, WIDE_DIM = "wide-model", 512


def test_faces_of_two_models_of_different_dimensions_are_kept_apart(store: Store) -> None:
    store.save(
        [
            photo("ann.jpg", seeds=[1, 2], label="Ann"),
            photo("ann-wide.jpg", seeds=[1, 2], label="Ann", model=WIDE, dimension=WIDE_DIM),
            photo("wide.jpg", seeds=[3], model=WIDE, dimension=WIDE_DIM),
        ]
    )
    assert [(m.name, m.dimension) for m in store.models()] == [(MODEL, 128), (WIDE, WIDE_DIM)]
    assert all(datetime.fromisoformat(m.first_seen).tzinfo for m in store.models())
    assert (store.model_dimension(MODEL), store.model_dimension(WIDE)) == (128, WIDE_DIM)
    assert store.model_dimension("unknown") is None
    narrow_ids, narrow = next(store.embeddings(MODEL))
    wide_ids, wide = next(store.embeddings(WIDE))
    assert narrow.shape == (2, 128) and wide.shape == (3, WIDE_DIM)
    assert np.array_equal(wide, np.stack([vector(s, WIDE_DIM) for s in (1, 2, 3)]))
    assert wide_ids.tolist() == store.face_ids(WIDE).tolist()
    assert not set(narrow_ids.tolist()) & set(wide_ids.tolist())
    every = np.concatenate([narrow_ids, wide_ids])
    ids, vectors = store.embeddings_of(every, WIDE)  # the model's own faces only
    assert ids.tolist() == wide_ids.tolist() and np.array_equal(vectors, wide)
    assert store.embeddings_of(np.array([10**9]), WIDE)[1].shape == (0, WIDE_DIM)
    with pytest.raises(StoreError, match="embeddings of 128 and 512 dimensions"):
        store.embeddings_of(every)  # without a model, they cannot be stacked
    assert store.unnamed_faces(WIDE, only_new=False).vectors.shape == (2, WIDE_DIM)
    # Each model searched on its own, with its own vectors.
    for model, dimension, held, own in (
        (MODEL, 128, narrow_ids, narrow),
        (WIDE, 512, wide_ids, wide),
    ):
        index = ExactIndex(dimension)
        for batch_ids, batch in store.embeddings(model):
            index.add(batch_ids, batch)
        found = index.search(own[-1:], 1)[0]
        assert found.ids.tolist() == held[-1:].tolist() and found.distances[0] < 1e-3
    # An opt-out is of a model too, and blocks that model's faces only.
    store.add_optout(WIDE, vector(4, WIDE_DIM), "admin", within=0.43)
    assert store.optout_embeddings(WIDE).shape == (1, WIDE_DIM)
    assert store.optout_embeddings(MODEL).shape == (0, 128)
    blocked = photo("blocked.jpg", seeds=[4], model=WIDE, dimension=WIDE_DIM).analysis
    assert store.opted_out(blocked) == [True]
    assert store.opted_out(photo("narrow.jpg", seeds=[4]).analysis) == [False]
    # Erasing a person takes their faces of every model; the models stay recorded.
    ann = store.resolve_person("Ann")
    assert len(store.faces_of_person(ann.id)) == 2
    erasure = store.erase_person(ann.id, "admin")
    assert len(erasure.faces) == 2 and {p.paths for p in erasure.photos} == set()
    store.remove_photo("/photos/wide.jpg")
    store.remove_photo("/photos/ann.jpg")
    store.remove_photo("/photos/ann-wide.jpg")
    assert list(store.embeddings(MODEL)) == [] == list(store.embeddings(WIDE))
    assert store.stats().faces == 0 and len(store.models()) == 2


def test_a_vector_of_another_dimension_than_its_models_is_refused(store: Store) -> None:
    store.save([photo("a.jpg")])
    refused = (
        r"refused a 512-dimensional vector of the model 'm': the catalogue records that "
        r"model's vectors as 128-dimensional"
    )
    with pytest.raises(StoreError, match=refused):
        store.save([photo("b.jpg"), photo("c.jpg", model=MODEL, dimension=512)])
    assert store.stats().photos == 1  # the batch is one transaction: none of it stored
    with pytest.raises(StoreError, match=refused):
        store.add_optout(MODEL, vector(1, 512), "admin", within=0.43)
    assert store.optouts() == []
    mixed = photo("mixed.jpg", seeds=[1], model="new-model", dimension=192)
    odd = photo("odd.jpg", seeds=[2], model="new-model", dimension=256)
    with pytest.raises(StoreError, match=r"256-dimensional vector of the model 'new-model'"):
        store.save([mixed, odd])  # one batch cannot give a new model two dimensions
    assert store.model_dimension("new-model") is None  # nor record it: rolled back
    store.save([mixed])
    assert store.model_dimension("new-model") == 192
    assert next(store.embeddings("new-model"))[1].shape == (1, 192)


def test_faces_of_a_person(store: Store) -> None:
    store.save([photo("a.jpg", label="Ann"), photo("bb.jpg", label="Ann"), photo("c.jpg")])
    ann = store.resolve_person("Ann")
    faces = store.faces_of_person(ann.id)
    assert [f.photo.paths for f in faces] == [("/photos/a.jpg",), ("/photos/bb.jpg",)]
    assert all(f.person == ann and f.box == Box(10, 10, 90, 90) for f in faces)
    assert store.face_ids_of_people([ann.id, "p_nobody"]).tolist() == [f.id for f in faces]
    assert store.face_ids_of_people([]).tolist() == []
    (summary,) = store.people()
    assert (summary.faces, summary.photos) == (2, 2)
    assert store.stats().unknown_faces == 1


def test_faces_of_a_person_come_a_page_at_a_time(store: Store) -> None:
    store.save([photo(f"{'x' * i}.jpg", label="Ann") for i in range(1, 6)] + [photo("c.jpg")])
    ann = store.resolve_person("Ann")
    every = store.faces_of_person(ann.id)
    assert len(every) == 5 and [f.id for f in every] == sorted(f.id for f in every)
    pages = [store.faces_of_person(ann.id, limit=2, offset=start) for start in (0, 2, 4, 6)]
    assert [[f.id for f in page] for page in pages] == [
        [f.id for f in every[0:2]],
        [f.id for f in every[2:4]],
        [f.id for f in every[4:]],
        [],
    ]
    assert pages[1][0] == every[2]
    summary = store.person_summary(ann.id)
    assert (summary.id, summary.name, summary.faces, summary.photos) == (ann.id, "Ann", 5, 5)
    with pytest.raises(NotFound):
        store.person_summary("p_nobody")


def test_lists_and_names_sort_and_match_as_sqlite_nocase_does(store: Store) -> None:
    # NOCASE folds ASCII letters only and orders the rest by code point, in both stores.
    ann = add(store, "e1", "Ann", lists=("beta", "Émile", "Alpha", "alpha 2", "_under"))
    add(store, "e2", "Émile Zola")
    assert store.profile(ann).lists == ("_under", "Alpha", "alpha 2", "beta", "Émile")
    assert store.resolve_person("ÉMILE ZOLA").name == "Émile Zola"
    with pytest.raises(NotFound):
        store.resolve_person("émile zola")  # É is not an ASCII letter: no fold
    query = parse_query('list:"ALPHA"')
    assert [p.id for p in store.people_matching(query)] == [ann]
    with pytest.raises(QueryError):
        store.people_matching(parse_query('list:"émile"'))


# -- people ------------------------------------------------------------------------------------


def test_upsert_is_idempotent_and_adds_details(store: Store) -> None:
    record = PersonRecord(
        "ext-1",
        "Ann Lee",
        aliases=("Annie",),
        accounts=(Account("telegram", "ann_lee", "https://t.me/ann_lee"),),
        lists=("Alumni 2010",),
        notes="met at the conference",
        provenance=Provenance("people.csv", "admin", "contract"),
    )
    first, created = store.upsert_person(record)
    again, created_again = store.upsert_person(record)
    assert created and not created_again and first.id == again.id
    renamed, _ = store.upsert_person(
        PersonRecord(
            "ext-1",
            "Ann Lee-Smith",
            lists=("Team", "alumni 2010"),  # a list is named in any case
            accounts=(Account("telegram", "ann_lee"),),  # no URL: the known one stays
        )
    )
    profile = store.profile(first.id)
    assert renamed.id == first.id and profile.person.name == "Ann Lee-Smith"
    assert profile.aliases == ("Annie",) and profile.lists == ("Alumni 2010", "Team")
    assert profile.accounts == (Account("telegram", "ann_lee", "https://t.me/ann_lee"),)
    assert profile.external_id == "ext-1" and profile.notes == ""
    assert profile.provenance == Provenance("people.csv", "admin", "contract")
    assert store.person_by_external_id("ext-1") == renamed
    assert store.person_by_external_id("ext-2") is None
    assert names(store.find("lee-smith", 5)) == ["Ann Lee-Smith"]
    assert store.find("ann lee", 5)[0].field == "name"  # the old name is not indexed any more
    assert not [f for f in store.find("ann lee", 5) if f.value == "Ann Lee"]
    with pytest.raises(NotFound):
        store.profile("p_nobody")


def test_an_account_owned_by_someone_else_is_refused_and_nothing_is_written(
    store: Store,
) -> None:
    add(store, "a", "Ann", accounts=(Account("instagram", "sunny"),))
    with pytest.raises(UsageError, match=r"instagram account 'sunny' already belongs to Ann"):
        store.upsert_person(PersonRecord("b", "Bob", accounts=(Account("instagram", "sunny"),)))
    assert store.person_by_external_id("b") is None
    assert names(store.find("bob", 5)) == []
    assert [p.name for p in store.people()] == ["Ann"]


def test_relations_read_both_ways_and_are_not_duplicated(store: Store) -> None:
    ann, bob = add(store, "a", "Ann"), add(store, "b", "Bob")
    assert store.add_relation(ann, bob, "friend")
    assert not store.add_relation(bob, ann, "friend")
    assert store.add_relation(bob, ann, "colleague")
    assert [(k, p.name) for k, p in store.profile(ann).relations] == [
        ("colleague", "Bob"),
        ("friend", "Bob"),
    ]
    assert [(k, p.name) for k, p in store.profile(bob).relations] == [
        ("colleague", "Ann"),
        ("friend", "Ann"),
    ]
    with pytest.raises(UsageError, match="themselves"):
        store.add_relation(ann, ann, "friend")


def test_resolve_a_person_by_id_or_unambiguous_name(store: Store) -> None:
    ann = add(store, "1", "Ann Lee")
    first, second = add(store, "2", "Bo"), add(store, "3", "Bo")
    assert store.resolve_person(ann).name == "Ann Lee"
    assert store.resolve_person("ANN LEE").id == ann
    with pytest.raises(AmbiguousPerson) as ambiguous:
        store.resolve_person("bo")
    assert ambiguous.value.candidates == sorted([(first, "Bo"), (second, "Bo")])
    with pytest.raises(NotFound, match="no person has the id or name 'Ann'"):
        store.resolve_person("Ann")


FIND_CASES = [
    ("petr", {"Пётр Иванов", "Petr Novak"}),
    ("Пётр", {"Пётр Иванов", "Petr Novak"}),
    ("ПЕТР", {"Пётр Иванов", "Petr Novak"}),
    ("ivanov", {"Пётр Иванов"}),
    ("jose", {"José Álvarez"}),
    ("ÁLVAREZ", {"José Álvarez"}),
    ("muller", {"Jürgen Müller"}),
    ("olga", {"Ольга Сергеевна"}),
    ("сергеевна", {"Ольга Сергеевна"}),
    ("ezhik", {"Ёжиков Семён"}),
    ("семен", {"Ёжиков Семён"}),
    ("ivan_", {"Пётр Иванов"}),  # a handle, underscore and all
    ("nobody-like-this", set()),
    ("100%", {"100% Real"}),  # LIKE's wildcards are plain characters here
    ("0%", {"100% Real"}),
    ("%", {"100% Real"}),
    ("a_b", set()),
    ('"', set()),
]


def test_find_across_scripts_cases_and_accents(store: Store) -> None:
    add(store, "1", "Пётр Иванов", accounts=(Account("telegram", "ivan_the_great"),))
    add(store, "2", "Petr Novak")
    add(store, "3", "José Álvarez")
    add(store, "4", "Jürgen Müller")
    add(store, "5", "Ольга Сергеевна")
    add(store, "6", "Ёжиков Семён")
    add(store, "7", "100% Real", aliases=("axb",))
    found = {query: set(names(store.find(query, 50))) for query, _ in FIND_CASES}
    assert found == dict(FIND_CASES)


def test_find_ranks_whole_then_start_then_word_then_inside_and_shows_the_field(
    store: Store,
) -> None:
    add(store, "1", "Bob Annson")  # a word starts with "ann"
    add(store, "2", "Joanna")  # inside
    add(store, "3", "Ann")  # the whole name
    add(store, "4", "Anna Karenina")  # the start
    add(store, "5", "Zed", aliases=("Annabel",), accounts=(Account("x", "joann_z"),))
    found = store.find("ann", 10)
    assert [(f.person.name, f.rank) for f in found] == [
        ("Ann", 0),
        ("Anna Karenina", 1),
        ("Zed", 1),
        ("Bob Annson", 2),
        ("Joanna", 3),
    ]
    zed = next(f for f in found if f.person.name == "Zed")
    assert (zed.field, zed.value) == ("alias", "Annabel")
    assert [f.field for f in store.find("joann_", 5)] == ["handle"]
    assert len(store.find("ann", 2)) == 2


def test_short_fragments_are_found_without_the_trigram_index(store: Store) -> None:
    add(store, "1", "Li Wei")
    add(store, "2", "Olivia")
    assert names(store.find("li", 10)) == ["Li Wei", "Olivia"]
    assert names(store.find("w", 10)) == ["Li Wei"]


def test_many_matches_still_give_the_best_first(store: Store) -> None:
    # Each rank tier stops early (rows come shortest first): the answer must not change.
    for number in range(40):
        add(store, f"in{number}", f"Zoe Joanna{number:03d}")  # inside: rank 3
    for number in range(3):
        add(store, f"start{number}", f"Annabel {number}")  # start: rank 1
    add(store, "word", "Mary Annette")  # word start: rank 2
    found = store.find("ann", 6)
    assert [f.rank for f in found] == [1, 1, 1, 2, 3, 3]
    assert [f.person.name for f in found[:4]] == [
        "Annabel 0",
        "Annabel 1",
        "Annabel 2",
        "Mary Annette",
    ]
    everyone = store.find("ann", 500)
    assert len(everyone) == 44 and [f.rank for f in everyone].count(3) == 40


def test_people_named_by_labels_are_findable(store: Store) -> None:
    store.save([photo("a.jpg", label="Ёлка Ёлкина")])
    assert names(store.find("elkina", 5)) == ["Ёлка Ёлкина"]
    (person,) = store.people()
    assert store.profile(person.id).provenance.source == "label of /photos/a.jpg"


def small_catalogue(store: Store) -> dict[str, str]:
    """Six people with lists, accounts, relations and (some) faces; ids by first name."""
    ids = {
        "ann": add(store, "1", "Ann Lee", lists=("Team",), accounts=(Account("x", "annie"),)),
        "petr": add(
            store,
            "2",
            "Пётр Иванов",
            lists=("Team", "Alumni 2010"),
            accounts=(Account("telegram", "ivan_the_great"),),
        ),
        "jose": add(store, "3", "José Álvarez", aliases=("Pepe",), lists=("Alumni 2010",)),
        "bo": add(store, "4", "Bo Chen", accounts=(Account("Telegram", "bochen"),)),
        "cy": add(store, "5", "Cy Annson"),
        "di": add(store, "6", "Di Lee"),
    }
    store.add_relation(ids["ann"], ids["petr"], "friend")
    store.add_relation(ids["jose"], ids["ann"], "friend")
    store.add_relation(ids["ann"], ids["bo"], "colleague")
    store.save([photo("a.jpg", label="Ann Lee"), photo("bb.jpg", label="Bo Chen")])
    return ids


QUERIES = [
    ("ann", ["Ann Lee", "Cy Annson"]),
    ("ann OR petr", ["Ann Lee", "Cy Annson", "Пётр Иванов"]),
    ("NOT has:face", ["Cy Annson", "Di Lee", "José Álvarez", "Пётр Иванов"]),
    ('list:"Team" OR platform:telegram', ["Ann Lee", "Bo Chen", "Пётр Иванов"]),
    ("list:team platform:TELEGRAM", ["Пётр Иванов"]),
    ("name:пётр handle:ivan_", ["Пётр Иванов"]),
    ("handle:ann", ["Ann Lee"]),
    ("name:pepe", ["José Álvarez"]),
    ('friends-of:"Ann Lee"', ["José Álvarez", "Пётр Иванов"]),
    ('related-to:"ann lee"', ["Bo Chen", "José Álvarez", "Пётр Иванов"]),
    ('related-to:colleague:"Bo Chen"', ["Ann Lee"]),
    ('lee NOT list:"Team"', ["Di Lee"]),
    ("(ann OR jose) AND NOT (has:face OR list:Team)", ["Cy Annson", "José Álvarez"]),
    ("face:x.jpg", ["Ann Lee", "Bo Chen", "Cy Annson", "Di Lee", "José Álvarez", "Пётр Иванов"]),
    ("xÆ OR name:xÆ", []),
    ('"100%" OR n_e', []),  # LIKE's wildcards are plain characters here ("annie")
]


def test_people_matching_selects_by_the_query_language(store: Store) -> None:
    ids = small_catalogue(store)
    selected = {text: names_of(store, text) for text, _ in QUERIES}
    assert selected == dict(QUERIES)
    assert names_of(store, f"id:{ids['di']}") == ["Di Lee"]


def names_of(store: Store, text: str) -> list[str]:
    return [p.name for p in store.people_matching(parse_query(text))]


def test_people_matching_points_at_unknown_names(store: Store) -> None:
    small_catalogue(store)
    add(store, "7", "Di Lee")
    with pytest.raises(QueryError, match=r"no list is named 'Alumni 2011'; did you mean") as caught:
        store.people_matching(parse_query('has:face list:"Alumni 2011"'))
    assert caught.value.column == 10
    with pytest.raises(QueryError, match=r"no person is named 'Ann Leee'; did you mean 'Ann Lee'"):
        store.people_matching(parse_query('friends-of:"Ann Leee"'))
    with pytest.raises(QueryError, match="names 2 people"):
        store.people_matching(parse_query('friends-of:"di lee"'))


# -- privacy -----------------------------------------------------------------------------------


def test_erasing_a_person_leaves_no_trace_but_a_token(store: Store) -> None:
    store.save(
        [
            photo("solo.jpg", label="Ann", seeds=[1]),
            photo("group.jpg", faces=2, label="Ann", seeds=[2, 3]),
            photo("other.jpg", label="Bo", seeds=[4]),
        ]
    )
    ann = store.resolve_person("Ann")
    faces = [f.id for f in store.faces_of_person(ann.id)]
    epoch = store.faces_epoch()
    erased = store.erase_person(ann.id, "admin key k_1")
    assert erased.faces == tuple(faces) and [p.paths for p in erased.photos] == [
        ("/photos/solo.jpg",)
    ]
    assert store.faces_epoch() > epoch
    assert store_photos(store) == (2, 2) and store.stats().photos_without_face == 0
    assert store.find("ann", 5) == [] and [p.name for p in store.people()] == ["Bo"]
    with pytest.raises(NotFound):
        store.resolve_person(ann.id)
    (entry,) = store.audit(10)
    assert (entry.kind, entry.actor, entry.query_text, entry.results) == (
        "erase",
        "admin key k_1",
        erased.token,
        2,
    )
    assert erased.token.startswith("erase_")
    with pytest.raises(NotFound):
        store.erase_person(ann.id, "admin")


def test_erasing_faces_keeps_photos_with_other_faces(store: Store) -> None:
    store.save([photo("group.jpg", faces=2, seeds=[1, 2]), photo("solo.jpg", seeds=[3])])
    first, second, solo = face_ids(store)
    erased = store.erase_faces([second, solo], "admin", "erase_faces")
    assert erased.faces == (second, solo)
    assert [p.paths for p in erased.photos] == [("/photos/solo.jpg",)]
    assert face_ids(store) == [first] and store_photos(store) == (1, 1)
    (entry,) = store.audit(1)
    assert (entry.kind, entry.query_text) == ("erase_faces", erased.token)


def test_opted_out_faces_are_never_stored(store: Store) -> None:
    blocked = vector(2)
    optout = store.add_optout(MODEL, blocked, "admin", within=0.43)
    assert optout.token.startswith("optout_") and store.optouts() == [optout]
    assert np.array_equal(store.optout_embeddings(MODEL), blocked[None].astype(np.float32))
    assert store.optout_embeddings("other").shape == (0, 0)
    group = photo("group.jpg", faces=2, seeds=[1, 2], label="Ann")
    assert store.opted_out(group.analysis) == [False, True]
    (result,) = store.save([group])
    assert (result.status, result.faces) == ("indexed", 1)
    assert result.review == "label not applied: a face in this photo is withheld"
    assert store.people() == []
    _, vectors = next(store.embeddings(MODEL))
    assert np.array_equal(vectors, vector(1)[None].astype(np.float32))
    with pytest.raises(NotFound):
        store.remove_optout("optout_nothing", "admin")
    assert store.remove_optout(optout.token, "admin") == optout
    # The model stays recorded with the dimension of its first vector.
    assert store.optouts() == [] and store.optout_embeddings(MODEL).shape == (0, 128)
    kinds = [e.kind for e in store.audit(10)]
    assert kinds == ["optout_removed", "optout"]


def test_erasing_takes_the_unnamed_faces_asked_for_but_not_rejected_ones(store: Store) -> None:
    store.save([photo("ann.jpg", label="Ann", seeds=[1]), photo("pair.jpg", faces=2, seeds=[2, 3])])
    store.save([photo("bo.jpg", label="Bo", seeds=[4])])
    ann, bo = store.resolve_person("Ann").id, store.resolve_person("Bo").id
    first, second, third, bos = face_ids(store)
    store.move_faces([second], ann, None, "admin")
    store.reject_faces([second], "admin")  # someone said: not Ann
    assert store.erasable_unnamed(ann, [second, third, bos]) == [third]
    erased = store.erase_person(ann, "admin", unnamed=[second, third, bos])
    assert (erased.faces, erased.unnamed, erased.people) == ((first, third), 1, 1)
    assert face_ids(store) == [second, bos] and store.resolve_person("Bo").id == bo
    (entry,) = [e for e in store.audit(10) if e.kind == "erase"]
    assert (entry.results, entry.people) == (2, 1)


def test_erasing_faces_counts_the_people_they_were_of(store: Store) -> None:
    store.save([photo("a.jpg", label="Ann"), photo("bb.jpg", label="Bo"), photo("ccc.jpg")])
    erased = store.erase_faces(face_ids(store), "admin", "optout_erase")
    assert (len(erased.faces), erased.people, erased.unnamed) == (3, 2, 1)
    (entry,) = store.audit(1)
    assert (entry.kind, entry.results, entry.people) == ("optout_erase", 3, 2)


def test_erasing_redacts_audit_texts_and_review_notes_that_mention_them(store: Store) -> None:
    ann = add(store, "crm-7", "Ann Lee", aliases=["Annie Q"], accounts=[Account("x", "annlee_x")])
    for text in ("where is ANN LÉE", "annie q", "annlee_x", f"id:{ann}", "Ann", "Bo Chan"):
        store.record_search("key k_1", "text", 1, query_text=text)
    store.save([photo("group.jpg", faces=2, seeds=[1, 2], label="Ann Lee")])
    store.save([photo("other.jpg", faces=2, seeds=[3, 4], label="Ann Lee")])
    other = [
        f for f in store.faces(face_ids(store)).values() if f.photo.paths[0].endswith("other.jpg")
    ]
    moved = next(f.id for f in other if f.person is not None)
    store.move_faces([moved], None, "Bo Chan", "admin")  # the label went to the wrong face
    row = FailedPhoto(FileStat("people.csv line 3", -1, -1), "x.jpg is already labelled 'Ann Lee'")
    store.save([row, FailedPhoto(FileStat("/photos/y.jpg", 1, 1), "not an image")])
    erased = store.erase_person(ann, "admin")
    texts = [e.query_text for e in reversed(store.audit(20)) if e.kind == "text"]
    redacted = f"redacted at {erased.token}: it named an erased person"
    assert texts == [redacted] * 4 + ["Ann", "Bo Chan"]
    reviews = {r.photo.paths[0]: r.reason for r in store.reviews()}
    # group.jpg lost Ann's face: its note is moot; other.jpg's still asks for a look.
    assert reviews == {"/photos/other.jpg": redacted}
    assert sorted(f.reason for f in store.failures()) == ["not an image", redacted]


def test_labels_naming_an_erased_person_are_refused_and_reported(store: Store) -> None:
    ann = add(store, "crm-7", "Ann Lee", aliases=["Annie"])
    store.save([photo("group.jpg", faces=2, seeds=[1, 2], label="ann lee")])
    erased = store.erase_person(ann, "admin")
    refused = f"label not applied: it names a person who was erased ({erased.token})"
    again = store.save(
        [KnownPhoto(FileStat("/photos/group.jpg", 100, 2), photo("group.jpg").sha256, "Ann Lee")]
    )
    assert again[0].review == refused
    (new,) = store.save([photo("new.jpg", label="ANNIE", content="new")])
    assert new.review == refused and store.people() == []
    # An import that creates them again: its photos' labels (the new id) are refused too.
    back = add(store, "crm-7", "A. Lee")
    (imported,) = store.save([photo("imported.jpg", label=back, content="imported")])
    assert imported.review == refused and not store.faces_of_person(back)
    (someone,) = store.save([photo("bo.jpg", label="Bo", content="bo")])
    assert someone.review is None and store.resolve_person("Bo")
    rows = [store.faces(face_ids(store))[i].person for i in face_ids(store)]
    assert [r.name for r in rows if r] == ["Bo"]


def test_an_optout_blocks_the_faces_within_its_own_reach(store: Store) -> None:
    blocked = vector(2)
    direction = distances.prepare(vector(3) - blocked * float(vector(3) @ blocked))
    # Faces at 0.1 and 0.3 from the blocked one (a unit vector turned towards another).
    near, far = (distances.prepare(blocked + d * direction) for d in (0.1, 0.31))
    assert np.linalg.norm(near - blocked) < 0.11 and 0.29 < np.linalg.norm(far - blocked) < 0.32
    faces = tuple(
        FaceAnalysis(Box(10 + 100 * i, 10, 90 + 100 * i, 90), 1.0, ((0, 0),) * 5, v, 0.5)
        for i, v in enumerate((near, far))
    )
    analysis = PhotoAnalysis(300, 100, faces, MODEL)
    store.add_optout(MODEL, blocked, "admin", within=0.2)
    assert store.opted_out(analysis) == [True, False]
    store.add_optout(MODEL, vector(9), "admin", within=0.43)  # far from both: changes nothing
    assert store.opted_out(analysis) == [True, False]
    with pytest.raises(UsageError, match="reach"):
        store.add_optout(MODEL, blocked, "admin", within=0)


def test_a_calibration_table_is_kept_per_model_and_replaced(store: Store) -> None:
    assert store.calibration(MODEL) is None
    shipped = calibration_for()
    table = replace(shipped, model=MODEL, made_from="our photos")
    store.save_calibration(table, "admin")
    kept = store.calibration(MODEL)
    assert kept is not None and kept.to_json() == table.to_json()
    assert kept.thresholds == shipped.thresholds and store.calibration("other") is None
    (entry,) = store.audit(1)
    assert (entry.kind, entry.actor, entry.query_text) == ("calibration", "admin", MODEL)
    store.save_calibration(replace(table, made_from="more photos", recorded=None), "admin")
    again = store.calibration(MODEL)
    assert again is not None and again.made_from == "more photos"
    assert again.thresholds.match == 0.383 and again.thresholds.erase_unnamed == 0.329


def test_check_finds_vectors_of_another_length_than_their_models(store: Store) -> None:
    store.save([photo("a.jpg", seeds=[1]), photo("b.jpg", seeds=[2])])
    assert store.integrity_problems() == []
    sql = store.sql  # type: ignore[attr-defined]  # both stores are SqlStores
    short = (sql.vector(vector(3)[:7]), int(store.face_ids(MODEL)[0]))
    damage = "UPDATE face SET embedding = ? WHERE id = ?"
    if not isinstance(store, SqliteStore):
        from psycopg.errors import DataException

        # PostgreSQL's index of the model casts every vector to its length: it refuses this.
        with pytest.raises(DataException, match="expected 128 dimensions"), sql.write():
            sql.execute(damage, short)
        return
    with sql.write():
        sql.execute(damage, short)
    assert store.integrity_problems() == [
        f"1 faces of the model {MODEL!r} have 7-dimensional vectors "
        "(the dimension the catalogue records for the model: 128)"
    ]


def test_a_damaged_calibration_table_in_the_catalogue_is_refused(store: Store) -> None:
    store.save_calibration(replace(calibration_for(), model=MODEL), "admin")
    sql = store.sql  # type: ignore[attr-defined]  # both stores are SqlStores
    for body in ("{not json", '{"model": "m"}'):
        with sql.write():
            sql.execute("UPDATE calibration SET body = ? WHERE model = ?", (body, MODEL))
        with pytest.raises(CalibrationError, match="calibration table of m in the catalogue"):
            store.calibration(MODEL)


def a_card(name: str = "arcface") -> ModelCard:
    return ModelCard(
        name=name, path=f"/models/{name}.onnx", sha256="ab" * 32, width=112, height=112,
        dimension=128, licence="the operator's", source="their own", added_at="2026-12-04",
        added_by="admin",
    )  # fmt: skip


def test_model_cards_are_kept_listed_and_removed(store: Store) -> None:
    assert store.model_cards() == [] and store.model_card("arcface") is None
    store.save_model_card(a_card(), "admin")
    store.save_model_card(a_card("another"), "admin")
    assert store.model_card("arcface") == a_card()
    assert [c.name for c in store.model_cards()] == ["another", "arcface"]
    assert store.audit(1)[0].kind == "model-card"
    with pytest.raises(UsageError, match="already in the catalogue"):
        store.save_model_card(replace(a_card(), dimension=512), "admin")
    assert store.remove_model_card("another", "admin") == a_card("another")
    assert [c.name for c in store.model_cards()] == ["arcface"]
    with pytest.raises(NotFound):
        store.remove_model_card("another", "admin")


def test_a_model_card_whose_faces_are_stored_is_not_removed(store: Store) -> None:
    store.save_model_card(a_card(MODEL), "admin")
    store.save([photo("a.jpg")])
    with pytest.raises(UsageError, match="stored faces"):
        store.remove_model_card(MODEL, "admin")
    assert store.model_card(MODEL) is not None


def test_a_damaged_model_card_in_the_catalogue_is_refused(store: Store) -> None:
    store.save_model_card(a_card(), "admin")
    sql = store.sql  # type: ignore[attr-defined]  # both stores are SqlStores
    for body, says in (("{not json", "not JSON"), ('{"name": "arcface"}', "'input'")):
        with sql.write():
            sql.execute("UPDATE model_card SET body = ? WHERE name = ?", (body, "arcface"))
        with pytest.raises(ModelCardError, match=says):
            store.model_card("arcface")


def test_an_optout_may_block_several_faces_under_one_token(store: Store) -> None:
    optout = store.add_optout(MODEL, np.stack([vector(1), vector(2)]), "admin", within=0.43)
    assert store.optouts() == [optout] and optout.faces == 2
    assert store.optout_embeddings(MODEL).shape == (2, 128)
    assert store.opted_out(photo("p.jpg", faces=3, seeds=[1, 2, 3]).analysis) == [
        True,
        True,
        False,
    ]
    assert store.remove_optout(optout.token, "admin") == optout
    assert store.optout_embeddings(MODEL).shape == (0, 128)
    assert [(e.kind, e.results) for e in store.audit(2)] == [("optout_removed", 2), ("optout", 2)]


def test_purging_the_audit_log_and_compacting(store: Store) -> None:
    for number in range(3):
        store.record_search("key k_1", "text", number, query_text=f"query {number}")
    assert store.purge_audit(1) == 0 and len(store.audit(10)) == 3
    assert store.purge_audit(-1) == 3 and store.audit(10) == []
    store.save([photo("a.jpg", label="Ann")])
    store.erase_person(store.resolve_person("Ann").id, "admin")
    store.compact()
    assert store_photos(store) == (0, 0) and len(store.audit(10)) == 1


# -- keys and audit ----------------------------------------------------------------------------


def test_api_keys_are_kept_hashed_and_revoked_once(store: Store) -> None:
    created = datetime.now(UTC).isoformat(timespec="seconds")
    search = ApiKey("k_2", "search", "laptop", created, hash="h2")
    admin = ApiKey("k_1", "admin", "ops", created, hash="h1")
    store.add_key(search)
    store.add_key(admin)
    assert store.keys() == [admin, search] and store.keys()[0].hash == "h1"
    assert store.key("k_2") == search and store.key("k_3") is None
    revoked = store.revoke_key("k_2")
    assert revoked.revoked_at is not None and revoked.revoked_at >= created
    assert store.revoke_key("k_2") == revoked  # idempotent
    with pytest.raises(NotFound):
        store.revoke_key("k_3")


def test_the_last_active_admin_key_is_never_revoked(opener: Opener) -> None:
    store = opener()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    for key_id in ("k_1", "k_2"):
        store.add_key(ApiKey(key_id, "admin", "", created, hash=key_id))
    store.add_key(ApiKey("k_3", "search", "", created, hash="k_3"))
    stores = [store, opener()]  # two writers revoking the two admin keys at once
    outcomes: dict[str, object] = {}

    def revoke(writer: Store, key_id: str) -> None:
        try:
            outcomes[key_id] = writer.revoke_key(key_id)
        except LastAdminKey as error:
            outcomes[key_id] = error

    threads = [
        threading.Thread(target=revoke, args=(w, k))
        for w, k in zip(stores, ("k_1", "k_2"), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [k for k, outcome in outcomes.items() if isinstance(outcome, LastAdminKey)]
    assert len(refused) == 1
    kept = store.key(refused[0])
    assert kept is not None and kept.active
    assert str(outcomes[refused[0]]).startswith(f"key {refused[0]} is the last active admin")
    with pytest.raises(LastAdminKey):
        store.revoke_key(refused[0])
    assert store.revoke_key("k_3").revoked_at is not None  # other roles: as before


def test_the_audit_log_is_newest_first_in_pages(store: Store) -> None:
    store.record_search("key k_1", "photo", 3, query_sha256="ab" * 32)
    for number in range(4):
        store.record_search("key k_2", "text", number, query_text=f"query {number}")
    newest = store.audit(2)
    assert [e.query_text for e in newest] == ["query 3", "query 2"]
    older = store.audit(10, before=newest[-1].id)
    assert [e.query_text for e in older] == ["query 1", "query 0", None]
    first = older[-1]
    assert (first.actor, first.kind, first.results, first.query_sha256) == (
        "key k_1",
        "photo",
        3,
        "ab" * 32,
    )
    assert first.at <= newest[0].at and first.at.endswith("+00:00")


# -- clusters and edits ------------------------------------------------------------------------


def clustered(store: Store) -> tuple[int, list[int]]:
    """Six unnamed faces on four photos: a cluster of three, one of two, one below the bar.
    Returns the first cluster's id and the face ids."""
    store.save(
        [
            photo("one.jpg", faces=2, seeds=[1, 2]),
            photo("two.jpg", faces=2, seeds=[3, 4]),
            photo("three.jpg", seeds=[5]),
            photo("four.jpg", seeds=[6]),
        ]
    )
    faces = face_ids(store)
    first = store.new_cluster_ids(2)
    assert store.new_cluster_ids(1) == first + 2
    written = store.set_clusters(
        [
            (faces[0], first),
            (faces[2], first),
            (faces[4], first),
            (faces[1], first + 1),
            (faces[3], first + 1),
            (faces[5], None),
        ],
        replace=True,
    )
    assert written == 6
    return first, faces


def test_clusters_are_listed_largest_first(store: Store) -> None:
    first, faces = clustered(store)
    listed = store.clusters()
    assert [(c.id, c.size) for c in listed] == [(first, 3), (first + 1, 2)]
    assert [f.id for f in listed[0].faces] == [faces[0], faces[2], faces[4]]
    assert [c.id for c in store.clusters(min_size=3)] == [first]
    assert [c.id for c in store.clusters(limit=1, offset=1)] == [first + 1]
    assert store.cluster(first + 1).size == 2 and store.cluster_stats() == (2, 5, 1)
    with pytest.raises(NotFound):
        store.cluster(first + 7)
    assert store.cluster_members([first + 1, first + 7]) == {first + 1: [faces[1], faces[3]]}
    photos = {f.id: f.photo.id for f in store.faces(faces).values()}
    assert store.photos_of_clusters([first]) == {first: {photos[faces[i]] for i in (0, 2, 4)}}
    assert store.cluster_of_faces([faces[5], faces[0]]) == {
        faces[5]: (None, photos[faces[5]]),
        faces[0]: (first, photos[faces[0]]),
    }
    unnamed = store.unnamed_faces(MODEL, only_new=False)
    assert unnamed.ids.tolist() == faces and unnamed.vectors.shape == (6, 128)
    assert unnamed.sharpness == (0.5,) * 6 and unnamed.boxes[1] == Box(110, 10, 190, 90)
    assert np.array_equal(unnamed.vectors[4], vector(5).astype(np.float32))
    assert store.unnamed_faces(MODEL, only_new=True).ids.tolist() == []
    store.save([photo("five.jpg", seeds=[7])])
    assert store.unnamed_faces(MODEL, only_new=True).ids.tolist() == [max(face_ids(store))]
    assert store.set_clusters([(faces[0], first + 1)], replace=False) == 1
    assert store.cluster_stats() == (2, 5, 1)


def test_naming_a_cluster_and_undoing_it(store: Store) -> None:
    first, faces = clustered(store)
    epoch = store.faces_epoch()
    named = store.name_cluster(first, None, "Ann Example", "admin")
    assert (named.kind, named.faces, named.actor) == ("name-cluster", 3, "admin")
    ann = store.resolve_person("Ann Example")
    assert named.summary == f"named cluster {first} (3 faces) Ann Example ({ann.id})"
    assert [f.id for f in store.faces_of_person(ann.id)] == [faces[0], faces[2], faces[4]]
    assert store.cluster_stats() == (1, 2, 1) and store.faces_epoch() == epoch
    assert store.set_clusters([(faces[0], first + 1)], replace=False) == 0  # named: skipped
    assert names(store.find("example", 5)) == ["Ann Example"]
    undo = store.undo_edit(named.id, "admin")
    assert undo.kind == "undo" and undo.summary.startswith(f"undid edit {named.id}: named")
    assert store.people() == [] and store.cluster_stats() == (2, 5, 1)
    assert [e.id for e in store.edits()] == [undo.id, named.id]
    assert store.edits()[1].undone_at is not None and store.edits()[1].undone_by == "admin"
    assert store.edits(limit=1) == [store.edits()[0]]


def test_a_rejected_face_never_rejoins_its_person(store: Store) -> None:
    first, faces = clustered(store)
    store.name_cluster(first, None, "Ann Example", "admin")
    ann = store.resolve_person("Ann Example").id
    rejected = store.reject_faces([faces[2]], "admin")
    assert rejected.summary == f"rejected 1 face from Ann Example ({ann})"
    assert faces[2] not in store.face_ids_of_people([ann])
    assert store.unnamed_faces(MODEL, only_new=True).ids.tolist() == [faces[2]]
    store.set_clusters([(faces[2], first + 1)], replace=False)
    again = store.name_cluster(first + 1, ann, None, "admin")
    assert "1 face once rejected from them stayed" in again.summary
    assert store.face_ids_of_people([ann]).tolist() == [faces[0], faces[1], faces[3], faces[4]]
    with pytest.raises(UsageError, match="rejected from Ann Example"):
        store.move_faces([faces[2]], ann, None, "admin")
    with pytest.raises(UsageError, match="belong to nobody"):
        store.reject_faces([faces[2]], "admin")
    store.undo_edit(again.id, "admin")
    assert store.face_ids_of_people([ann]).tolist() == [faces[0], faces[4]]
    moved = store.move_faces([faces[5]], ann, None, "admin")
    assert moved.summary == f"moved 1 face to Ann Example ({ann})"


def catalogue_state(store: Store) -> object:
    """What the catalogue says about who is who, through the store's own reads."""
    people = store.people()
    faces = store.faces(face_ids(store))
    return (
        people,
        [store.profile(p.id) for p in people],
        {i: f.person for i, f in faces.items()},
        store.cluster_of_faces(list(faces)),
        store.unnamed_faces(MODEL, only_new=True).ids.tolist(),
        store.cluster_stats(),
        [(f.person, f.field, f.value, f.rank) for f in store.find("ex", 50)],
    )


def test_every_edit_undone_leaves_the_catalogue_as_before(store: Store) -> None:
    first, faces = clustered(store)
    ann = add(store, "ann", "Ann Example", lists=("staff",))
    bo = add(
        store,
        "bo",
        "Bo Example",
        aliases=("Bobby",),
        lists=("staff", "choir"),
        accounts=(Account("mastodon", "bo_ex"),),
    )
    cy = add(store, "cy", "Cy Other")
    store.add_relation(ann, bo, "sibling")
    store.add_relation(bo, cy, "friend")
    store.name_cluster(first, ann, None, "admin")
    store.name_cluster(first + 1, bo, None, "admin")
    before = catalogue_state(store)
    steps = [
        store.move_faces([faces[0]], None, "Di Example", "admin"),
        store.reject_faces([faces[1]], "admin"),
        store.merge_people(ann, bo, "admin"),
        store.move_faces([faces[3]], None, "Ed Example", "admin"),
    ]
    merged = store.profile(ann)
    assert merged.aliases == ("Bo Example", "Bobby") and merged.lists == ("choir", "staff")
    assert [a.handle for a in merged.accounts] == ["bo_ex"]
    assert [(k, p.id) for k, p in merged.relations] == [("friend", cy)]
    assert store.find("bo_ex", 5)[0].person.id == ann
    assert steps[2].summary == f"merged Bo Example ({bo}) into Ann Example ({ann}): 1 face"
    with pytest.raises(NotFound):
        store.resolve_person(bo)
    for edit in reversed(steps):
        store.undo_edit(edit.id, "admin")
    assert store.find("bo_ex", 5)[0].person.id == bo
    assert catalogue_state(store) == before


def test_an_undo_waits_for_the_later_edits(store: Store) -> None:
    first, faces = clustered(store)
    store.name_cluster(first, None, "Ann Example", "admin")
    store.name_cluster(first + 1, None, "Bo Example", "admin")
    bo = store.resolve_person("Bo Example").id
    split = store.move_faces([faces[0]], None, "Cy Example", "admin")
    moved = store.move_faces([faces[0]], bo, None, "admin")
    with pytest.raises(UsageError, match=f"face {faces[0]} was changed by edit {moved.id}"):
        store.undo_edit(split.id, "admin")
    undone = store.undo_edit(moved.id, "admin")
    store.undo_edit(split.id, "admin")
    with pytest.raises(UsageError, match="already undone"):
        store.undo_edit(split.id, "admin")
    with pytest.raises(UsageError, match="is an undo"):
        store.undo_edit(undone.id, "admin")
    ann = store.resolve_person("Ann Example").id
    assert store.face_ids_of_people([ann]).tolist() == [faces[0], faces[2], faces[4]]
    with pytest.raises(NotFound):
        store.resolve_person("Cy Example")  # made by the split, gone with its undo


def test_edits_of_bad_input_say_what_is_wrong(store: Store) -> None:
    first, faces = clustered(store)
    with pytest.raises(NotFound, match="no cluster has the id 99"):
        store.name_cluster(99, None, "X", "admin")
    with pytest.raises(NotFound, match="no face has the id 12345"):
        store.reject_faces([12345], "admin")
    with pytest.raises(NotFound, match="no edit has the id 9"):
        store.undo_edit(9, "admin")
    with pytest.raises(UsageError, match="no faces given"):
        store.move_faces([], None, "X", "admin")
    with pytest.raises(UsageError, match="not both"):
        store.name_cluster(first, "p_x", "X", "admin")
    with pytest.raises(UsageError, match="not empty"):
        store.name_cluster(first, None, "  ", "admin")
    with pytest.raises(NotFound, match="no person has the id 'p_x'"):
        store.move_faces(faces[:1], "p_x", None, "admin")
    with pytest.raises(UsageError, match="themselves"):
        store.merge_people("p_x", "p_x", "admin")
    assert store.edits() == [] and store.people() == []


def test_erasing_a_person_forgets_their_edits(store: Store) -> None:
    first, _ = clustered(store)
    store.name_cluster(first, None, "Ann Example", "admin")
    store.name_cluster(first + 1, None, "Bo Example", "admin")
    ann = store.resolve_person("Ann Example").id
    store.erase_person(ann, "admin")
    summaries = [edit.summary for edit in store.edits()]
    assert len(summaries) == 1 and "Bo Example" in summaries[0]
    assert store.forget_edits_of(store.resolve_person("Bo Example").id) == 1


# -- PostgreSQL against SQLite, and what only the server store has ------------------------------


FIRST = ["Ann", "Анна", "Petr", "Пётр", "José", "Li", "Olga", "Ольга", "Bob", "Zoë"]
LAST = ["Lee", "Иванов", "Novak", "Müller", "Annson", "Wei", "Smith", "Ёжиков"]
PLATFORMS = ["telegram", "instagram", "email", "x"]
LISTS = ["Alumni 2010", "Team", "Choir"]
KINDS = ["friend", "colleague", "sibling"]
FRAGMENTS = ["ann", "Анна", "petr", "пётр", "jose", "li", "olg", "ez", "ivan_", "müller", "e"]


def random_catalogue(store: Store) -> list[str]:
    """The 60 people of tests/test_query.py's catalogue (same seed, same calls); their names."""
    import random

    rng = random.Random(7)
    people = []
    for number in range(60):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)} {number}"
        accounts = tuple(
            Account(platform, f"{rng.choice(['ann', 'pe', 'ivan_', 'zo'])}{number}_{platform}")
            for platform in rng.sample(PLATFORMS, rng.randint(0, 2))
        )
        record = PersonRecord(
            f"ext-{number}",
            name,
            aliases=tuple(rng.sample(FIRST, rng.randint(0, 1))),
            accounts=accounts,
            lists=tuple(rng.sample(LISTS, rng.randint(0, 2))),
        )
        people.append(store.upsert_person(record)[0])
    for _ in range(60):
        a, b = rng.sample(people, 2)
        store.add_relation(a.id, b.id, rng.choice(KINDS))
    store.save([photo(f"{n}.jpg", label=p.name, seeds=[n]) for n, p in enumerate(people[::3])])
    return [p.name for p in people]


@pytest.fixture(scope="module")
def twins(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, Store, list[str]]]:
    """The same random catalogue in SQLite and in PostgreSQL."""
    server: EmbeddedPostgres = request.getfixturevalue("postgres_server")
    database = server.new_database(request.getfixturevalue("catalogue_template"))
    sqlite = resolve_class("store", "sqlite")(tmp_path_factory.mktemp("twin") / "c.sqlite")
    postgres = resolve_class("store", "postgresql")(server.url(database))
    people = random_catalogue(sqlite)
    assert random_catalogue(postgres) == people
    yield sqlite, postgres, people
    sqlite.close()
    postgres.close()
    server.drop_database(database)


def expressions(people: list[str]) -> st.SearchStrategy[Expr]:
    names = st.sampled_from(people)
    term = st.one_of(
        st.builds(Term, st.sampled_from(["text", "name", "handle"]), st.sampled_from(FRAGMENTS)),
        st.builds(Term, st.just("platform"), st.sampled_from([*PLATFORMS, "TELEGRAM"])),
        st.builds(Term, st.just("list"), st.sampled_from([*LISTS, "team"])),
        st.builds(Term, st.just("has"), st.just("face")),
        st.builds(Term, st.just("friends-of"), names),
        st.builds(Term, st.just("related-to"), names, st.sampled_from([None, *KINDS])),
    )
    return st.recursive(
        term,
        lambda inner: st.one_of(
            st.builds(Not, inner),
            st.builds(lambda ps: And(tuple(ps)), st.lists(inner, min_size=2, max_size=3)),
            st.builds(lambda ps: Or(tuple(ps)), st.lists(inner, min_size=2, max_size=3)),
        ),
        max_leaves=5,
    )


def render(expr: Expr) -> str:
    """Query text for `expr`, fully parenthesised."""
    if isinstance(expr, Term):
        quoted = '"' + expr.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        field = "" if expr.field == "text" else f"{expr.field}:"
        kind = f"{expr.kind}:" if expr.kind else ""
        return f"{field}{kind}{quoted}"
    if isinstance(expr, Not):
        return f"NOT ({render(expr.part)})"
    joiner = " AND " if isinstance(expr, And) else " OR "
    return "(" + joiner.join(render(p) for p in expr.parts) + ")"


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_postgresql_selects_and_finds_what_sqlite_does(
    twins: tuple[Store, Store, list[str]], data: st.DataObject
) -> None:
    sqlite, postgres, people = twins
    text = render(data.draw(expressions(people)))
    selected = [p.name for p in sqlite.people_matching(parse_query(text))]
    assert [p.name for p in postgres.people_matching(parse_query(text))] == selected, text
    fragment = data.draw(st.sampled_from([*FRAGMENTS, "an", "ov 1", "_", "ё"]))
    limit = data.draw(st.integers(1, 12))

    def found(store: Store) -> list[tuple[str, str, str, int]]:
        return [(f.person.name, f.field, f.value, f.rank) for f in store.find(fragment, limit)]

    assert found(postgres) == found(sqlite), (fragment, limit)


def test_postgres_migrates_an_empty_database_once(postgres_url: str) -> None:
    import psycopg

    from iddetective.store.postgres import PostgresStore
    from iddetective.store.postgres_migrations import MIGRATIONS, schema_version

    with pytest.raises(StoreError, match="needs migrating"):
        PostgresStore(postgres_url, readonly=True)
    store = PostgresStore(postgres_url)
    admin = psycopg.connect(postgres_url, autocommit=True)
    assert schema_version(admin) == len(MIGRATIONS)
    store.save([photo("a.jpg", label="Ann")])
    store.close()
    again = PostgresStore(postgres_url)  # nothing to migrate: the data stays
    reader = PostgresStore(postgres_url, readonly=True)
    assert reader.stats().faces == 1 and reader.find("ann", 1)[0].person.name == "Ann"
    with pytest.raises(StoreError, match="read-only"):
        reader.record_search("key", "text", 0)
    admin.execute("INSERT INTO schema_migrations VALUES (%s, now())", (len(MIGRATIONS) + 1,))
    with pytest.raises(StoreError, match="newer than this iddetective understands"):
        PostgresStore(postgres_url)
    admin.close()
    again.close()
    reader.close()


def test_two_writers_of_a_new_model_record_it_once(opener: Opener) -> None:
    first, second = opener(), opener()
    batches = [
        [photo(f"{w}{i}.jpg", seeds=[10 * i + w], model=WIDE, dimension=WIDE_DIM) for i in range(3)]
        for w in (1, 2)
    ]
    threads = [
        threading.Thread(target=store.save, args=(batch,))
        for store, batch in zip((first, second), batches, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [(m.name, m.dimension) for m in first.models()] == [(WIDE, WIDE_DIM)]
    assert next(second.embeddings(WIDE))[1].shape == (6, WIDE_DIM)


# -- catalogues of the schema before models had dimensions ------------------------------------

#: Faces stored by the schema before the `model` table: two of dlib-like 128-d vectors (the
#: only kind it could hold in PostgreSQL) in one photo, and an opt-out of another model.
OLD_FACES = [vector(1), vector(2)]
OLD_OPTOUT = ("optout-only", vector(3, 192))
OLD_INGESTED = "2024-05-06T07:08:09+00:00"


def test_sqlite_a_catalogue_of_schema_6_gets_its_models_recorded(tmp_path: Path) -> None:
    import sqlite3

    from iddetective.store.migrations import MIGRATIONS
    from iddetective.store.sqlite import SqliteStore

    path = tmp_path / "catalog.sqlite"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:6]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 6")
    db.execute(
        "INSERT INTO photo (id, sha256, width, height, face_count, ingested_at) "
        "VALUES (1, ?, 400, 100, 2, ?)",
        ("a" * 64, OLD_INGESTED),
    )
    db.executemany(
        "INSERT INTO face (photo_id, box_left, box_top, box_right, box_bottom, score, "
        "landmarks, model, embedding) VALUES (1, 0, 0, 10, 10, 1.0, '[]', ?, ?)",
        [(MODEL, v.astype("<f4").tobytes()) for v in OLD_FACES],
    )
    db.execute(
        "INSERT INTO optout (token, model, embedding, created_at) VALUES ('optout_1', ?, ?, ?)",
        (OLD_OPTOUT[0], OLD_OPTOUT[1].astype("<f4").tobytes(), OLD_INGESTED),
    )
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert_old_catalogue_migrated(store)
    finally:
        store.close()


def test_postgres_a_catalogue_of_schema_2_keeps_its_faces_and_gets_an_index_per_model(
    postgres_url: str,
) -> None:
    """Migration 3 on a catalogue the previous schema made: `vector(128)` and one HNSW index
    become an untyped column and an index per model; every row stays as it was."""
    import psycopg
    from pgvector.psycopg import register_vector

    from iddetective.store.postgres import PostgresStore
    from iddetective.store.postgres_migrations import MIGRATIONS, schema_version
    from iddetective.vector_index.pgvector import PgvectorIndex

    admin = psycopg.connect(postgres_url, autocommit=True)
    register_vector(admin)
    admin.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at timestamptz "
        "NOT NULL)"
    )
    for number, script in enumerate(MIGRATIONS[:2], start=1):
        admin.execute(script)
        admin.execute("INSERT INTO schema_migrations VALUES (%s, now())", (number,))
    admin.execute(  # ids left to the identity columns, which count on from them
        "INSERT INTO photo (sha256, width, height, face_count, ingested_at) "
        "VALUES (%s, 400, 100, 2, %s)",
        ("a" * 64, OLD_INGESTED),
    )
    for embedding in OLD_FACES:
        admin.execute(
            "INSERT INTO face (photo_id, box_left, box_top, box_right, box_bottom, score, "
            "landmarks, model, embedding) VALUES (1, 0, 0, 10, 10, 1.0, '[]', %s, %s)",
            (MODEL, embedding),
        )
    admin.execute(
        "INSERT INTO optout (token, model, embedding, created_at) VALUES ('optout_1', %s, %s, %s)",
        (OLD_OPTOUT[0], OLD_OPTOUT[1], OLD_INGESTED),
    )
    column = (
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'face'::regclass "
        "AND attname = 'embedding'"
    )
    assert admin.execute(column).fetchone() == (128,)
    store = PostgresStore(postgres_url)
    index = PgvectorIndex.of_catalogue(postgres_url, MODEL, 128, exact_max=0)
    try:
        assert schema_version(admin) == len(MIGRATIONS) >= 3
        assert admin.execute(column).fetchone() == (-1,)  # untyped: any length fits
        indexes: dict[str, str] = dict(
            admin.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'face' "
                "AND indexdef LIKE %s ORDER BY indexname",
                ("%hnsw%",),
            ).fetchall()
        )
        # face_embedding (over vector(128)) is gone; each model has its own, even one with
        # only opt-outs so far (whose faces would be of its dimension).
        assert list(indexes) == ["face_embedding_1", "face_embedding_2"]
        assert indexes["face_embedding_1"].endswith(
            "USING hnsw (((embedding)::vector(128)) vector_l2_ops) WHERE (model = 'm'::text)"
        )
        assert indexes["face_embedding_2"].endswith(
            "(((embedding)::vector(192)) vector_l2_ops) WHERE (model = 'optout-only'::text)"
        )
        assert_old_catalogue_migrated(store)
        # The old faces are searched through the model's new index.
        assert "Index Scan using face_embedding_1 on face" in hnsw_plan(index, OLD_FACES[1])
        found = index.search(OLD_FACES[1][None, :], 1)[0]
        assert found.ids.tolist() == [2] and found.distances[0] < 1e-5
        # A model first seen after the migration gets an index of its own with its first face.
        store.save([photo("wide.jpg", seeds=[5], model=WIDE, dimension=WIDE_DIM)])
        assert admin.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'face_embedding_3'"
        ).fetchone() == (
            "CREATE INDEX face_embedding_3 ON public.face USING hnsw "
            "(((embedding)::vector(512)) vector_l2_ops) WHERE (model = 'wide-model'::text)",
        )
    finally:
        index.close()
        store.close()
        admin.close()


def assert_old_catalogue_migrated(store: Store) -> None:
    """The catalogue of OLD_FACES and OLD_OPTOUT as every store migrates it: each model
    recorded with the dimension of its vectors, first seen when they were stored; the faces
    read back as they were; later vectors held to the recorded dimension."""
    assert [(m.name, m.dimension, m.first_seen) for m in store.models()] == [
        (MODEL, 128, OLD_INGESTED),
        (OLD_OPTOUT[0], 192, OLD_INGESTED),
    ]
    ids, vectors = next(store.embeddings(MODEL))
    assert ids.tolist() == [1, 2] and np.array_equal(vectors, np.stack(OLD_FACES))
    assert np.array_equal(store.optout_embeddings(OLD_OPTOUT[0]), OLD_OPTOUT[1][None])
    with pytest.raises(StoreError, match="refused a 512-dimensional vector of the model 'm'"):
        store.save([photo("b.jpg", dimension=512)])
    with pytest.raises(StoreError, match="records that model's vectors as 192-dimensional"):
        store.add_optout(OLD_OPTOUT[0], vector(4), "admin", within=0.43)


def test_postgres_errors_name_the_database_without_its_password(
    postgres_server: EmbeddedPostgres,
) -> None:
    from iddetective.store.postgres import PostgresStore

    url = postgres_server.url("no_such_database").replace("postgres@", "postgres:s3cret@")
    with pytest.raises(StoreError, match="cannot connect to") as caught:
        PostgresStore(url)
    assert "s3cret" not in str(caught.value) and "postgres:***@" in str(caught.value)


# -- the PostgreSQL store's pool of connections ------------------------------------------------


@pytest.fixture()
def postgres_catalogue(
    postgres_server: EmbeddedPostgres, catalogue_template: str, request: pytest.FixtureRequest
) -> str:
    """The URL of a new, migrated, empty PostgreSQL catalogue."""
    database = postgres_server.new_database(catalogue_template)
    request.addfinalizer(lambda: postgres_server.drop_database(database))
    return postgres_server.url(database)


def sessions(admin: Any, other_than: int) -> list[tuple[int, str]]:
    """(process id, wait event type) of the database's sessions but the admin's own."""
    rows = admin.execute(
        "SELECT pid, coalesce(wait_event_type, '') FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> %s",
        (other_than,),
    ).fetchall()
    return [(int(pid), str(event)) for pid, event in rows]


def test_postgres_writers_waiting_for_the_lock_leave_the_pool_to_readers(
    postgres_catalogue: str,
) -> None:
    """Writers waiting for the catalogue's lock hold at most all but one of the pool's
    connections: while another session holds the lock, four of them hold one connection
    between them, and reads answer at once on the other."""
    import psycopg

    from iddetective.store import postgres_sql
    from iddetective.store.postgres import PostgresStore

    store = PostgresStore(postgres_catalogue, pool=(1, 2))
    admin = psycopg.connect(postgres_catalogue, autocommit=True)
    me = admin.info.backend_pid
    try:
        with admin.transaction():
            admin.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                (postgres_sql.LOCK_CLASS, postgres_sql.WRITER_LOCK),
            )
            writers = [
                threading.Thread(
                    target=store.upsert_person, args=(PersonRecord(f"x{i}", f"Writer {i}"),)
                )
                for i in range(4)
            ]
            for writer in writers:
                writer.start()
            deadline = time.monotonic() + 10
            while not any(event == "Lock" for _, event in sessions(admin, me)):
                assert time.monotonic() < deadline, "no writer waits for the lock"
                time.sleep(0.02)
            started = time.monotonic()
            assert store.stats().people == 0 and store.people() == []
            assert time.monotonic() - started < 1.0
            assert len(sessions(admin, me)) <= 2  # the pool's bound
        for writer in writers:
            writer.join(10)
        assert sorted(p.name for p in store.people()) == [f"Writer {i}" for i in range(4)]
    finally:
        admin.close()
        store.close()


def test_postgres_a_statement_waits_for_a_free_connection_for_a_bounded_time(
    postgres_catalogue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iddetective.store import postgres_sql
    from iddetective.store.postgres import PostgresStore

    monkeypatch.setattr(postgres_sql, "RECONNECT_SECONDS", 1.0)
    store = PostgresStore(postgres_catalogue, pool=(1, 1))
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(store.stats())
        except StoreError as error:
            outcome.append(error)

    try:
        with store.sql.write():  # this thread holds the only connection
            reader = threading.Thread(target=read)
            started = time.monotonic()
            reader.start()
            reader.join(10)
            waited = time.monotonic() - started
        assert isinstance(outcome[0], StoreBusy), outcome
        assert "no connection to postgresql://" in str(outcome[0]) and "within 1 s" in str(
            outcome[0]
        )
        assert 1.0 <= waited < 5
        assert store.stats().photos == 0  # given back: the next statement has it
    finally:
        store.close()
