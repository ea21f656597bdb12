"""Every bad input of `iddetective index`.

Each case is either refused with a reason naming the problem, or accepted when it is a usable
photo; either way the run goes on (a good photo indexed in the same run is stored) and
nothing stored by an earlier run is lost or changed.

Test photos are derived at run time, in temporary folders, from real face photos of the
shared development set (`$IDDETECTIVE_FACES`, by default `../shared/faces` beside the
repository); nothing is copied into the project.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image, ImageOps

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.entities import Box, PersonSummary, StoredFace
from iddetective.errors import BadImage, BadManifest
from iddetective.faces.imaging import decode_image
from iddetective.ingest.indexing import IndexReport

from support.facesets import require_set

pytestmark = pytest.mark.faces

#: Source photos are shrunk to this longer side: big enough for HOG, small enough to be fast.
SIDE = 400
#: Face boxes of the same face in two encodings of one photo may differ by this many pixels.
BOX_TOLERANCE = 4
EXIF_ORIENTATION = 0x0112
NOBODY = 65534

Maker = Callable[[Image.Image, Path], Path]


# -- source photos -------------------------------------------------------------------------------
def _small_rgb(photo: str, keep_top: float) -> Image.Image:
    """A photo of the face_recognition set shrunk to `SIDE`, keeping the top `keep_top`."""
    with Image.open(require_set("face_recognition") / "images" / photo) as original:
        image = original.convert("RGB")
    image.thumbnail((SIDE, SIDE))
    return image.crop((0, 0, image.width, round(image.height * keep_top)))


@pytest.fixture(scope="module")
def face() -> Image.Image:
    """An upright photo with one clear face (not stored anywhere; derive files from it)."""
    return _small_rgb("obama/obama.jpg", keep_top=0.7)


@pytest.fixture(scope="module")
def other_face() -> Image.Image:
    """A photo of someone else, the good photo indexed alongside each bad input."""
    return _small_rgb("biden/biden.jpg", keep_top=0.55)


def save(image: Image.Image, path: Path, format: str, **options: Any) -> Path:
    """Write `image` to `path` (making its folder) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format, **options)
    return path


def write(path: Path, data: bytes) -> Path:
    """Write raw bytes to `path` (making its folder) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR declares `width` x `height` 8-bit RGB pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# -- the catalogue before the bad run ------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """What a catalogue holds: its counts, its people and every stored face."""

    counts: dict[str, int]
    people: dict[str, PersonSummary]
    faces: dict[int, StoredFace]

    @classmethod
    def of(cls, catalogue: Catalogue) -> Snapshot:
        counts = {k: v for k, v in catalogue.stats().__dict__.items() if k != "data_bytes"}
        people = {person.id: person for person in catalogue.people()}
        batches = catalogue.store.embeddings(catalogue.pipeline.embedder)
        ids = [int(face_id) for face_ids, _ in batches for face_id in face_ids]
        return cls(counts, people, catalogue.store.faces(ids))

    def faces_at(self, path: Path | str) -> list[StoredFace]:
        """The stored faces of the photo at `path`."""
        return [face for face in self.faces.values() if str(path) in face.photo.paths]


def assert_only_added(before: Snapshot, after: Snapshot, **added: int) -> None:
    """Everything in `before` is in `after` unchanged, and the counts grew by `added` only."""
    for face_id, stored in before.faces.items():
        assert after.faces.get(face_id) == stored, f"stored face {face_id} changed"
    for person_id, person in before.people.items():
        assert after.people.get(person_id) == person, f"person {person.name} changed"
    grown = {name: after.counts[name] - before.counts[name] for name in after.counts}
    assert grown == {name: added.get(name, 0) for name in after.counts}


def assert_boxes_close(found: Box, expected: Box) -> None:
    """`found` is `expected` within a few pixels on every side."""
    sides = zip(found.as_dict().values(), expected.as_dict().values(), strict=True)
    assert all(abs(a - b) <= BOX_TOLERANCE for a, b in sides), f"{found} is not {expected}"


def failure_reasons(catalogue: Catalogue) -> dict[str, str]:
    """The catalogue's failures, reason by path."""
    return {failure.path: failure.reason for failure in catalogue.failures()}


