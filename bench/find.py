"""Substring search over people: ours (`SqliteStore.find`) against a LIKE scan, same run, same data.

The issue's target: at 1M synthetic people, p50 <= 20 ms to return the best 50 people for
fragments of 3+ characters, in every length bucket (3, 4, 5-6, 8+ characters).

Data: N synthetic people (seeded, deterministic for a given faker version) with realistic
names from faker in nine locales (en_US, ru_RU, uk_UA, de_DE, es_ES, fr_FR, pl_PL, tr_TR,
zh_CN), so Cyrillic, accented Latin, plain Latin and Chinese names are mixed; 0-2 aliases
(the first name alone, the Latin transliteration of a non-Latin name, "First L.", a maiden
name) and 0-3 accounts (telegram/instagram/x/email/facebook; faker user names, or handles
derived from the name like `ivan_petrov87`, and e-mail addresses).

Loading: the schema is created by `SqliteStore(path)` (a real catalogue), then the rows are
inserted with plain SQL in big batched transactions straight into person, alias and account
-- calling `upsert_person` a million times, one transaction each, would take hours. The
text index gets exactly what `SqlitePeople._write_person_text` writes, as if each person had
been upserted once, in order: for each name, alias and handle, one person_text row per
distinct form of `textfold.search_forms(value)` (fields name/alias/handle), with the rowid
`(len(form) << 40) | sequence` -- each person takes the next block of sequence numbers from
a running count and numbers its rows down from the block's top -- the matching
`person_text_row (text_rowid, person_id)` rows, and meta 'person_text_seq' left at the
count. The text rows are staged in a temporary database and inserted in rowid order (FTS5
flushes its pending data whenever a rowid is not larger than the previous one). The built
file is cached under bench/.cache/find/ (git-ignored), keyed by N, seed and DATA_VERSION;
re-runs skip the build and report the cached build time.

Queries: fragments of 3, 4, 5-6 and 8+ characters cut from the names, aliases and handles of
random people, typed in four ways: as stored; with the case changed; with accents removed
(accented Latin); transliterated to Latin (Cyrillic and Chinese, e.g. "petr" for «Пётр»);
plus fragments that match nobody (random letters, and glued pieces of two names).

Methods, single-threaded, warm (each of ours' queries is run once untimed first; the LIKE
scan reads the same pages for every query, so its first queries warm it):

1. ours: `store.find(fragment, 50)` (FTS5 trigram over folded + transliterated forms; one
   query per rank tier in rowid = length order, each stopping after the rows it needs);
2. LIKE scan: `name LIKE '%frag%'` over person, UNION aliases, UNION account handles,
   ORDER BY name LIMIT 50 (case-insensitive for ASCII only, as SQLite's LIKE is; no folding,
   no transliteration).

The last column says which share of the people ours returned the LIKE predicate matches at
all (without its LIMIT): how much a LIKE scan would miss of what ours finds. Ours' answers
are also checked against an exhaustive ranking of every match (the SQL `find` ran before it
stopped early): they must have the same ranks.

Then `upsert_person` is timed on a scratch copy of the catalogue (the cached file is never
written): `--upserts` updates of existing people, each adding an alias, so each rewrites
that person's text rows.

When a length bucket of ours misses the target, the profile (`--profile auto`, the default;
`yes`/`no` to force) takes ours' time apart: each rank tier's FTS5 query, and the name
lookup, per length bucket.

    python bench/find.py --quick             # 100,000 people
    python bench/find.py                     # 1,000,000 people (build: a few minutes)
    python bench/find.py --people 300000 --queries 40
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import string
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import faker
import numpy as np
from anyascii import anyascii

from iddetective.entities import FoundPerson, PersonRecord, PersonRef
from iddetective.query.textfold import fold, search_forms
from iddetective.store.sqlite import SqliteStore
from iddetective.store.sqlite_text import _RANK, _SEQ_BITS, _TIERS

CACHE = Path(__file__).resolve().parent / ".cache" / "find"
#: Bump when the generated data changes, so stale caches are not reused.
DATA_VERSION = 3  # 3: rising sequence numbers; person_text_row WITHOUT ROWID
LIMIT = 50
TARGET_MS = 20.0
BATCH = 20_000
CREATED_AT = "2024-01-01T00:00:00+00:00"

LOCALES = {
    "en_US": 0.20,
    "ru_RU": 0.22,
    "uk_UA": 0.10,
    "de_DE": 0.10,
    "es_ES": 0.08,
    "fr_FR": 0.08,
    "pl_PL": 0.08,
    "tr_TR": 0.07,
    "zh_CN": 0.07,
}
PLATFORMS = ("telegram", "instagram", "x", "email", "facebook")
BUCKETS = ("3", "4", "5-6", "8+")
NO_MATCH = "no match"
LENGTHS = {"3": (3,), "4": (4,), "5-6": (5, 6), "8+": (8, 9, 10, 11, 12)}
KINDS = ("as stored", "case changed", "accents removed", "transliterated")
KIND_WEIGHTS = (0.4, 0.2, 0.15, 0.25)


# -- synthetic people ------------------------------------------------------------------------


@dataclass
class Person:
    id: str
    name: str
    aliases: list[str]
    accounts: list[tuple[str, str]]


def latin(text: str) -> str:
    """Lower-case ASCII letters and digits of `text`'s transliteration (for handles)."""
    return "".join(c for c in anyascii(text).lower() if c.isalnum())


