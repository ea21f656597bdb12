"""The people catalogue: idempotent upserts, accounts, lists, relations, substring search."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from iddetective.entities import Account, FoundPerson, PersonRecord, Provenance
from iddetective.errors import UsageError
from iddetective.query.textfold import fold, search_forms
from iddetective.store.migrations import MIGRATIONS
from iddetective.store.sqlite import SqliteStore


@pytest.fixture()
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "catalog.sqlite")


def add(store: SqliteStore, external_id: str, name: str, **details: object) -> str:
    person, _ = store.upsert_person(PersonRecord(external_id, name, **details))  # type: ignore[arg-type]
    return person.id


def names(found: list[FoundPerson]) -> list[str]:
    return [f.person.name for f in found]


def test_folding_reads_scripts_accents_and_yo_alike() -> None:
    assert fold("  Пётр   ИВАНОВ ") == "петр иванов"
    assert search_forms("Пётр") == ["петр", "petr"]
    assert search_forms("José Müller") == ["jose muller"]
    assert search_forms("Ольга") == ["ольга", "olga"]  # no apostrophe from the soft sign
    assert search_forms("ivan_") == ["ivan_"]


def test_upsert_is_idempotent_and_adds_details(store: SqliteStore) -> None:
    record = PersonRecord(
        "ext-1",
        "Ann Lee",
        aliases=("Annie",),
        accounts=(Account("telegram", "ann_lee", "https://t.me/ann_lee"),),
        lists=("Alumni 2010",),
    )
    first, created = store.upsert_person(record)
    again, created_again = store.upsert_person(record)
    assert created and not created_again and first.id == again.id
    renamed, _ = store.upsert_person(PersonRecord("ext-1", "Ann Lee-Smith", lists=("Team",)))
    profile = store.profile(first.id)
    assert renamed.id == first.id and profile.person.name == "Ann Lee-Smith"
    assert profile.aliases == ("Annie",) and profile.lists == ("Alumni 2010", "Team")
    assert profile.accounts == (Account("telegram", "ann_lee", "https://t.me/ann_lee"),)
    assert profile.external_id == "ext-1"
    assert names(store.find("lee-smith", 5)) == ["Ann Lee-Smith"]
    assert store.find("ann lee", 5)[0].field == "name"  # the old name is not indexed any more
    assert not [f for f in store.find("ann lee", 5) if f.value == "Ann Lee"]


def test_an_account_owned_by_someone_else_is_refused_and_nothing_is_written(
    store: SqliteStore,
) -> None:
    add(store, "a", "Ann", accounts=(Account("instagram", "sunny"),))
    with pytest.raises(UsageError, match=r"instagram account 'sunny' already belongs to Ann"):
        store.upsert_person(PersonRecord("b", "Bob", accounts=(Account("instagram", "sunny"),)))
    assert store.person_by_external_id("b") is None
    assert names(store.find("bob", 5)) == []


def test_relations_read_both_ways_and_are_not_duplicated(store: SqliteStore) -> None:
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


@pytest.mark.parametrize(
    ("query", "expected"),
    [
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
    ],
)
def test_find_across_scripts_cases_and_accents(
    store: SqliteStore, query: str, expected: set[str]
) -> None:
    add(store, "1", "Пётр Иванов", accounts=(Account("telegram", "ivan_the_great"),))
    add(store, "2", "Petr Novak")
    add(store, "3", "José Álvarez")
    add(store, "4", "Jürgen Müller")
    add(store, "5", "Ольга Сергеевна")
    add(store, "6", "Ёжиков Семён")
    assert set(names(store.find(query, 50))) == expected


def test_find_ranks_whole_then_start_then_word_then_inside_and_shows_the_field(
    store: SqliteStore,
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


def test_short_fragments_are_found_without_the_trigram_index(store: SqliteStore) -> None:
    add(store, "1", "Li Wei")
    add(store, "2", "Olivia")
    assert names(store.find("li", 10)) == ["Li Wei", "Olivia"]
    assert names(store.find("w", 10)) == ["Li Wei"]


def test_people_named_by_labels_are_findable(store: SqliteStore) -> None:
    with store.sql.write():
        store._person_for_label("Ёлка Ёлкина", Provenance("x.jpg"))
    assert names(store.find("elkina", 5)) == ["Ёлка Ёлкина"]


def test_an_older_catalogue_gets_its_search_text_on_migration(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 2")
    db.execute("INSERT INTO person VALUES ('p_1', 'Пётр', 'now', 'now')")
    db.commit()
    db.close()
    migrated = SqliteStore(path)
    assert names(migrated.find("petr", 5)) == ["Пётр"]


def test_many_matches_still_give_the_best_first(store: SqliteStore) -> None:
    # Each rank tier stops early (rows come shortest first): the answer must not change.
    for number in range(120):
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
    assert len(everyone) == 124 and [f.rank for f in everyone].count(3) == 120
