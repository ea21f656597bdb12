"""A detector that kills its process on an all-black image: stands in for a native crash.

A real segfault in dlib cannot be provoked on purpose; this fake says so and does the same
thing to the worker process (SIGSEGV), so the pool's recovery is tested for real.
"""

from __future__ import annotations

import os
import signal

import numpy as np

from iddetective.faces import Detection, HogDetector

__all__ = ["CrashingDetector"]


class CrashingDetector(HogDetector):
    """HOG, except that an all-black image makes the process die of SIGSEGV."""

    name = "crashing-hog"

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        if image.max() == 0:
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().detect(image, upsample)