class PeopleMaker:
    """Deterministic synthetic people: one `random.Random` drives every choice."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers: dict[str, faker.Faker] = {}
        for i, locale in enumerate(LOCALES):
            fake = faker.Faker(locale)
            fake.seed_instance(seed * 100 + i)
            self.fakers[locale] = fake
        self.locales = list(LOCALES)
        self.weights = list(LOCALES.values())
        self.taken: dict[str, set[str]] = {p: set() for p in PLATFORMS}

    def person(self) -> Person:
        rng = self.rng
        locale = rng.choices(self.locales, self.weights)[0]
        fake = self.fakers[locale]
        male = rng.random() < 0.5
        first = fake.first_name_male() if male else fake.first_name_female()
        last = fake.last_name_male() if male else fake.last_name_female()
        name = self.full_name(locale, fake, male, first, last)
        aliases = self.aliases(locale, fake, male, name, first, last)
        accounts = [self.account(fake, first, last) for _ in range(self.account_count())]
        return Person(f"p_{rng.getrandbits(64):016x}", name, aliases, accounts)

    def full_name(self, locale: str, fake: faker.Faker, male: bool, first: str, last: str) -> str:
        roll = self.rng.random()
        if locale == "zh_CN":
            return last + first
        if locale in ("ru_RU", "uk_UA"):
            if roll < 0.5:
                return f"{first} {last}"
            if roll < 0.75:
                return f"{last} {first}"
            middle = fake.middle_name_male() if male else fake.middle_name_female()
            return f"{last} {first} {middle}"
        if locale == "es_ES" and roll < 0.4:
            return f"{first} {last} {fake.last_name()}"
        return f"{first} {last}"

    def aliases(
        self, locale: str, fake: faker.Faker, male: bool, name: str, first: str, last: str
    ) -> list[str]:
        roll = self.rng.random()
        count = 0 if roll < 0.55 else 1 if roll < 0.85 else 2
        out: list[str] = []
        for _ in range(count):
            kind = self.rng.random()
            if locale in ("ru_RU", "uk_UA", "zh_CN") and kind < 0.5:
                alias = anyascii(f"{first} {last}")
            elif kind < 0.7:
                alias = first
            elif kind < 0.85 or male:
                alias = f"{first} {last[0]}."
            else:
                alias = f"{first} {fake.last_name_female()}"
            if alias != name and alias not in out:
                out.append(alias)
        return sorted(out)  # _write_person_text reads aliases in primary-key order

    def account_count(self) -> int:
        roll = self.rng.random()
        return 0 if roll < 0.15 else 1 if roll < 0.55 else 2 if roll < 0.85 else 3

    def account(self, fake: faker.Faker, first: str, last: str) -> tuple[str, str]:
        rng = self.rng
        platform = rng.choice(PLATFORMS)
        if rng.random() < 0.35:
            handle = fake.user_name()
        else:
            f, s = latin(first) or "user", latin(last) or "user"
            sep = rng.choice(("_", ".", "", "_"))
            handle = rng.choice(
                (
                    f"{f}{sep}{s}",
                    f"{s}{sep}{f}",
                    f"{f[0]}{sep}{s}",
                    f"{f}{sep}{s}{rng.randint(1, 99):02d}",
                    f"{f}{rng.randint(1970, 2010)}",
                    f"{s}{sep}{f[0]}",
                )
            )
        if platform == "email":
            handle = f"{handle}@{fake.free_email_domain()}"
        taken = self.taken[platform]
        base = handle
        while handle in taken:
            suffix = str(rng.randint(1, 9999))
            handle = base.replace("@", suffix + "@", 1) if "@" in base else base + suffix
        taken.add(handle)
        return platform, handle


def text_rows(person: Person) -> Iterator[tuple[str, str, str, str]]:
    """The person_text rows `SqlitePeople._write_person_text` writes for `person`."""
    values = [("name", person.name)]
    values += [("alias", a) for a in person.aliases]
    values += [("handle", h) for _, h in person.accounts]
    for fld, value in values:
        for form in dict.fromkeys(search_forms(value)):
            yield form, person.id, fld, value


# -- the catalogue ---------------------------------------------------------------------------


def db_path(people: int, seed: int) -> Path:
    return CACHE / f"people-{people}-seed{seed}-v{DATA_VERSION}.db"


def build(path: Path, people: int, seed: int) -> dict[str, float]:
    """Create a real catalogue at `path` and bulk-load `people` synthetic people into it."""
    tmp = path.with_suffix(".building")
    for stale in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        stale.unlink(missing_ok=True)
    SqliteStore(tmp).close()  # the schema, by the product's own migrations
    db = sqlite3.connect(tmp, isolation_level=None)
    db.execute("ATTACH '' AS stage")  # a private temporary file, gone when db closes
    for schema in ("main", "stage"):
        db.execute(f"PRAGMA {schema}.journal_mode = OFF")
        db.execute(f"PRAGMA {schema}.synchronous = OFF")
        db.execute(f"PRAGMA {schema}.cache_size = -400000")
    db.execute(
        "CREATE TABLE stage.text (rowid_ INTEGER PRIMARY KEY, text TEXT, person_id TEXT, "
        "field TEXT, value TEXT)"
    )
    maker = PeopleMaker(seed)
    started = time.perf_counter()
    generating = 0.0
    counts = {"aliases": 0, "accounts": 0, "text_rows": 0}
    seq = 0  # meta 'person_text_seq': the sequence numbers used so far
    for start in range(0, people, BATCH):
        t0 = time.perf_counter()
        batch = [maker.person() for _ in range(start, min(start + BATCH, people))]
        texts: list[tuple[int, str, str, str, str]] = []
        for p in batch:  # as `_write_person_text`: take the next len(rows) numbers, rising
            rows = list(text_rows(p))
            seq += len(rows)
            first = seq - len(rows) + 1
            texts += [
                ((len(row[0]) << _SEQ_BITS) | (first + i), *row) for i, row in enumerate(rows)
            ]
        texts.sort()
        generating += time.perf_counter() - t0
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO person (id, name, external_id, notes, created_at, updated_at) "
            "VALUES (?, ?, ?, '', ?, ?)",
            [
                (p.id, p.name, f"bench-{start + i}", CREATED_AT, CREATED_AT)
                for i, p in enumerate(batch)
            ],
        )
        aliases = [(p.id, a) for p in batch for a in p.aliases]
        accounts = [(p.id, pl, h) for p in batch for pl, h in p.accounts]
        db.executemany("INSERT INTO alias (person_id, name) VALUES (?, ?)", aliases)
        db.executemany(
            "INSERT INTO account (person_id, platform, handle) VALUES (?, ?, ?)", accounts
        )
        db.executemany(
            "INSERT INTO stage.text (rowid_, text, person_id, field, value) VALUES (?, ?, ?, ?, ?)",
            texts,
        )
        db.execute("COMMIT")
        counts["aliases"] += len(aliases)
        counts["accounts"] += len(accounts)
        counts["text_rows"] += len(texts)
        done = start + len(batch)
        if done % (BATCH * 10) == 0 or done == people:
            print(
                f"  built {done:,}/{people:,} people ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    t0 = time.perf_counter()
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO person_text (rowid, text, person_id, field, value) "
        "SELECT rowid_, text, person_id, field, value FROM stage.text ORDER BY rowid_"
    )
    db.execute(
        "INSERT INTO person_text_row (text_rowid, person_id) "
        "SELECT rowid_, person_id FROM stage.text ORDER BY rowid_"
    )
    db.execute("UPDATE meta SET value = ? WHERE key = 'person_text_seq'", (str(seq),))
    db.execute("COMMIT")
    indexing = time.perf_counter() - t0
    print(f"  indexed {seq:,} text rows ({indexing:.0f} s)", file=sys.stderr, flush=True)
    db.execute("DETACH stage")
    db.execute("PRAGMA journal_mode = WAL")  # as the store leaves it
    db.close()
    seconds = time.perf_counter() - started
    tmp.rename(path)
    meta = {
        "build_seconds": seconds,
        "generate_seconds": generating,
        "index_seconds": indexing,
        **counts,
    }
    path.with_suffix(".json").write_text(json.dumps(meta))
    return meta


def open_catalogue(people: int, seed: int) -> tuple[SqliteStore, dict[str, float], bool]:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = db_path(people, seed)
    meta_path = path.with_suffix(".json")
    cached = path.is_file() and meta_path.is_file()
    meta = json.loads(meta_path.read_text()) if cached else build(path, people, seed)
    return SqliteStore(path), meta, cached


def table_bytes(db: sqlite3.Connection) -> dict[str, int]:
    """Bytes per table and its indexes (via dbstat), or {} if this SQLite lacks it."""
    try:
        rows = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:
        return {}
    sizes: dict[str, int] = {}
    for name, size in rows:
        if name.startswith("person_text_row"):
            key = "person_text_row"
        elif name.startswith("person_text"):
            key = "person_text (FTS5)"
        else:
            key = "other"
        sizes[key] = sizes.get(key, 0) + size
    return sizes


# -- queries ---------------------------------------------------------------------------------


@dataclass
class Fragment:
    text: str
    bucket: str
    kind: str
    source: str


def has_accent(text: str) -> bool:
    return any(unicodedata.combining(c) for c in unicodedata.normalize("NFKD", text))


def is_latin(text: str) -> bool:
    return all(ord(c) < 0x250 for c in text)


def strip_accents(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(c for c in text if not unicodedata.combining(c)))


def cut(rng: random.Random, text: str, length: int) -> str | None:
    """A random `length`-character piece of `text` that neither starts nor ends with a space."""
    starts = [
        i
        for i in range(len(text) - length + 1)
        if not text[i].isspace() and not text[i + length - 1].isspace()
    ]
    return text[(s := rng.choice(starts)) : s + length] if starts else None


def typed(rng: random.Random, kind: str, value: str, length: int) -> str | None:
    """A fragment of `value` of `length` characters typed the `kind` way, or None."""
    if kind == "as stored":
        return cut(rng, value, length)
    if kind == "case changed":
        piece = cut(rng, value, length)
        if piece is None:
            return None
        for variant in rng.sample([piece.lower(), piece.upper(), piece.swapcase()], 3):
            if variant != piece:
                return variant
        return None
    if kind == "accents removed":
        if not (is_latin(value) and has_accent(value)):
            return None
        piece = cut(rng, value, length)
        if piece is None or not has_accent(piece):
            return None
        return strip_accents(piece)
    if is_latin(value):  # transliterated: only non-Latin values
        return None
    return cut(rng, search_forms(value)[-1], length)  # e.g. "petr" for «Пётр»


def draw_fragments(
    db: sqlite3.Connection, people: int, per_bucket: int, seed: int
) -> list[Fragment]:
    """`per_bucket` fragments per length bucket, typed the `KINDS` ways in `KIND_WEIGHTS`."""
    rng = random.Random(seed + 1)
    out: list[Fragment] = []
    for bucket in BUCKETS:
        kinds = [
            k
            for k, w in zip(KINDS, KIND_WEIGHTS, strict=True)
            for _ in range(round(w * per_bucket))
        ]
        kinds = (kinds + [KINDS[0]] * per_bucket)[:per_bucket]
        for kind in kinds:
            while True:  # draw people until one has a value this kind of typing applies to
                value = random_value(db, rng, people)
                if value is None:
                    continue
                text = typed(rng, kind, value, rng.choice(LENGTHS[bucket]))
                if text and len(fold(text)) >= 3:
                    out.append(Fragment(text, bucket, kind, value))
                    break
    out += no_match_fragments(db, rng, per_bucket)
    return out


def random_value(db: sqlite3.Connection, rng: random.Random, people: int) -> str | None:
    """A random person's name (60%), alias (15%) or handle (25%); None if they have none."""
    pid, name = db.execute(
        "SELECT id, name FROM person WHERE rowid = ?", (rng.randint(1, people),)
    ).fetchone()
    roll = rng.random()
    if roll < 0.6:
        return name
    table, col = ("alias", "name") if roll < 0.75 else ("account", "handle")
    values = [r[0] for r in db.execute(f"SELECT {col} FROM {table} WHERE person_id = ?", (pid,))]
    return rng.choice(values) if values else None


