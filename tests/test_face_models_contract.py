"""The contract every `Detector` and `Embedder` (faces/pipeline.py) passes, parametrised by registry
name and run on real photos of the face_recognition set ($IDDETECTIVE_FACES).

A detector's name is its registry name. An embedder's name is its model, the vector space its
embeddings live in: two registry names may be two runtimes of one model (dlib's ResNet on ONNX
Runtime, `dlib-resnet-v1`, and on dlib, `dlib-resnet-v1-dlib`), which share the model's name and
give its vectors."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import pytest

from iddetective.entities import Box
from iddetective.faces.imaging import decode_image
from iddetective.faces.pipeline import (
    Detector,
    Embedder,
    FacePipeline,
    HogDetector,
    PipelineSettings,
)
from iddetective.matching import distances
from iddetective.matching.calibration import calibration_for
from iddetective.registry import available, checked_instance, resolve_class

from support.facesets import read_labels, require_set

pytestmark = pytest.mark.faces

#: Photos are decoded at most this large: a CNN detector on a CPU takes seconds beyond it.
MAX_SIDE = 480
#: The share of the set's same/different pairs an embedder must call right at its threshold.
PAIR_ACCURACY_MIN = 0.95


@functools.cache
def photo(path: str) -> np.ndarray:
    """The RGB pixels of a photo of the set, at most MAX_SIDE large."""
    return decode_image(Path(path).read_bytes(), path, MAX_SIDE).pixels


@pytest.fixture(scope="module")
def fr_set() -> Path:
    return require_set("face_recognition")


#: dlib's CNN detector takes seconds a photo on a CPU.
SLOW_DETECTORS = {"dlib-cnn"}


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_DETECTORS else [])
        for name in available("detector")
    ],
)
def detector(request: pytest.FixtureRequest) -> Detector:
    found: Detector = checked_instance("detector", resolve_class("detector", request.param)())
    assert found.name == request.param
    return found


#: Two runtimes of one model give the same normalised vectors within this (float rounding).
SAME_MODEL_TOLERANCE = 1e-4


def registered_embedder(name: str) -> Embedder:
    """The embedder a pipeline naming `name` uses (given the session's model cache)."""
    pipeline = FacePipeline(PipelineSettings(embedder=name))
    found: Embedder = checked_instance("embedder", pipeline.embedder)
    return found


@pytest.fixture(scope="module", params=available("embedder"))
def embedder(request: pytest.FixtureRequest) -> Embedder:
    found = registered_embedder(request.param)
    # The name is the model: a registry name of its own (the model's default runtime),
    # whose embedder has that name too.
    assert found.name in available("embedder"), f"{request.param}: model {found.name!r}"
    assert resolve_class("embedder", found.name).name == found.name
    return found


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def single_face_photos(fr_set: Path) -> list[str]:
    multi = {str(fr_set / row["path"]) for row in rows(fr_set / "multi_face.csv")}
    return [row.path for row in read_labels(fr_set) if row.path not in multi]


# -- Detector -------------------------------------------------------------------------------------
def test_detector_finds_the_one_face_of_portraits(detector: Detector, fr_set: Path) -> None:
    for path in single_face_photos(fr_set)[::8][:3]:
        pixels = photo(path)
        found = detector.detect(pixels, 1)
        assert len(found) == 1, f"{path}: {len(found)} faces"
        box, height, width = found[0].box, *pixels.shape[:2]
        assert box.area > 0.005 * width * height, f"{path}: a face box of {box}"
        assert -box.width // 4 <= box.left < box.right <= width + box.width // 4
        assert -box.height // 4 <= box.top < box.bottom <= height + box.height // 4
        assert isinstance(found[0].score, float) and np.isfinite(found[0].score)


def test_detector_finds_every_face_of_a_group(detector: Detector, fr_set: Path) -> None:
    for row in rows(fr_set / "multi_face.csv"):
        people = row["persons"].split(";")
        found = detector.detect(photo(str(fr_set / row["path"])), 1)
        assert len(found) >= len(people), f"{row['path']}: {len(found)} faces for {people}"
        centres = {(d.box.left + d.box.right, d.box.top + d.box.bottom) for d in found}
        assert len(centres) == len(found)  # one box per face, not the same face twice


def test_detector_finds_nothing_where_there_is_no_face(detector: Detector) -> None:
    rng = np.random.default_rng(0)
    for blank in (np.full((200, 300, 3), 128, np.uint8), rng.integers(0, 256, (240, 320, 3))):
        assert detector.detect(blank.astype(np.uint8), 1) == []


def test_detector_is_deterministic_and_leaves_the_image_alone(
    detector: Detector, fr_set: Path
) -> None:
    pixels = photo(single_face_photos(fr_set)[0])
    before = pixels.copy()
    assert detector.detect(pixels, 0) == detector.detect(pixels, 0)
    assert np.array_equal(pixels, before)


def test_upsampling_finds_small_faces_too(detector: Detector, fr_set: Path) -> None:
    pixels = photo(str(fr_set / "images/obama/obama.jpg"))[::3, ::3].copy()
    assert len(detector.detect(pixels, 1)) >= len(detector.detect(pixels, 0))


# -- Embedder -------------------------------------------------------------------------------------
@functools.cache
def face_box(path: str) -> Box:
    """The largest face HOG finds in a photo (the embedder is tested, not the detector)."""
    found = HogDetector().detect(photo(path), 1)
    assert found, f"no face found in {path}"
    return max((d.box for d in found), key=lambda box: box.area)


def embeddings(embedder: Embedder, paths: set[str]) -> dict[str, np.ndarray]:
    """Each photo's largest face, embedded once."""
    found = {}
    for path in sorted(paths):
        vectors, _ = embedder.embed(photo(path), [face_box(path)], 0)
        found[path] = distances.prepare(vectors)[0]
    return found


def test_embedder_shapes_and_landmarks(embedder: Embedder, fr_set: Path) -> None:
    path = str(fr_set / "images/multi/obama_and_biden.jpg")
    pixels = photo(path)
    boxes = [d.box for d in HogDetector().detect(pixels, 1)]
    vectors, landmarks = embedder.embed(pixels, boxes, 0)
    assert vectors.shape == (len(boxes), embedder.dimension) and vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors)) and np.all(np.linalg.norm(vectors, axis=1) > 0)
    assert len(landmarks) == len(boxes)
    for box, marks in zip(boxes, landmarks, strict=True):
        assert marks and all(
            box.left - box.width <= x <= box.right + box.width
            and box.top - box.height <= y <= box.bottom + box.height
            for x, y in marks
        ), f"landmarks {marks} far from their face {box}"


