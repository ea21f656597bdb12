"""Which face of a labelled photo the label belongs to."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..entities import Box

__all__ = ["choose_labelled_face"]


def choose_labelled_face(boxes: Sequence[Box], width: int, height: int) -> int:
    """Index of the face a photo's label names: the largest, most central one.

    A face's claim is its area weighted down by its distance from the photo's centre
    (full weight at the centre, a quarter at a corner), so a large face at the edge of a
    crowded news photo loses to the slightly smaller subject in the middle.
    """
    if not boxes:
        raise ValueError("a photo without faces has no face to label")
    half_diagonal = math.hypot(width, height) / 2 or 1.0

    def claim(box: Box) -> float:
        x, y = box.centre
        off_centre = math.hypot(x - width / 2, y - height / 2) / half_diagonal
        return box.area * (1.0 - 0.75 * min(off_centre, 1.0))

    return max(range(len(boxes)), key=lambda i: claim(boxes[i]))