def no_match_fragments(db: sqlite3.Connection, rng: random.Random, count: int) -> list[Fragment]:
    """Fragments nobody matches: random letters, and pieces of two real names glued."""
    cyrillic = "абвгдежзийклмнопрстуфхцчшщыэюя"
    out: list[Fragment] = []
    rowids = db.execute("SELECT max(rowid) FROM person").fetchone()[0]
    while len(out) < count:
        roll = rng.random()
        if roll < 0.35:
            letters = string.ascii_lowercase if rng.random() < 0.6 else cyrillic
            text, kind = "".join(rng.choices(letters, k=rng.randint(4, 8))), "random letters"
        else:
            a, b = (
                db.execute("SELECT name FROM person WHERE rowid = ?", (rng.randint(1, rowids),))
                .fetchone()[0]
                .split()[0]
                for _ in range(2)
            )
            text, kind = a[: rng.randint(3, 5)] + b[-rng.randint(3, 5) :], "two names glued"
        if len(fold(text)) < 3 or any(like_sql(db, text)) or any_folded_match(db, text):
            continue
        out.append(Fragment(text, NO_MATCH, kind, ""))
    return out


def any_folded_match(db: sqlite3.Connection, text: str) -> bool:
    for form in search_forms(text):
        row = db.execute(
            "SELECT 1 FROM person_text WHERE person_text MATCH ? LIMIT 1", (phrase(form),)
        ).fetchone()
        if row:
            return True
    return False


