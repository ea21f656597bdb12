"""Special files (named pipes, sockets, devices, links to them) named like photos.

Reading a FIFO blocks until something writes to it, so each is refused with a reason before
any read, wherever photo bytes are read: indexing (in this process and in worker
processes), searching by photo, opting out by photo, thumbnails and crops. A `Rescuer`
opens every FIFO for writing after a grace period, so code that blocks on one fails these
tests instead of hanging them, and it records that it had to.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.evaluation.detection_study import compare_detectors
from iddetective.evaluation.evaluate import embed_photos
from iddetective.faces.pipeline import PipelineSettings
from iddetective.web import ServerSettings, create_app

from support.facesets import WebCatalogue, copy_data, require_set

pytestmark = pytest.mark.faces

#: Longer than any read here takes when it does not block.
GRACE_SECONDS = 20.0


class Rescuer:
    """Opens the FIFOs for writing once `GRACE_SECONDS` have passed, releasing any reader
    blocked on them (who then reads an empty file); `rescued` lists the FIFOs it had to."""

    def __init__(self, fifos: list[Path]) -> None:
        self.fifos = fifos
        self.rescued: set[Path] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Rescuer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        if self._stop.wait(GRACE_SECONDS):
            return
        while not self._stop.wait(0.1):
            for fifo in self.fifos:
                try:
                    # Opening for writing without blocking works only while a reader has it.
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    self.rescued.add(fifo)
                except OSError:
                    pass


@pytest.fixture()
def good_photo(tmp_path: Path) -> Path:
    """A small copy of a real face photo (made for the test, outside the repository)."""
    source = require_set("face_recognition") / "images" / "biden" / "biden.jpg"
    target = tmp_path / "photos" / "biden.jpg"
    target.parent.mkdir(parents=True)
    with Image.open(source) as image:
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(target)
    return target


def special_files(folder: Path) -> tuple[dict[Path, str], list[Path], socket.socket]:
    """Special files named like photos in `folder`: {path: words its reason must hold},
    the FIFOs among them, and the socket (close it when done)."""
    fifo = folder / "pipe.jpg"
    os.mkfifo(fifo)
    linked = folder / "link-to-pipe.jpg"
    os.mkfifo(folder / ".hidden-pipe")
    linked.symlink_to(folder / ".hidden-pipe")
    device = folder / "device.jpg"
    device.symlink_to("/dev/zero")
    bound = folder / "socket.jpg"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(bound))
    expected = {
        fifo: "named pipe (FIFO)",
        linked: "named pipe (FIFO)",
        device: "character device",
        bound: "socket",
    }
    return expected, [fifo, folder / ".hidden-pipe"], server


@pytest.mark.parametrize("workers", [1, 2])
def test_special_files_in_a_folder_fail_with_what_they_are(
    tmp_path: Path, good_photo: Path, workers: int
) -> None:
    folder = good_photo.parent
    expected, fifos, server = special_files(folder)
    data = tmp_path / "data"
    arguments = ["index", str(folder), "--data", str(data), "--workers", str(workers)]
    try:
        with Rescuer(fifos) as rescuer:
            started = time.monotonic()
            result = CliRunner().invoke(main, arguments)
            seconds = time.monotonic() - started
    finally:
        server.close()
    assert not rescuer.rescued, f"blocked reading {rescuer.rescued} ({seconds:.0f} s)"
    assert result.exit_code == 3, result.output
    with Catalogue(data) as catalogue:
        reasons = {f.path: f.reason for f in catalogue.failures()}
        assert catalogue.stats().photos == 1  # the good photo, indexed in the same run
    assert set(reasons) == {str(path) for path in expected}
    for path, words in expected.items():
        assert "not a regular file" in reasons[str(path)] and words in reasons[str(path)]
        assert f"failed: {path}: " in result.stdout
    assert "/dev/zero" in reasons[str(folder / "device.jpg")]


def test_a_fifo_on_the_command_line_fails_with_the_others(tmp_path: Path, good_photo: Path) -> None:
    fifo = tmp_path / "named.jpg"
    os.mkfifo(fifo)
    data = tmp_path / "data"
    with Rescuer([fifo]) as rescuer:
        arguments = ["index", str(fifo), str(good_photo), "--data", str(data)]
        result = CliRunner().invoke(main, arguments)
    assert not rescuer.rescued
    assert result.exit_code == 3, result.output
    assert f"failed: {fifo}: not a regular file: a named pipe (FIFO)" in result.stdout


@pytest.fixture()
def catalogue_copy(web_catalogue: WebCatalogue, tmp_path: Path) -> Path:
    return copy_data(web_catalogue.data_dir, tmp_path / "data")


@pytest.mark.parametrize("command", [["search"], ["optout", "add"]])
def test_searching_or_opting_out_by_a_fifo_is_refused_at_once(
    tmp_path: Path, catalogue_copy: Path, command: list[str]
) -> None:
    fifo = tmp_path / "query.jpg"
    os.mkfifo(fifo)
    with Rescuer([fifo]) as rescuer:
        result = CliRunner().invoke(main, [*command, str(fifo), "--data", str(catalogue_copy)])
    assert not rescuer.rescued
    assert result.exit_code == 2, result.output
    assert f"{fifo}: not a regular file: a named pipe (FIFO)" in result.stderr


@pytest.fixture()
def photo_turned_fifo(tmp_path: Path, good_photo: Path) -> Iterator[tuple[Path, str, int, str]]:
    """(data dir, the photo's SHA-256, its face id, an admin key) for a catalogue whose one
    photo's file has since been replaced by a FIFO."""
    data = tmp_path / "data"
    sha256 = hashlib.sha256(good_photo.read_bytes()).hexdigest()
    with Catalogue(data, create=True) as catalogue:
        catalogue.index([str(good_photo)])
        (face_id,) = catalogue.store.unnamed_faces(catalogue.model, only_new=False).ids
        key, _ = catalogue.create_key("admin")
    good_photo.unlink()
    os.mkfifo(good_photo)
    yield data, sha256, int(face_id), key


def test_thumbnails_and_crops_of_a_file_turned_fifo_are_not_found_at_once(
    photo_turned_fifo: tuple[Path, str, int, str], good_photo: Path
) -> None:
    data, sha256, face_id, key = photo_turned_fifo
    headers = {"Authorization": f"Bearer {key}"}
    app = create_app(ServerSettings(data, analysis_workers=0, broker=None))
    with Rescuer([good_photo]) as rescuer, TestClient(app) as client:
        thumbnail = client.get(f"/api/photos/{sha256}/thumbnail", headers=headers)
        crop = client.get(f"/api/faces/{face_id}/crop", headers=headers)
    assert not rescuer.rescued
    for answer in (thumbnail, crop):
        assert answer.status_code == 404, answer.text
        message = answer.json()["error"]["message"]
        assert "not a regular file: a named pipe (FIFO)" in message


def test_evaluation_and_the_detector_study_refuse_a_fifo_at_once(
    tmp_path: Path, good_photo: Path
) -> None:
    fifo = tmp_path / "labelled.jpg"
    os.mkfifo(fifo)
    paths = [str(fifo), str(good_photo)]
    with Rescuer([fifo]) as rescuer:
        run = embed_photos(paths, cache_dir=tmp_path / "cache")
        (trial,) = compare_detectors(paths, [PipelineSettings()])
    assert not rescuer.rescued
    assert "not a regular file: a named pipe (FIFO)" in run.photos[0].error
    assert run.photos[1].faces == 1
    assert trial.unusable == 1 and trial.photos == 2
