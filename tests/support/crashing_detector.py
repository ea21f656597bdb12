"""Detectors that misbehave on purpose: they stand in for a native crash and a photo that
takes forever.

A real segfault in dlib cannot be provoked on purpose; `CrashingDetector` says so and does
the same thing to the worker process (SIGSEGV), so the pool's recovery is tested for real.
`HangingDetector` also never returns on an all-white image, like a detector stuck on a
pathological photo, so the server's bound on a request's analysis time is tested for real.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from iddetective.faces.pipeline import Detection, HogDetector

__all__ = ["CrashingDetector", "HangingDetector"]


class CrashingDetector(HogDetector):
    """HOG, except that an all-black image makes the process die of SIGSEGV."""

    name = "crashing-hog"

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        if image.max() == 0:
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().detect(image, upsample)


class HangingDetector(CrashingDetector):
    """CrashingDetector, which also takes an hour on an all-white image."""

    name = "hanging-hog"

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        if image.min() == 255:
            time.sleep(3600)
        return super().detect(image, upsample)