# -- the LIKE scan ---------------------------------------------------------------------------

LIKE_SQL = (
    "SELECT id, name FROM person WHERE name LIKE ?1 ESCAPE '\\' "
    "UNION SELECT p.id, p.name FROM alias a JOIN person p ON p.id = a.person_id "
    "WHERE a.name LIKE ?1 ESCAPE '\\' "
    "UNION SELECT p.id, p.name FROM account c JOIN person p ON p.id = c.person_id "
    "WHERE c.handle LIKE ?1 ESCAPE '\\' "
    "ORDER BY name LIMIT ?2"
)


def pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def like_sql(db: sqlite3.Connection, text: str, limit: int = LIMIT) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in db.execute(LIKE_SQL, (pattern(text), limit))]


def like_matches(db: sqlite3.Connection, text: str, ids: Sequence[str]) -> int:
    """How many of `ids` the LIKE predicate matches on name, alias or handle (no LIMIT)."""
    if not ids:
        return 0
    return db.execute(
        "SELECT count(*) FROM person p WHERE p.id IN (SELECT value FROM json_each(?2)) "
        "AND (p.name LIKE ?1 ESCAPE '\\' OR EXISTS (SELECT 1 FROM alias a "
        "WHERE a.person_id = p.id AND a.name LIKE ?1 ESCAPE '\\') OR EXISTS (SELECT 1 "
        "FROM account c WHERE c.person_id = p.id AND c.handle LIKE ?1 ESCAPE '\\'))",
        (pattern(text), json.dumps(list(ids))),
    ).fetchone()[0]


