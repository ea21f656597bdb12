"""Schema migrations of the SQLite catalogue; `PRAGMA user_version` counts those applied.

Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: photos, their files, faces, people, failures.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('faces_epoch', '0');
    CREATE TABLE person (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX person_name ON person (name COLLATE NOCASE);
    CREATE TABLE photo (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        face_count INTEGER NOT NULL,
        review TEXT,
        ingested_at TEXT NOT NULL
    );
    CREATE TABLE photo_file (
        path TEXT PRIMARY KEY,
        photo_id INTEGER NOT NULL REFERENCES photo (id) ON DELETE CASCADE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        seen_at TEXT NOT NULL
    );
    CREATE INDEX photo_file_photo ON photo_file (photo_id);
    CREATE TABLE face (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        photo_id INTEGER NOT NULL REFERENCES photo (id) ON DELETE CASCADE,
        box_left INTEGER NOT NULL,
        box_top INTEGER NOT NULL,
        box_right INTEGER NOT NULL,
        box_bottom INTEGER NOT NULL,
        score REAL NOT NULL,
        landmarks TEXT NOT NULL,
        model TEXT NOT NULL,
        embedding BLOB NOT NULL,
        person_id TEXT REFERENCES person (id) ON DELETE SET NULL
    );
    CREATE INDEX face_photo ON face (photo_id);
    CREATE INDEX face_person ON face (person_id);
    CREATE INDEX face_model ON face (model, id);
    CREATE TABLE failure (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        reason TEXT NOT NULL,
        failed_at TEXT NOT NULL
    )
    """,
    # 2: API keys (hashed) and the audit log of searches.
    """
    CREATE TABLE api_key (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'search', 'ingest')),
        label TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        query_sha256 TEXT,
        query_text TEXT,
        results INTEGER NOT NULL
    );
    CREATE INDEX audit_at ON audit (at)
    """,
    # 3: the people catalogue: external ids, aliases, accounts, lists, relations, and the
    # folded text of names, aliases and handles for substring search (query/textfold.py), whose
    # rowids order it by length (store/sqlite_text.py) and are listed per person.
    """
    ALTER TABLE person ADD COLUMN external_id TEXT;
    ALTER TABLE person ADD COLUMN notes TEXT NOT NULL DEFAULT '';
    CREATE UNIQUE INDEX person_external ON person (external_id) WHERE external_id IS NOT NULL;
    CREATE TABLE alias (
        person_id TEXT NOT NULL REFERENCES person (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        PRIMARY KEY (person_id, name)
    );
    CREATE TABLE account (
        id INTEGER PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES person (id) ON DELETE CASCADE,
        platform TEXT NOT NULL,
        handle TEXT NOT NULL,
        url TEXT,
        UNIQUE (platform, handle)
    );
    CREATE INDEX account_person ON account (person_id);
    CREATE TABLE list (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE list_member (
        list_id TEXT NOT NULL REFERENCES list (id) ON DELETE CASCADE,
        person_id TEXT NOT NULL REFERENCES person (id) ON DELETE CASCADE,
        PRIMARY KEY (list_id, person_id)
    );
    CREATE INDEX list_member_person ON list_member (person_id);
    CREATE TABLE relation (
        person_id TEXT NOT NULL REFERENCES person (id) ON DELETE CASCADE,
        other_id TEXT NOT NULL REFERENCES person (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        PRIMARY KEY (person_id, other_id, kind),
        CHECK (person_id <> other_id)
    );
    CREATE INDEX relation_other ON relation (other_id, kind);
    CREATE VIRTUAL TABLE person_text USING fts5(
        text, person_id UNINDEXED, field UNINDEXED, value UNINDEXED, tokenize = 'trigram'
    );
    CREATE TABLE person_text_row (
        person_id TEXT NOT NULL,
        text_rowid INTEGER NOT NULL,
        PRIMARY KEY (person_id, text_rowid)
    ) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('person_text_seq', '0');
    INSERT INTO meta (key, value) VALUES ('person_text_stale', '1')
    """,
    # 4: the opt-out registry (embeddings kept apart, never shown) and provenance: where
    # each photo and person came from, who added them, on what basis.
    """
    CREATE TABLE optout (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        token TEXT NOT NULL UNIQUE,
        model TEXT NOT NULL,
        embedding BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    ALTER TABLE photo ADD COLUMN source TEXT;
    ALTER TABLE photo ADD COLUMN added_by TEXT;
    ALTER TABLE photo ADD COLUMN basis TEXT;
    ALTER TABLE person ADD COLUMN source TEXT;
    ALTER TABLE person ADD COLUMN added_by TEXT;
    ALTER TABLE person ADD COLUMN basis TEXT
    """,
    # 5: discovering people. Faces nobody named are grouped into clusters (a row per face
    # considered; cluster NULL: below the quality bar); a face rejected from a person never
    # rejoins them on its own; every edit of who is who is recorded with what undoes it.
    """
    ALTER TABLE face ADD COLUMN sharpness REAL;
    CREATE TABLE face_cluster (
        face_id INTEGER PRIMARY KEY REFERENCES face (id) ON DELETE CASCADE,
        cluster_id INTEGER
    );
    CREATE INDEX face_cluster_cluster ON face_cluster (cluster_id);
    CREATE TABLE face_rejection (
        face_id INTEGER NOT NULL REFERENCES face (id) ON DELETE CASCADE,
        person_id TEXT NOT NULL REFERENCES person (id) ON DELETE CASCADE,
        PRIMARY KEY (face_id, person_id)
    );
    CREATE TABLE edit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        summary TEXT NOT NULL,
        changes TEXT NOT NULL,
        undone_at TEXT,
        undone_by TEXT
    );
    INSERT INTO meta (key, value) VALUES ('next_cluster', '1')
    """,
    # 6: what erasure leaves behind on purpose (docs/privacy.md): keyed hashes of erased
    # people's names, aliases and external ids, so that no later label gives the name to
    # another face (the key is the catalogue's own secret); how many people an erasure
    # removed faces of; and opt-outs of several faces under one token (`erase --optout`).
    """
    CREATE TABLE erase_secret (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        secret TEXT NOT NULL
    );
    CREATE TABLE erased_label (
        key TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        erased_at TEXT NOT NULL
    );
    ALTER TABLE audit ADD COLUMN people INTEGER;
    CREATE TABLE optout_faces (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        token TEXT NOT NULL,
        model TEXT NOT NULL,
        embedding BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    INSERT INTO optout_faces (id, token, model, embedding, created_at)
        SELECT id, token, model, embedding, created_at FROM optout;
    DROP TABLE optout;
    ALTER TABLE optout_faces RENAME TO optout;
    CREATE INDEX optout_token ON optout (token)
    """,
    # 7: every model of the catalogue with the dimension of its vectors, recorded when its
    # first vector (a face's or an opt-out's) is stored; every later one must have it, and
    # reads reshape blobs by it. Models already here get the length of their first vector.
    """
    CREATE TABLE model (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        dimension INTEGER NOT NULL CHECK (dimension > 0),
        first_seen TEXT NOT NULL
    );
    INSERT INTO model (name, dimension, first_seen)
        SELECT f.model, length(f.embedding) / 4, p.ingested_at
        FROM face f JOIN photo p ON p.id = f.photo_id
        WHERE f.id IN (SELECT min(id) FROM face GROUP BY model) ORDER BY f.id;
    INSERT INTO model (name, dimension, first_seen)
        SELECT model, length(embedding) / 4, created_at FROM optout
        WHERE id IN (SELECT min(id) FROM optout GROUP BY model) ORDER BY id
        ON CONFLICT (name) DO NOTHING
    """,
    # 8: thresholds belong to a model (docs/accuracy.md): the calibration tables made for
    # this catalogue by `iddetective calibrate`, and the reach of each opt-out, recorded when
    # it is made (the opt-outs made before were made at dlib's 0.430).
    """
    CREATE TABLE calibration (
        model TEXT PRIMARY KEY,
        made_at TEXT NOT NULL,
        made_by TEXT NOT NULL,
        body TEXT NOT NULL
    );
    ALTER TABLE optout ADD COLUMN reach REAL NOT NULL DEFAULT 0.43
    """,
    # 9: model cards (`iddetective models add`, faces/model_cards.py): ONNX embedders the
    # operator brought, each card's JSON body with when and by whom it was added.
    """
    CREATE TABLE model_card (
        name TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        added_at TEXT NOT NULL,
        added_by TEXT NOT NULL
    )
    """,
]