def reasons_reported(report: IndexReport) -> dict[str, str]:
    """The failures of an indexing run's report, reason by path (a failure always has one)."""
    reasons: dict[str, str] = {}
    for result in report.failed:
        assert result.reason is not None, f"{result.path} failed without a reason"
        reasons[result.path] = result.reason
    return reasons


@dataclass
class World:
    """A catalogue holding one labelled photo from an earlier run, and a good photo for the next.

    Bad inputs go in `folder`; each test indexes them together with `good`.
    """

    base: Path
    data: Path
    catalogue: Catalogue
    stored: Path
    good: Path
    folder: Path
    before: Snapshot

    def index(self, *paths: Path, **options: Any) -> IndexReport:
        """Index `paths` through the library."""
        return self.catalogue.index([str(p) for p in paths], **options)

    def cli(self, command: str, *args: str | Path) -> Result:
        """Run `iddetective COMMAND --data DATA ARGS...` in this process."""
        arguments = [command, "--data", str(self.data), *map(str, args)]
        return CliRunner().invoke(main, arguments)

    def snapshot(self) -> Snapshot:
        return Snapshot.of(self.catalogue)

    def assert_good_stored(self, after: Snapshot) -> StoredFace:
        """The good photo indexed in the bad run is stored, with one face."""
        faces = after.faces_at(self.good)
        assert len(faces) == 1, f"{self.good} stored with {len(faces)} faces"
        return faces[0]

    def reopen(self) -> None:
        self.catalogue = Catalogue(self.data)


@dataclass(frozen=True)
class Template:
    """A data directory whose catalogue holds `stored` (person "obama"), from a first run."""

    data: Path
    stored: Path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, face: Image.Image) -> Template:
    """Made once per module; each test indexes into its own copy of `data`."""
    base = tmp_path_factory.mktemp("first-run")
    stored = save(face, base / "photos" / "obama" / "obama.jpg", "JPEG", quality=92)
    with Catalogue(base / "data", create=True) as catalogue:
        report = catalogue.index([str(base / "photos")], people_from_folders=True)
    assert (report.indexed, report.faces, report.failed) == (1, 1, [])
    return Template(base / "data", stored)


def make_world(base: Path, template: Template, other_face: Image.Image) -> World:
    """A copy of the first run's catalogue in `base`, and a good photo for the next run."""
    shutil.copytree(template.data, base / "data")
    good = save(other_face, base / "good" / "biden.jpg", "JPEG", quality=92)
    folder = base / "bad"
    folder.mkdir()
    catalogue = Catalogue(base / "data")
    before = Snapshot.of(catalogue)
    assert [p.name for p in before.people.values()] == ["obama"]
    assert len(before.faces_at(template.stored)) == 1
    return World(base, base / "data", catalogue, template.stored, good, folder, before)