def source_matches(db: sqlite3.Connection, fragments: list[Fragment]) -> str:
    """Per typing kind: share of source values the LIKE and the folded predicates match."""
    parts = []
    for kind in KINDS:
        mine = [f for f in fragments if f.kind == kind]
        like = sum(
            db.execute("SELECT ?1 LIKE ?2 ESCAPE '\\'", (f.source, pattern(f.text))).fetchone()[0]
            for f in mine
        )
        folded = sum(
            any(q in v for q in search_forms(f.text) for v in search_forms(f.source)) for f in mine
        )
        n = max(len(mine), 1)
        parts.append(f"{kind} {100 * like / n:.0f}% / {100 * folded / n:.0f}% (n={len(mine)})")
    return ", ".join(parts)


# -- measuring -------------------------------------------------------------------------------


Answer = TypeVar("Answer")


@dataclass
class Runs(Generic[Answer]):
    """Per-fragment milliseconds and result counts of one method (and its answers)."""

    ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    results: list[int] = field(default_factory=list)
    answers: list[Sequence[Answer]] = field(default_factory=list)


def measure(
    call: Callable[[str], Sequence[Answer]], fragments: list[Fragment], warm_all: bool
) -> Runs[Answer]:
    runs: Runs[Answer] = Runs()
    warm = fragments if warm_all else fragments[:3]
    for f in warm:
        started = time.perf_counter()
        call(f.text)
        runs.first_ms.append((time.perf_counter() - started) * 1e3)
    for f in fragments:
        started = time.perf_counter()
        found = call(f.text)
        runs.ms.append((time.perf_counter() - started) * 1e3)
        runs.results.append(len(found))
        runs.answers.append(found)
    return runs


