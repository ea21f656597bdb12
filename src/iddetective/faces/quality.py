"""How good a face crop is to learn from: sharpness, measured once when the face is found and
kept with it, so clustering can leave blurred or featureless faces out (people/clustering.py).
"""

from __future__ import annotations

import numpy as np

from ..entities import Box

__all__ = ["face_sharpness", "sharpness"]


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian of a face crop (2-D, values 0..255) resized to 64 px wide:
    low for blurred or featureless faces, independent of the face's size."""
    if grey.ndim != 2 or min(grey.shape) < 3:
        return 0.0
    pixels = grey.astype(np.float32)
    laplacian = (
        pixels[:-2, 1:-1]
        + pixels[2:, 1:-1]
        + pixels[1:-1, :-2]
        + pixels[1:-1, 2:]
        - 4 * pixels[1:-1, 1:-1]
    )
    return float(laplacian.var())


def face_sharpness(pixels: np.ndarray, box: Box) -> float:
    """How sharp the face in `box` of an RGB image is (`sharpness` of its grey
    crop, resized to 64 px wide so the figure does not depend on the face's size)."""
    from PIL import Image

    height, width = pixels.shape[:2]
    crop = pixels[
        max(0, box.top) : min(height, box.bottom), max(0, box.left) : min(width, box.right)
    ]
    if crop.size == 0:
        return 0.0
    grey = Image.fromarray(crop).convert("L")
    side = max(1, round(grey.height * 64 / grey.width))
    return sharpness(np.asarray(grey.resize((64, side), Image.Resampling.BILINEAR)))