@pytest.fixture
def world(tmp_path: Path, template: Template, other_face: Image.Image) -> Iterator[World]:
    made = make_world(tmp_path, template, other_face)
    yield made
    made.catalogue.close()


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A temporary folder any user may enter and write (pytest's tmp_path is private)."""
    base = Path(tempfile.mkdtemp(prefix="iddetective-test-"))
    base.chmod(0o777)
    yield base
    shutil.rmtree(base)


# -- bad files -----------------------------------------------------------------------------------
def zero_byte_file(face: Image.Image, folder: Path) -> Path:
    return write(folder / "empty.jpg", b"")


def truncated_jpeg(face: Image.Image, folder: Path) -> Path:
    whole = io.BytesIO()
    face.save(whole, "JPEG", quality=90)
    return write(folder / "truncated.jpg", whole.getvalue()[: len(whole.getvalue()) // 2])


def text_named_jpg(face: Image.Image, folder: Path) -> Path:
    return write(folder / "notes.jpg", b"Shopping list:\n- milk\n- bread\n")


def png_bomb(face: Image.Image, folder: Path) -> Path:
    return write(folder / "bomb.png", png_declaring(30000, 30000))


#: Files that must fail, with words their reason must contain.
BAD_FILES: dict[str, tuple[Maker, tuple[str, ...]]] = {
    "zero-byte": (zero_byte_file, ("empty file", "0 bytes")),
    "truncated-jpeg": (truncated_jpeg, ("truncated",)),
    "text-named-jpg": (text_named_jpg, ("not an image",)),
    "png-bomb-30000x30000": (png_bomb, ("decompression bomb",)),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_fails_with_its_reason_and_the_run_goes_on(
    case: str, world: World, face: Image.Image
) -> None:
    make, words = BAD_FILES[case]
    bad = make(face, world.folder)
    report = world.index(bad, world.good)
    reported = reasons_reported(report)
    assert list(reported) == [str(bad)]
    assert failure_reasons(world.catalogue) == reported
    for word in words:
        assert word in reported[str(bad)]
    assert (report.indexed, report.faces, report.no_face) == (1, 1, 0)
    after = world.snapshot()
    world.assert_good_stored(after)
    assert_only_added(world.before, after, photos=1, faces=1, unknown_faces=1, failed=1)


@pytest.mark.parametrize("side", [30000, 12000])
def test_bomb_is_refused_from_its_header_without_allocating(
    side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30000² trips Pillow's own guard at open; 12000² (144 MP) trips the 100 MP limit."""
    allocated: list[tuple[int, int]] = []
    real_new = Image.core.new

    def spy(mode: str, size: tuple[int, int], *args: Any) -> Any:
        allocated.append(size)
        return real_new(mode, size, *args)

    monkeypatch.setattr(Image.core, "new", spy)
    with pytest.raises(BadImage, match="decompression bomb") as refused:
        decode_image(png_declaring(side, side), "bomb.png", max_side=1600)
    assert allocated == []
    assert refused.value.path == "bomb.png"
    if side == 12000:
        assert "12000x12000" in refused.value.reason


def test_cli_lists_every_failure_and_exits_3(world: World, face: Image.Image) -> None:
    bad = {name: make(face, world.folder) for name, (make, _) in BAD_FILES.items()}
    result = world.cli("index", *bad.values(), world.good)
    assert result.exit_code == 3, result.output
    stored = failure_reasons(world.catalogue)
    assert set(stored) == {str(path) for path in bad.values()}
    for name, path in bad.items():
        for word in BAD_FILES[name][1]:
            assert word in stored[str(path)]
        assert f"failed: {path}: {stored[str(path)]}" in result.stdout
    assert "indexed 1 photos (1 faces), 0 with no face, 4 failed" in result.stdout

    listing = world.cli("failures")
    assert listing.exit_code == 0, listing.output
    for failed, reason in stored.items():
        assert f"{failed}: {reason}" in listing.stdout
    after = world.snapshot()
    world.assert_good_stored(after)
    assert_only_added(world.before, after, photos=1, faces=1, unknown_faces=1, failed=4)


def test_cli_prints_a_failed_path_that_looks_like_markup(world: World) -> None:
    bad = write(world.folder / "scan [/b].jpg", b"")
    result = world.cli("index", bad, world.good)
    assert result.exit_code == 3, result.output
    assert f"failed: {bad}: empty file (0 bytes)" in result.stdout


def test_stored_photo_whose_file_turns_corrupt_keeps_its_faces(
    world: World, face: Image.Image
) -> None:
    first = world.index(world.good)
    assert (first.indexed, first.faces) == (1, 1)
    stored = world.snapshot()
    whole = world.good.read_bytes()
    world.good.write_bytes(whole[: len(whole) // 2])
    other = grey_jpeg(face, world.folder)
    report = world.index(world.good, other)
    reported = reasons_reported(report)
    assert list(reported) == [str(world.good)]
    assert "truncated" in reported[str(world.good)]
    assert (report.indexed, report.faces) == (1, 1)
    after = world.snapshot()
    assert len(after.faces_at(other)) == 1
    assert_only_added(stored, after, photos=1, faces=1, unknown_faces=1, failed=1)

    world.good.write_bytes(whole)  # the file is restored: the failure goes, nothing else
    restored = world.index(world.good)
    assert (restored.failed, restored.indexed) == ([], 0)
    assert world.catalogue.failures() == []
    assert_only_added(stored, world.snapshot(), photos=1, faces=1, unknown_faces=1)


# -- usable photos in unusual formats ------------------------------------------------------------
def cmyk_jpeg(face: Image.Image, folder: Path) -> Path:
    return save(face.convert("CMYK"), folder / "cmyk.jpg", "JPEG", quality=92)


def grey16_png(face: Image.Image, folder: Path) -> Path:
    grey = np.asarray(face.convert("L"), dtype=np.uint16) * 257
    path = save(Image.fromarray(grey), folder / "grey16.png", "PNG")
    with Image.open(path) as written:
        assert written.mode.startswith("I;16"), written.mode
    return path


def grey_jpeg(face: Image.Image, folder: Path) -> Path:
    return save(face.convert("L"), folder / "grey.jpg", "JPEG", quality=92)


def palette_png_with_alpha(face: Image.Image, folder: Path) -> Path:
    rgba = np.asarray(face.convert("RGBA")).copy()
    rgba[:, :40, 3] = np.linspace(0, 255, 40, dtype=np.uint8)  # a fading left edge
    path = save(Image.fromarray(rgba).quantize(colors=200), folder / "palette.png", "PNG")
    with Image.open(path) as written:
        assert written.mode == "P"
        assert isinstance(written.info.get("transparency"), bytes), "no alpha palette"
    return path


def webp(face: Image.Image, folder: Path) -> Path:
    return save(face, folder / "photo.webp", "WEBP", quality=90)


def heic(face: Image.Image, folder: Path) -> Path:
    import pillow_heif

    pillow_heif.register_heif_opener()
    try:
        return save(face, folder / "photo.heic", "HEIF", quality=90)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        pytest.skip(f"this pillow_heif build cannot write HEIF, so HEIC is untested: {error}")


ACCEPTED: dict[str, Maker] = {
    "cmyk-jpeg": cmyk_jpeg,
    "grey16-png": grey16_png,
    "grey-jpeg": grey_jpeg,
    "palette-png-with-alpha": palette_png_with_alpha,
    "webp": webp,
    "heic": heic,
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_usable_photo_is_accepted_and_its_face_found(
    case: str, world: World, face: Image.Image
) -> None:
    photo = ACCEPTED[case](face, world.folder)
    report = world.index(photo, world.good)
    assert report.failed == []
    assert world.catalogue.failures() == []
    assert (report.indexed, report.faces, report.no_face) == (2, 2, 0)
    after = world.snapshot()
    world.assert_good_stored(after)
    [found] = after.faces_at(photo)
    [upright] = world.before.faces_at(world.stored)
    assert (found.photo.width, found.photo.height) == face.size
    assert_boxes_close(found.box, upright.box)
    assert_only_added(world.before, after, photos=2, faces=2, unknown_faces=2)


def test_16bit_grey_is_scaled_not_clipped(face: Image.Image, tmp_path: Path) -> None:
    path = grey16_png(face, tmp_path)
    decoded = decode_image(path.read_bytes(), str(path), max_side=1600)
    expected = np.asarray(face.convert("L"), dtype=np.float64)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.shape == (*expected.shape, 3)
    assert np.abs(decoded.pixels[..., 0] - expected).max() <= 1


# -- EXIF orientation ----------------------------------------------------------------------------
#: EXIF orientation -> how the camera turned the upright pixels before writing them.
ORIENTATIONS = {
    6: Image.Transpose.ROTATE_90,  # a viewer turns it 90° clockwise
    8: Image.Transpose.ROTATE_270,  # a viewer turns it 90° anticlockwise
    3: Image.Transpose.ROTATE_180,
}


def exif_rotated_jpeg(face: Image.Image, folder: Path, orientation: int) -> Path:
    """`face` stored turned, with an EXIF orientation so that a viewer shows it upright."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    turned = face.transpose(ORIENTATIONS[orientation])
    path = save(turned, folder / f"orientation-{orientation}.jpg", "JPEG", quality=92, exif=exif)
    with Image.open(path) as written:
        assert written.size == turned.size
        assert ImageOps.exif_transpose(written).size == face.size
    return path


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_exif_rotated_photo_gives_the_upright_box(
    orientation: int, world: World, face: Image.Image
) -> None:
    photo = exif_rotated_jpeg(face, world.folder, orientation)
    report = world.index(photo, world.good)
    assert (report.indexed, report.faces, report.failed) == (2, 2, [])
    after = world.snapshot()
    world.assert_good_stored(after)
    [found] = after.faces_at(photo)
    [upright] = world.before.faces_at(world.stored)
    assert (found.photo.width, found.photo.height) == face.size
    assert_boxes_close(found.box, upright.box)
    assert_only_added(world.before, after, photos=2, faces=2, unknown_faces=2)


def test_exif_rotation_survives_jpeg_draft_decoding(face: Image.Image, tmp_path: Path) -> None:
    """A small `max_side` makes the JPEG decoder scale while decoding; rotation still applies."""
    rotated = exif_rotated_jpeg(face, tmp_path, 6)
    upright = save(face, tmp_path / "upright.jpg", "JPEG", quality=92)
    small = [decode_image(p.read_bytes(), str(p), max_side=SIDE // 2) for p in (rotated, upright)]
    assert [(d.width, d.height) for d in small] == [face.size, face.size]
    assert small[0].pixels.shape == small[1].pixels.shape
    difference = np.abs(small[0].pixels.astype(int) - small[1].pixels.astype(int)).mean()
    assert difference < 8


# -- photos without a face -----------------------------------------------------------------------
def gradient(face: Image.Image, folder: Path) -> Path:
    ramp = np.tile(np.linspace(0, 255, SIDE, dtype=np.uint8), (300, 1))
    return save(Image.fromarray(ramp).convert("RGB"), folder / "gradient.jpg", "JPEG")


def background_crop(face: Image.Image, folder: Path) -> Path:
    return save(face.crop((0, 0, 100, 120)), folder / "background.jpg", "JPEG", quality=92)


NO_FACE: dict[str, Maker] = {"gradient": gradient, "background-crop": background_crop}


@pytest.mark.parametrize("case", NO_FACE)
def test_photo_without_a_face_is_no_face_not_a_failure(
    case: str, world: World, face: Image.Image
) -> None:
    photo = NO_FACE[case](face, world.folder)
    report = world.index(photo, world.good)
    assert report.failed == []
    assert world.catalogue.failures() == []
    assert (report.indexed, report.faces, report.no_face) == (1, 1, 1)
    after = world.snapshot()
    world.assert_good_stored(after)
    assert after.faces_at(photo) == []
    assert_only_added(
        world.before, after, photos=2, photos_without_face=1, faces=1, unknown_faces=1
    )


def test_cli_exits_0_when_only_no_face(world: World, face: Image.Image) -> None:
    photo = gradient(face, world.folder)
    result = world.cli("index", photo, world.good)
    assert result.exit_code == 0, result.output
    assert "indexed 1 photos (1 faces), 1 with no face, 0 failed" in result.stdout
    assert world.cli("failures").stdout.strip() == "no failures"


# -- paths ---------------------------------------------------------------------------------------
def test_missing_path_is_exit_2_naming_it_and_nothing_is_indexed(world: World) -> None:
    missing = world.folder / "no-such-photo.jpg"
    result = world.cli("index", world.good, missing)
    assert result.exit_code == 2, result.output
    assert str(missing) in result.stderr
    after = world.snapshot()
    assert after.faces_at(world.good) == []
    assert_only_added(world.before, after)


def test_broken_symlink_in_a_folder_fails_saying_so(world: World) -> None:
    album = world.folder / "album"
    album.mkdir()
    target = album / "moved-away.jpg"
    link = album / "dangling.jpg"
    link.symlink_to(target)
    report = world.index(album, world.good)
    reported = reasons_reported(report)
    assert list(reported) == [str(link)]
    assert failure_reasons(world.catalogue) == reported
    assert "broken symbolic link" in reported[str(link)]
    assert str(target) in reported[str(link)]
    after = world.snapshot()
    world.assert_good_stored(after)
    assert_only_added(world.before, after, photos=1, faces=1, unknown_faces=1, failed=1)


def _open_to_everyone(base: Path, keep: Path) -> None:
    """Let any user write every folder and file under `base`, except `keep`."""
    for folder, _, files in os.walk(base):
        Path(folder).chmod(0o777)
        for name in files:
            path = Path(folder, name)
            if path != keep:
                path.chmod(0o666)


#: Started as root, because the interpreter may live where `nobody` cannot go (/root/.pyenv):
#: index the good photo (argv 2) into a scratch copy of the data directory (argv 1) to load
#: every module and model the command needs, then become `nobody` and run the real command.
AS_NOBODY = f"""
import contextlib, io, os, shutil, sys, tempfile
from iddetective.cli import main

data, photo = sys.argv.pop(1), sys.argv.pop(1)
with tempfile.TemporaryDirectory() as scratch:
    warm = os.path.join(scratch, "data")
    shutil.copytree(data, warm)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["index", "--data", warm, photo], standalone_mode=False)
os.setgroups([])
os.setgid({NOBODY})
os.setuid({NOBODY})
main()
"""


def _index_as_nobody(world: World, *paths: Path) -> subprocess.CompletedProcess[str]:
    """Run the index command in a subprocess as user `nobody`, whom chmod 000 does stop."""
    arguments = ["index", "--data", str(world.data), *map(str, paths)]
    return subprocess.run(
        [sys.executable, "-c", AS_NOBODY, str(world.data), str(world.good), *arguments],
        env={**os.environ, "HOME": str(world.base)},
        cwd=world.base,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _index_unreadable(world: World, locked: Path, *paths: Path) -> tuple[int, str, str]:
    """Index `paths` by the CLI as a user who cannot read `locked`: exit code, stdout, all."""
    if os.geteuid() != 0:
        if os.access(locked, os.R_OK):
            pytest.skip("this user reads files whatever their mode, so none is unreadable")
        result = world.cli("index", *paths)
        return result.exit_code, result.stdout, result.output
    world.catalogue.close()
    try:
        _open_to_everyone(world.base, keep=locked)
        run = _index_as_nobody(world, *paths)
    finally:
        world.reopen()
    return run.returncode, run.stdout, run.stdout + run.stderr


@pytest.mark.parametrize(
    "named",
    ["inside-a-folder", "on-the-command-line"],
)
def test_unreadable_file_fails_with_permission_denied(
    named: str, open_base: Path, template: Template, face: Image.Image, other_face: Image.Image
) -> None:
    world = make_world(open_base, template, other_face)
    try:
        locked = save(face, world.folder / "album" / "locked.jpg", "JPEG", quality=80)
        locked.chmod(0)
        given = locked if named == "on-the-command-line" else locked.parent
        exit_code, stdout, output = _index_unreadable(world, locked, given, world.good)
        assert exit_code == 3, output
        reason = failure_reasons(world.catalogue)[str(locked)]
        assert "permission denied" in reason
        assert f"failed: {locked}: {reason}" in stdout
        after = world.snapshot()
        world.assert_good_stored(after)
        assert_only_added(world.before, after, photos=1, faces=1, unknown_faces=1, failed=1)
    finally:
        world.catalogue.close()


# -- people manifests ----------------------------------------------------------------------------
def _relative(path: Path, manifest: Path) -> str:
    return os.path.relpath(path, manifest.parent)


def test_manifest_naming_a_missing_file_fails_naming_the_line(world: World) -> None:
    manifest = world.folder / "people.csv"
    manifest.write_text(
        f"path,person\n{_relative(world.good, manifest)},Joe Biden\nmissing.jpg,Someone\n"
    )
    result = world.cli("index", "--people", manifest)
    assert result.exit_code == 3, result.output
    missing = world.folder / "missing.jpg"
    reason = failure_reasons(world.catalogue)[str(missing)]
    assert f"{manifest} line 3" in reason
    assert "does not exist" in reason
    assert f"failed: {missing}: {reason}" in result.stdout
    after = world.snapshot()
    good = world.assert_good_stored(after)
    assert good.person is not None and good.person.name == "Joe Biden"
    assert [p.name for p in after.people.values() if p.id not in world.before.people] == [
        "Joe Biden"
    ]
    assert_only_added(world.before, after, photos=1, faces=1, people=1, failed=1)


def test_manifest_bad_rows_fail_naming_their_lines(world: World, face: Image.Image) -> None:
    for name in ("unnamed.jpg", "extra.jpg"):
        save(face, world.folder / name, "JPEG", quality=85)
    manifest = world.folder / "people.csv"
    manifest.write_text(
        "path,person\n"
        f"{_relative(world.good, manifest)},Joe Biden\n"
        "unnamed.jpg,\n"
        "extra.jpg,Biden,Joe\n"
    )
    report = world.index(people=str(manifest))
    reported = reasons_reported(report)
    assert failure_reasons(world.catalogue) == reported
    assert set(reported) == {f"{manifest} line 3", f"{manifest} line 4"}
    assert "needs both a path and a person" in reported[f"{manifest} line 3"]
    assert "more fields than the header names (extra: Joe)" in reported[f"{manifest} line 4"]
    after = world.snapshot()
    good = world.assert_good_stored(after)
    assert good.person is not None and good.person.name == "Joe Biden"
    assert_only_added(world.before, after, photos=1, faces=1, people=1, failed=2)


def test_jsonl_manifest_with_a_non_json_line_fails_naming_it(world: World) -> None:
    manifest = world.folder / "people.jsonl"
    manifest.write_text(
        f'{{"path": "{_relative(world.good, manifest)}", "person": "Joe Biden"}}\n'
        "path=extra.jpg person=Joe\n"
    )
    result = world.cli("index", "--people", manifest)
    assert result.exit_code == 3, result.output
    where = f"{manifest} line 2"
    reason = failure_reasons(world.catalogue)[where]
    assert "not valid JSON" in reason
    assert f"failed: {where}: {reason}" in result.stdout
    after = world.snapshot()
    good = world.assert_good_stored(after)
    assert good.person is not None and good.person.name == "Joe Biden"
    assert_only_added(world.before, after, photos=1, faces=1, people=1, failed=1)


def test_manifest_without_header_is_exit_2_and_nothing_is_indexed(world: World) -> None:
    manifest = world.folder / "people.csv"
    manifest.write_text(f"{_relative(world.good, manifest)},Joe Biden\n")
    result = world.cli("index", "--people", manifest)
    assert result.exit_code == 2, result.output
    assert str(manifest) in result.stderr
    assert "header with the columns path and person" in result.stderr
    assert f"(found: {_relative(world.good, manifest)}, Joe Biden)" in result.stderr
    with pytest.raises(BadManifest, match="header"):
        world.index(people=str(manifest))
    after = world.snapshot()
    assert after.faces_at(world.good) == []
    assert_only_added(world.before, after)


def test_manifest_that_is_not_csv_is_exit_2_naming_the_line(world: World) -> None:
    manifest = world.folder / "people.csv"
    huge = "x" * 200_000  # beyond the csv module's field size limit
    manifest.write_text(f"path,person\n{_relative(world.good, manifest)},Joe Biden\na.jpg,{huge}\n")
    result = world.cli("index", "--people", manifest)
    assert result.exit_code == 2, result.output
    assert f"people manifest {manifest} line 3: not readable as CSV" in result.stderr
    assert_only_added(world.before, world.snapshot())