def stats(values: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray(values)
    p50, p95, p99 = (float(np.percentile(a, q)) for q in (50, 95, 99))
    return p50, p95, p99


def groups(fragments: list[Fragment]) -> list[tuple[str, list[int]]]:
    out = [(b, [i for i, f in enumerate(fragments) if f.bucket == b]) for b in BUCKETS]
    out.append(("all 3+", [i for i, f in enumerate(fragments) if f.bucket != NO_MATCH]))
    out.append((NO_MATCH, [i for i, f in enumerate(fragments) if f.bucket == NO_MATCH]))
    return out


HEADER = (
    "| method | fragment | queries | p50 ms | p95 ms | p99 ms | mean results "
    "| LIKE matches of ours' people |\n|---|---|---:|---:|---:|---:|---:|---:|"
)


def table_rows(
    name: str, runs: Runs[Answer], fragments: list[Fragment], share: Callable[[list[int]], str]
) -> list[str]:
    lines = []
    for label, idx in groups(fragments):
        p50, p95, p99 = stats([runs.ms[i] for i in idx])
        mean = np.mean([runs.results[i] for i in idx])
        lines.append(
            f"| {name} | {label} | {len(idx)} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {mean:.1f} "
            f"| {share(idx)} |"
        )
    return lines


# -- exactness, upserts, profile ---------------------------------------------------------

#: Every match ranked and sorted before the LIMIT: the SQL `find` ran before it stopped early
#: (without its join to person), the reference ours' answers must agree with on ranks.
EXHAUSTIVE_SQL = (
    "SELECT person_id, field, value, " + _RANK + " AS rank FROM person_text "
    "WHERE person_text MATCH ?2 ORDER BY rank, length(text) LIMIT ?3"
)
#: Ours' query for one rank tier, as `SqlitePeople._matches` runs it.
TIER_SQL = (
    "SELECT person_id, field, value, " + _RANK + " FROM person_text "
    "WHERE person_text MATCH ?2 AND {condition} ORDER BY rowid LIMIT ?3"
)
TIER_NAMES = ("value start", "word start", "inside")


def phrase(form: str) -> str:
    return '"' + form.replace('"', '""') + '"'


def names_of(db: sqlite3.Connection, ids: set[str]) -> dict[str, str]:
    return dict(
        db.execute(
            "SELECT id, name FROM person WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(ids)),),
        ).fetchall()
    )


def best(rows: list[tuple[str, str, str, int]], names: dict[str, str]) -> list[FoundPerson]:
    """The people of ranked rows, best first: the Python half of `SqlitePeople.find`."""
    kept: dict[str, FoundPerson] = {}
    for pid, fld, value, rank in rows:
        old = kept.get(pid)
        if old is None or rank < old.rank:
            kept[pid] = FoundPerson(PersonRef(pid, names[pid]), fld, value, rank)
    ordered = sorted(kept.values(), key=lambda f: (f.rank, f.person.name.casefold(), f.person.id))
    return ordered[:LIMIT]


def exhaustive(db: sqlite3.Connection, text: str) -> list[FoundPerson]:
    rows: list[tuple[str, str, str, int]] = []
    for form in search_forms(text):
        if len(form) < 3:  # no trigram: ours scans, and so does this
            sql, arg = EXHAUSTIVE_SQL.replace("person_text MATCH ?2", "instr(text, ?2) > 0"), form
        else:
            sql, arg = EXHAUSTIVE_SQL, phrase(form)
        rows += [tuple(r) for r in db.execute(sql, (form, arg, LIMIT * 4))]
    return best(rows, names_of(db, {r[0] for r in rows}))


def exactness(
    db: sqlite3.Connection, fragments: list[Fragment], ours: Runs[FoundPerson]
) -> str:
    """How many of ours' answers have the exhaustive ranking's ranks (and people, order)."""
    same = ranks = 0
    for f, mine in zip(fragments, ours.answers, strict=True):
        ref = [(x.person.id, x.rank) for x in exhaustive(db, f.text)]
        got = [(x.person.id, x.rank) for x in mine]
        same += got == ref
        ranks += [r for _, r in got] == [r for _, r in ref]
    n = len(fragments)
    return f"same ranks {ranks}/{n}, same people in the same order {same}/{n}"


def time_upserts(path: Path, count: int, seed: int) -> tuple[list[float], str]:
    """Milliseconds of `count` updates of existing people (each adds an alias), on a copy."""
    scratch = CACHE / f"scratch-{path.name}"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{scratch}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(path, scratch)
    if Path(f"{path}-wal").exists():
        shutil.copyfile(f"{path}-wal", f"{scratch}-wal")
    rng = random.Random(seed + 2)
    store = SqliteStore(scratch)
    try:
        db = store._db
        people = db.execute("SELECT max(rowid) FROM person").fetchone()[0]
        ms: list[float] = []
        missing = 0
        for k in range(count):
            pid, name, external_id, notes = db.execute(
                "SELECT id, name, external_id, notes FROM person WHERE rowid = ?",
                (rng.randint(1, people),),
            ).fetchone()
            alias = f"Benchalias Upsert {k:04d}"
            record = PersonRecord(external_id, name, aliases=(alias,), notes=notes)
            started = time.perf_counter()
            ref, created = store.upsert_person(record)
            ms.append((time.perf_counter() - started) * 1e3)
            assert ref.id == pid and not created
            found = store.find(alias, 5)
            missing += [x.person.id for x in found] != [pid]
        rows = db.execute("SELECT count(*) FROM person_text_row").fetchone()[0]
        texts = db.execute("SELECT count(*) FROM person_text").fetchone()[0]
        check = (
            f"the new alias found for {count - missing}/{count}; person_text {texts:,} rows, "
            f"person_text_row {rows:,}"
        )
    finally:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{scratch}{suffix}").unlink(missing_ok=True)
    return ms, check


def profile(
    store: SqliteStore, people: int, fragments: list[Fragment], ours: Runs[FoundPerson]
) -> str:
    """Ours' time taken apart: each rank tier's FTS5 query, and the name lookup."""
    db = store._db
    tier_ms = [[0.0] * len(fragments) for _ in _TIERS]
    names_ms = [0.0] * len(fragments)
    queries = [0] * len(fragments)
    matches = [0] * len(fragments)
    for n, f in enumerate(fragments):
        ids: set[str] = set()
        for form in search_forms(f.text):
            if len(form) < 3:
                continue  # no trigram (ours scans): not in this profile
            matches[n] += db.execute(
                "SELECT count(*) FROM person_text WHERE person_text MATCH ?", (phrase(form),)
            ).fetchone()[0]
            want = LIMIT * 4
            for tier, (match, condition) in enumerate(_TIERS):
                if want <= 0:
                    break
                started = time.perf_counter()
                rows = db.execute(
                    TIER_SQL.format(condition=condition), (form, match(form), want)
                ).fetchall()
                tier_ms[tier][n] += (time.perf_counter() - started) * 1e3
                queries[n] += 1
                want -= len(rows)
                ids |= {r[0] for r in rows}
        started = time.perf_counter()  # the names of the matches, as SqliteStore.find reads them
        store.sql.rows_in("SELECT id, name FROM person WHERE id IN ({marks})", ids)
        names_ms[n] = (time.perf_counter() - started) * 1e3

    def cell(values: Sequence[float], idx: list[int]) -> str:
        p50, p95, _ = stats([values[i] for i in idx])
        return f"{p50:.2f} / {p95:.2f}"

    lines = [
        f"#### Profile of ours ({people:,} people; per fragment, summed over its folded "
        "forms; p50 / p95 ms)",
        "",
        "| fragment | matching rows (median) | tier queries run (mean) | "
        + " | ".join(f"tier {i + 1}: {name}" for i, name in enumerate(TIER_NAMES))
        + " | name lookup | ours: store.find |",
        "|---|---:|---:|" + "---:|" * (len(TIER_NAMES) + 2),
    ]
    for label, idx in groups(fragments):
        lines.append(
            f"| {label} | {np.median([matches[i] for i in idx]):,.0f} "
            f"| {np.mean([queries[i] for i in idx]):.1f} | "
            + " | ".join(cell(ms, idx) for ms in tier_ms)
            + f" | {cell(names_ms, idx)} | {cell(ours.ms, idx)} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> str:
    people = 100_000 if args.quick else args.people
    store, meta, cached = open_catalogue(people, args.seed)
    db = store._db
    size = sum(
        Path(f"{store.path}{s}").stat().st_size
        for s in ("", "-wal")
        if Path(f"{store.path}{s}").exists()
    )
    parts = table_bytes(db)
    fragments = draw_fragments(db, people, args.queries, args.seed)

    ours = measure(lambda t: store.find(t, LIMIT), fragments, warm_all=True)
    like = measure(lambda t: like_sql(db, t), fragments, warm_all=False)

    # recall-like: which share of ours' people the LIKE predicate matches at all
    found_by_like: list[tuple[int, int]] = []
    for f, found in zip(fragments, ours.answers, strict=True):
        ids = [x.person.id for x in found]
        found_by_like.append((like_matches(db, f.text, ids), len(ids)))

    def share(idx: list[int]) -> str:
        hit = sum(found_by_like[i][0] for i in idx)
        total = sum(found_by_like[i][1] for i in idx)
        return f"{100 * hit / total:.0f}% ({hit:,}/{total:,})" if total else "n/a"

    title = (
        f"#### {people:,} people, {len(fragments)} fragments, best {LIMIT} "
        f"(SQLite {sqlite3.sqlite_version}, faker {faker.VERSION}, seed {args.seed})"
    )
    lines = [title, "", HEADER]
    lines += table_rows("ours: store.find", ours, fragments, lambda idx: "—")
    lines += table_rows("LIKE scan", like, fragments, share)

    three_plus = [i for i, f in enumerate(fragments) if f.bucket != NO_MATCH]
    ours_p50 = stats([ours.ms[i] for i in three_plus])[0]
    like_p50 = stats([like.ms[i] for i in three_plus])[0]
    missed = [
        f"{label} chars {p50:.1f} ms"
        for label, idx in groups(fragments)[: len(BUCKETS)]
        if (p50 := stats([ours.ms[i] for i in idx])[0]) > TARGET_MS
    ]
    verdict = "MISSED in " + ", ".join(missed) if missed else "met in every length bucket"
    worst = max(stats([ours.ms[i] for i in idx])[0] for _, idx in groups(fragments)[: len(BUCKETS)])
    by_kind = ", ".join(
        f"{k} {share([i for i, f in enumerate(fragments) if f.kind == k])}" for k in KINDS
    )
    own = source_matches(db, fragments)
    exact = exactness(db, fragments, ours)
    build_note = "cached; " if cached else ""
    sizes = (
        f", of which person_text {parts.get('person_text (FTS5)', 0) / 2**20:.0f} MiB and "
        f"person_text_row {parts.get('person_text_row', 0) / 2**20:.0f} MiB"
        if parts
        else ""
    )
    lines += [
        "",
        f"ours p50 per length bucket (3, 4, 5-6, 8+ characters): worst {worst:.2f} ms "
        f"(target <= {TARGET_MS:.0f} ms: {verdict}); all 3+ fragments {ours_p50:.2f} ms; "
        f"LIKE scan p50 {like_p50:.1f} ms; ours is {like_p50 / ours_p50:.0f}x faster at p50. "
        f"Ours' first (untimed) run of the same 3+ fragments: p50 "
        f"{stats([ours.first_ms[i] for i in three_plus])[0]:.2f} ms.",
        "",
        f"Ours against an exhaustive ranking of every match (the SQL before the early stop), "
        f"all {len(fragments)} fragments: {exact}.",
        "",
        f"LIKE matches of ours' people by how the fragment was typed: {by_kind}.",
        "",
        f"The value each fragment was cut from, matched by the LIKE predicate / by ours' "
        f"folded predicate: {own}.",
        "",
        f"Catalogue: {people:,} people, {meta['aliases']:,} aliases, {meta['accounts']:,} "
        f"accounts, {meta['text_rows']:,} person_text rows; build {build_note}"
        f"{meta['build_seconds']:.0f} s (of which generating with faker "
        f"{meta['generate_seconds']:.0f} s, filling person_text and person_text_row in "
        f"rowid order {meta['index_seconds']:.0f} s); file {size / 2**20:.0f} MiB "
        f"({size / people:.0f} B/person){sizes}.",
    ]
    report = "\n".join(lines)
    print("\n" + report, flush=True)
    if args.profile == "yes" or (args.profile == "auto" and missed):
        extra = profile(store, people, fragments, ours)
        print("\n" + extra, flush=True)
        report += "\n\n" + extra
    store.close()
    if args.upserts:
        ms, check = time_upserts(store.path, args.upserts, args.seed)
        p50, p95, _ = stats(ms)
        extra = (
            f"upsert_person, update of an existing person (one new alias, so their text rows "
            f"are rewritten), {len(ms)} calls on a scratch copy of the {people:,}-people "
            f"catalogue: p50 {p50:.2f} ms, p95 {p95:.2f} ms, max {max(ms):.2f} ms, first "
            f"{ms[0]:.2f} ms; {check}."
        )
        print("\n" + extra, flush=True)
        report += "\n\n" + extra
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 people")
    parser.add_argument("--queries", type=int, default=60, help="fragments per length bucket")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--profile",
        choices=("auto", "yes", "no"),
        default="auto",
        help="break ours' time down by rank tier (auto: when a bucket misses the target)",
    )
    parser.add_argument(
        "--upserts", type=int, default=50, help="upsert_person calls to time (0: none)"
    )
    args = parser.parse_args(argv)
    report = run(args)
    people = 100_000 if args.quick else args.people
    (CACHE / f"report-{people}-seed{args.seed}.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
