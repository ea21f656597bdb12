"""Decode photo bytes into an upright 8-bit RGB array, refusing what is not a usable photo.

Every refusal is a `BadImage` naming the file and the reason; nothing here is silent.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadImage

__all__ = ["DecodedImage", "decode_image", "open_photo_file", "read_photo_bytes"]

#: Files above this size are refused before they are read.
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Images declaring more pixels than this are refused before decoding (decompression bombs).
MAX_PIXELS = 100_000_000

_heif_registered = False


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image scaled to at most `max_side`, and the size of the upright original."""

    pixels: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> float:
        """How many original pixels one pixel of `pixels` stands for."""
        return self.width / self.pixels.shape[1]


def read_photo_bytes(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a photo file whole, refusing empty, oversized, unreadable and special files."""
    with open_photo_file(path) as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as error:
            raise BadImage(path, _cannot_read(error)) from None
    if not data:
        raise BadImage(path, "empty file (0 bytes)")
    if len(data) > max_bytes:
        raise BadImage(path, f"file is larger than the {max_bytes // (1024 * 1024)} MiB limit")
    return data


def open_photo_file(path: str) -> io.BufferedReader:
    """Open a photo file for reading; `BadImage` unless it is a regular file.

    A named pipe would block its reader until something writes to it (forever, in a folder
    being indexed), and a device never ends: the file is opened without blocking and checked
    with fstat on the opened descriptor, so a file swapped after a check is caught too.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | _NO_BLOCK | _NO_TTY)
    except FileNotFoundError:
        raise BadImage(path, "file does not exist") from None
    except PermissionError:
        raise BadImage(path, "cannot read the file: permission denied") from None
    except OSError as error:
        raise BadImage(path, _special_reason(path) or _cannot_read(error)) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise BadImage(path, _not_regular(path, mode))
        if _NO_BLOCK:
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


#: Opening flags that keep a special file from blocking the open or taking a terminal.
_NO_BLOCK = getattr(os, "O_NONBLOCK", 0)
_NO_TTY = getattr(os, "O_NOCTTY", 0)

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(path: str, mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory, not a photo"
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    if os.path.islink(path):
        return f"not a regular file: it links to {os.path.realpath(path)}, {kind}"
    return f"not a regular file: {kind}"


def _special_reason(path: str) -> str | None:
    """Why a file that could not be opened is no photo, when it is a special file (a socket
    refuses to be opened at all)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _not_regular(path, mode)


def _cannot_read(error: OSError) -> str:
    return f"cannot read the file: {error.strerror or error}"


def decode_image(
    data: bytes, name: str, max_side: int, max_pixels: int = MAX_PIXELS
) -> DecodedImage:
    """Decode `data` (the bytes of the file `name`) into an upright RGB image.

    EXIF orientation is applied, so faces are found in the image as a person sees it.
    The result is scaled down so its longer side is at most `max_side`; for JPEGs the
    decoder does most of that scaling itself, which is much faster than a full decode.
    """
    _register_heif()
    image = _open(data, name, max_pixels)
    try:
        upright_width, upright_height = _upright_size(image)
        _draft_jpeg(image, upright_width, upright_height, max_side)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
        raise BadImage(name, f"truncated or corrupt image data ({error})") from None
    rgb = _to_rgb(image)
    rgb = _shrink(rgb, max_side)
    return DecodedImage(np.ascontiguousarray(np.asarray(rgb)), upright_width, upright_height)


def photo_suffix(data: bytes, name: str) -> str:
    """The file suffix for the image format the bytes hold (".jpg", ".png" ...), sniffed.

    The name is only used in the error message: a PNG called `photo.jpg` is a PNG.
    """
    _register_heif()
    image_format = _open(data, name, MAX_PIXELS).format or ""
    return _SUFFIXES.get(image_format, f".{image_format.lower()}" if image_format else "")


_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "HEIF": ".heic", "TIFF": ".tif"}


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        _heif_registered = True


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise BadImage(name, f"refused as a decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise BadImage(name, "not an image: the format is not recognised") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(name, f"corrupt image header ({error})") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadImage(name, f"image declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise BadImage(
            name,
            f"refused as a possible decompression bomb: it declares {width}x{height} pixels "
            f"({width * height / 1e6:.3g} MP), above the {max_pixels / 1e6:.3g} MP limit",
        )
    return image


def _upright_size(image: Image.Image) -> tuple[int, int]:
    orientation = image.getexif().get(0x0112, 1)
    width, height = image.size
    # Orientations 5-8 rotate by 90 degrees and swap the sides.
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _draft_jpeg(image: Image.Image, width: int, height: int, max_side: int) -> None:
    if image.format != "JPEG" or max(width, height) <= max_side:
        return
    factor = max_side / max(width, height)
    requested = (max(1, int(image.size[0] * factor)), max(1, int(image.size[1] * factor)))
    mode = "RGB" if image.mode in ("RGB", "YCbCr") else image.mode
    image.draft(mode, requested)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's own conversion clips 16-bit values at 255 (a white image); scale instead.
    values = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
    grey = np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    width, height = image.size
    if max(width, height) <= max_side:
        return image
    factor = max_side / max(width, height)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
