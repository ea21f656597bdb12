"""A SIGKILL in the middle of an index run, readers during a run, and two runs at once."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iddetective.catalogue import CATALOG_FILE, Catalogue

from support.facesets import Labelled, read_labels, require_set, write_manifest

pytestmark = pytest.mark.faces


def index_command(manifest: Path, data: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "iddetective",
        "index",
        "--people",
        str(manifest),
        "--data",
        str(data),
        "--workers",
        "2",
    ]


def lfw_rows(count: int) -> list[Labelled]:
    return read_labels(require_set("lfw_dev"))[:count]


def stored_photos(data: Path) -> int:
    if not (data / CATALOG_FILE).exists():
        return 0
    try:
        with sqlite3.connect(data / CATALOG_FILE, timeout=30) as db:
            return int(db.execute("SELECT count(*) FROM photo").fetchone()[0])
    except sqlite3.OperationalError:  # the first run is still creating the schema
        return 0


def assert_each_photo_once(data: Path, rows: list[Labelled]) -> None:
    shas = {hashlib.sha256(Path(r.path).read_bytes()).hexdigest() for r in rows}
    with sqlite3.connect(data / CATALOG_FILE) as db:
        stored = [r[0] for r in db.execute("SELECT sha256 FROM photo")]
        files = db.execute("SELECT count(*), count(DISTINCT path) FROM photo_file").fetchone()
        orphans = db.execute(
            "SELECT count(*) FROM face WHERE photo_id NOT IN (SELECT id FROM photo)"
        ).fetchone()[0]
        short = db.execute(
            "SELECT count(*) FROM photo p WHERE face_count != "
            "(SELECT count(*) FROM face f WHERE f.photo_id = p.id)"
        ).fetchone()[0]
    assert sorted(stored) == sorted(shas)
    assert files == (len(rows), len(rows))
    assert orphans == 0 and short == 0


def test_sigkill_mid_run_then_rerun_stores_every_photo_once(tmp_path: Path) -> None:
    rows = lfw_rows(120)
    manifest = write_manifest(tmp_path / "people.csv", rows)
    data = tmp_path / "data"
    run = subprocess.Popen(
        index_command(manifest, data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    seen = [0]
    deadline = time.monotonic() + 120
    while stored_photos(data) < 20 and time.monotonic() < deadline:
        if (data / CATALOG_FILE).exists():
            with Catalogue(data) as catalogue:
                seen.append(catalogue.stats().photos)  # a reader during the run
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert seen == sorted(seen), "readers saw the photo count go down"
    killed_at = stored_photos(data)
    assert 20 <= killed_at < len(rows), "the run was not killed in the middle"

    rerun = subprocess.run(
        index_command(manifest, data), capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "unchanged" in rerun.stdout
    assert_each_photo_once(data, rows)
    with Catalogue(data) as catalogue:
        assert len(catalogue.vector_index()) == catalogue.stats().faces


def test_two_runs_at_once_store_no_duplicates(tmp_path: Path) -> None:
    rows = lfw_rows(40)
    manifest = write_manifest(tmp_path / "people.csv", rows)
    data = tmp_path / "data"
    runs = [
        subprocess.Popen(
            index_command(manifest, data),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr
    assert_each_photo_once(data, rows)