def test_embedder_of_no_boxes_is_empty(embedder: Embedder, fr_set: Path) -> None:
    vectors, landmarks = embedder.embed(photo(single_face_photos(fr_set)[0]), [], 0)
    assert vectors.shape == (0, embedder.dimension) and landmarks == []


def test_embedder_keeps_the_boxes_order_and_is_deterministic(
    embedder: Embedder, fr_set: Path
) -> None:
    pixels = photo(str(fr_set / "images/multi/obama_and_biden.jpg"))
    boxes = [d.box for d in HogDetector().detect(pixels, 1)][:2]
    assert len(boxes) == 2
    forward, _ = embedder.embed(pixels, boxes, 0)
    backward, _ = embedder.embed(pixels, boxes[::-1], 0)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    np.testing.assert_allclose(forward, embedder.embed(pixels, boxes, 0)[0], atol=1e-6)


def test_embedder_tells_people_apart_at_its_threshold(embedder: Embedder, fr_set: Path) -> None:
    """Same-person pairs within the model's match threshold, different people beyond it, for
    at least PAIR_ACCURACY_MIN of the set's labelled pairs (both kinds present)."""
    pairs = rows(fr_set / "pairs.csv")
    assert {row["same"] for row in pairs} == {"0", "1"}
    paths = [(str(fr_set / row["path_a"]), str(fr_set / row["path_b"])) for row in pairs]
    vectors = embeddings(embedder, {path for pair in paths for path in pair})
    match_threshold = calibration_for(embedder.name).thresholds.match
    right = 0
    for row, (path_a, path_b) in zip(pairs, paths, strict=True):
        a, b = vectors[path_a], vectors[path_b]
        same = float(np.linalg.norm(a - b)) <= match_threshold
        right += same == (row["same"] == "1")
    assert right / len(pairs) >= PAIR_ACCURACY_MIN, f"{right} of {len(pairs)} pairs right"


def test_runtimes_of_one_model_give_its_vectors(fr_set: Path) -> None:
    """Every face HOG finds in every photo of the set, embedded by each registry name of one
    model: the same landmarks, and normalised vectors within SAME_MODEL_TOLERANCE."""
    models: dict[str, list[Embedder]] = {}
    for name in available("embedder"):
        found = registered_embedder(name)
        models.setdefault(found.name, []).append(found)
    assert len(models["dlib-resnet-v1"]) == 2  # ONNX Runtime and dlib
    paths = [row.path for row in read_labels(fr_set)]
    for model, runtimes in models.items():
        reference, reference_marks = every_face(runtimes[0], paths)
        assert len(reference) >= len(paths), f"{model}: {len(reference)} faces"
        for runtime in runtimes[1:]:
            vectors, marks = every_face(runtime, paths)
            assert marks == reference_marks, f"{model}: {type(runtime).__name__}'s landmarks"
            difference = float(np.abs(vectors - reference).max())
            assert difference <= SAME_MODEL_TOLERANCE, (
                f"{model}: {type(runtime).__name__} differs by {difference:.3g}"
            )


def every_face(
    embedder: Embedder, paths: list[str]
) -> tuple[np.ndarray, list[tuple[tuple[int, int], ...]]]:
    """The normalised vectors and the landmarks of every face HOG finds in the photos."""
    vectors, marks = [], []
    for path in paths:
        pixels = photo(path)
        found, found_marks = embedder.embed(
            pixels, [d.box for d in HogDetector().detect(pixels, 1)], 0
        )
        vectors.append(distances.prepare(found))
        marks += found_marks
    return np.concatenate(vectors), marks
