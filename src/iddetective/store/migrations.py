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
]
