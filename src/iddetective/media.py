"""Thumbnails of stored photos and crops of stored faces, made once and cached as JPEG files.

They are re-encoded from decoded pixels, so no EXIF (GPS, camera, owner) ever leaves the
server. They are made only from files whose bytes still have the photo's SHA-256, so a file
overwritten since indexing is refused (`PhotoChanged`), never shown. The cache lives under
`<data>/media/`: a thumbnail is named by the photo's SHA-256 and size, a crop by the face id
(face ids are never reused), so a cached file never goes stale.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from .entities import Box, PhotoRef
from .errors import BadImage, NotFound, PhotoChanged
from .faces.imaging import decode_image, read_photo_bytes
from .files import write_atomically

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "CROP_SIDE",
    "MEDIA_DIR",
    "THUMB_SIDES",
    "face_crop",
    "forget",
    "orphans",
    "thumbnail",
]

MEDIA_DIR = "media"
#: Thumbnail sizes (longest side in pixels) the API serves.
THUMB_SIDES = (256, 1024)
CROP_SIDE = 160
#: Margin around the face box in a crop, as a share of the box size.
_CROP_MARGIN = 0.25


def thumbnail(data_dir: Path, photo: PhotoRef, side: int) -> Path:
    """A JPEG of the photo at most `side` pixels on its longest side (upright, no EXIF)."""
    if side not in THUMB_SIDES:
        raise NotFound(f"no thumbnail size {side}: sizes are {', '.join(map(str, THUMB_SIDES))}")
    target = _thumb_path(data_dir, photo.sha256, side)
    if not target.exists():
        image = decode_image(_photo_bytes(photo), photo.paths[0], side)
        _write_jpeg(Image.fromarray(image.pixels), target)
    return target


def face_crop(data_dir: Path, face_id: int, photo: PhotoRef, box: Box) -> Path:
    """A square JPEG around one stored face, `CROP_SIDE` pixels wide (no EXIF)."""
    target = _crop_path(data_dir, face_id)
    if not target.exists():
        # Decode only as large as the crop needs: a face in a 100-megapixel photo is small work.
        needed = 2 * CROP_SIDE / max(box.width, box.height, 1)
        longest = max(photo.width, photo.height)
        image = decode_image(_photo_bytes(photo), photo.paths[0], round(longest * min(1, needed)))
        pixels = Image.fromarray(image.pixels)
        crop = pixels.crop(_square_around(box.scaled(1 / image.scale), pixels.size))
        _write_jpeg(crop.resize((CROP_SIDE, CROP_SIDE), Image.Resampling.LANCZOS), target)
    return target


def forget(data_dir: Path, face_ids: Iterable[int], photos: Iterable[PhotoRef]) -> int:
    """Delete the cached crops of these faces and thumbnails of these photos; returns files."""
    targets = [_crop_path(data_dir, face_id) for face_id in face_ids]
    targets += [_thumb_path(data_dir, p.sha256, side) for p in photos for side in THUMB_SIDES]
    removed = 0
    for target in targets:
        try:
            target.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def orphans(root: Path, store: Store) -> list[Path]:
    """Cached crops of faces (of any model) and thumbnails of photos that are no longer in
    the catalogue, under the media folder `root`."""
    faces = {int(i) for model in store.models() for i in store.face_ids(model.name)}
    found = [
        crop
        for crop in root.glob("face/*/*.jpg")
        if crop.stem.isdigit() and int(crop.stem) not in faces
    ]
    for thumb in root.glob("thumb/*/*.jpg"):
        if not store.has_photo(thumb.stem.split("-")[0]):
            found.append(thumb)
    return found


def _thumb_path(data_dir: Path, sha256: str, side: int) -> Path:
    return data_dir / MEDIA_DIR / "thumb" / sha256[:2] / f"{sha256}-{side}.jpg"


def _crop_path(data_dir: Path, face_id: int) -> Path:
    return data_dir / MEDIA_DIR / "face" / f"{face_id % 1000:03d}" / f"{face_id}.jpg"


def _photo_bytes(photo: PhotoRef) -> bytes:
    """The bytes of the first of the photo's files that still holds exactly what was indexed.

    A file rewritten since (another photo saved over it, an edit) has other bytes: rendering
    it would show whoever is in it now under the indexed face's name, so it is refused.
    """
    reasons, changed = [], []
    for path in photo.paths:
        try:
            data = read_photo_bytes(path)
        except BadImage as error:
            reasons.append(error.reason)
            continue
        if hashlib.sha256(data).hexdigest() == photo.sha256:
            return data
        changed.append(path)
    if changed:
        raise PhotoChanged(
            f"{changed[0]} changed since it was indexed (its SHA-256 is no longer "
            f"{photo.sha256[:12]}…): nothing is shown from it until `iddetective index` "
            "reads it again"
        )
    detail = "; ".join(reasons) or "no file is recorded for it"
    raise NotFound(f"the files of photo {photo.sha256} cannot be read: {detail}")


def _square_around(box: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    side = round(max(box.width, box.height) * (1 + 2 * _CROP_MARGIN))
    centre_x, centre_y = box.centre
    left = max(0, min(size[0] - side, round(centre_x - side / 2)))
    top = max(0, min(size[1] - side, round(centre_y - side / 2)))
    return left, top, min(size[0], left + side), min(size[1], top + side)


def _write_jpeg(image: Image.Image, target: Path) -> None:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=85, optimize=True)
    write_atomically(target, buffer.getvalue())
