"""dlib's ResNet read from its weight file (faces/dlib_format.py), written as an ONNX graph
and run on ONNX Runtime (faces/onnx_resnet.py): damaged and foreign files refused, the
graph deterministic and cached (built once however many processes start together), the
vectors dlib's on real faces; the default embedder, and its fallback to dlib's runtime."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import face_recognition_models as models
import numpy as np
import onnxruntime
import pytest
from click.testing import CliRunner

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.entities import Box
from iddetective.faces import onnx_resnet
from iddetective.faces.dlib_format import (
    AddPrev,
    Affine,
    AvgPool,
    Conv,
    DlibFormatError,
    DlibNetwork,
    FullyConnected,
    MaxPool,
    Relu,
    Skip,
    Tag,
    parse_network,
)
from iddetective.faces.imaging import decode_image
from iddetective.faces.onnx_resnet import (
    DLIB_RUNTIME,
    OnnxMismatch,
    OnnxResnetEmbedder,
    load_or_build,
)
from iddetective.faces.pipeline import (
    DlibResnetEmbedder,
    HogDetector,
    PipelineSettings,
    pipeline_for,
    prepared,
)

from support.facesets import read_labels, require_set

WEIGHTS = Path(models.face_recognition_model_location())
#: Real faces compared with dlib: at least this many.
MIN_FACES = 20
#: Photos are decoded at most this large (HOG's time grows with the pixels; faces stay big).
MAX_SIDE = 640


@functools.cache
def weight_bytes() -> bytes:
    return WEIGHTS.read_bytes()


@functools.cache
def network() -> DlibNetwork:
    return parse_network(weight_bytes(), str(WEIGHTS))


def refusal(data: bytes) -> DlibFormatError:
    with pytest.raises(DlibFormatError) as caught:
        parse_network(data, "model.dat")
    return caught.value


# -- reading dlib's file ------------------------------------------------------------------------
def test_the_installed_weights_read_as_anet_type() -> None:
    net = network()
    kinds = [type(layer) for layer in net.layers]
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    assert counts == {
        Conv: 29,
        Affine: 29,
        Relu: 29,
        Tag: 18,
        AddPrev: 14,
        AvgPool: 5,
        Skip: 4,
        MaxPool: 1,
        FullyConnected: 1,
    }
    assert net.input.size == (150, 150) and net.input.scale == 1 / 256
    np.testing.assert_allclose(net.input.mean_rgb, (122.782, 117.001, 104.298), rtol=1e-6)
    first = net.layers[0]
    assert isinstance(first, Conv) and first.filters.shape == (32, 3, 7, 7)
    assert first.stride == (2, 2) and first.padding == (0, 0)
    last = net.layers[-1]
    assert isinstance(last, FullyConnected) and last.weights.shape == (256, 128)
    assert (net.margin, net.distance_threshold) == pytest.approx((0.04, 0.6))
    assert net.parameters == 5_614_592  # dlib's print(net) counts the same


@pytest.mark.parametrize("keep", [0, 1, 5, 20, 0x120 + 30, 0x2000, 10_000_000, -1])
def test_a_truncated_file_is_refused_where_it_ends(keep: int) -> None:
    """Cut in the loss layer, the nesting, the input layer, a tensor, the last byte."""
    data = weight_bytes()
    error = refusal(data[: keep if keep >= 0 else len(data) + keep])
    assert "truncated" in str(error)
    assert error.offset <= len(data)
    assert "model.dat" in str(error) and f"at byte {error.offset}" in str(error)


@pytest.mark.parametrize(
    "other",
    [
        "pose_predictor_five_point_model_location",
        "pose_predictor_model_location",
        "cnn_face_detector_model_location",
    ],
)
def test_other_dlib_files_are_refused(other: str) -> None:
    data = Path(getattr(models, other)()).read_bytes()
    error = refusal(data)
    assert error.offset < 64, error  # refused at the start, not after reading megabytes


def test_the_cnn_detector_is_refused_naming_its_loss_layer() -> None:
    error = refusal(Path(models.cnn_face_detector_model_location()).read_bytes())
    assert "loss_mmod" in str(error) and "loss layer" in error.layer


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, b"PK\x03\x04" + bytes(range(256)) * 4])
def test_foreign_bytes_are_refused(data: bytes) -> None:
    refusal(data)


def test_an_unknown_layer_version_is_refused_naming_the_layer() -> None:
    data = bytearray(weight_bytes())
    at = data.index(b"con_4", len(data) // 2)
    data[at : at + 5] = b"con_9"
    error = refusal(bytes(data))
    assert "'con_9'" in str(error) and "con " in error.layer
    assert error.offset == at - 2  # the string's length: control byte 0x01, then 5


def test_a_wrong_template_parameter_is_refused() -> None:
    data = bytearray(weight_bytes())
    at = data.index(b"max_pool_2") + len(b"max_pool_2")
    assert data[at : at + 2] == b"\x01\x03"  # the window's rows, 3
    data[at + 1] = 5
    error = refusal(bytes(data))
    assert "rows 5 (expected 3)" in str(error) and "max_pool 3x3" in error.layer


def test_a_damaged_flag_and_trailing_bytes_are_refused() -> None:
    data = bytearray(weight_bytes())
    at = data.index(b"relu_") + len(b"relu_")
    data[at] = ord("7")
    assert "not '0' or '1'" in str(refusal(bytes(data)))
    assert "2 bytes follow the network" in str(refusal(weight_bytes() + b"\x00\x00"))


def test_non_finite_parameters_are_refused() -> None:
    data = bytearray(weight_bytes())
    at = data.index(b"affine_") + len(b"affine_")
    # The first affine's parameters: tensor version 2, shape (64, 1, 1, 1), then floats.
    assert data[at : at + 10] == b"\x01\x02\x01\x40\x01\x01\x01\x01\x01\x01"
    data[at + 14 : at + 18] = np.float32(np.nan).tobytes()
    assert "not all finite" in str(refusal(bytes(data)))


# -- the graph and its cache ---------------------------------------------------------------------
def test_the_graph_is_deterministic() -> None:
    assert onnx_resnet.build_graph(network()) == onnx_resnet.build_graph(network())


def test_the_checked_graph_is_cached_and_not_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_or_build(WEIGHTS, tmp_path)
    assert first.built and first.path is not None and first.path.exists()
    assert first.path.name.startswith(first.weights_sha256) and first.max_difference <= 1e-4

    def no_rebuild(*args: object) -> bytes:
        raise AssertionError("rebuilt although cached")

    with monkeypatch.context() as patched:
        patched.setattr(onnx_resnet, "build_graph", no_rebuild)
        second = load_or_build(WEIGHTS, tmp_path)
    assert not second.built and second.onnx == first.onnx
    assert second.max_difference == first.max_difference

    # A record from another ONNX Runtime is checked again; a damaged graph is not trusted:
    # both are built again (and the same).
    record_path = first.path.with_suffix(".json")
    record = json.loads(record_path.read_text())
    assert record["onnxruntime_version"] == onnxruntime.__version__
    record_path.write_text(json.dumps({**record, "onnxruntime_version": "0.1"}))
    assert load_or_build(WEIGHTS, tmp_path).built
    assert json.loads(record_path.read_text()) == record
    damaged = bytearray(first.path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    first.path.write_bytes(bytes(damaged))
    third = load_or_build(WEIGHTS, tmp_path)
    assert third.built and first.path.read_bytes() == first.onnx


def test_a_graph_that_differs_from_dlib_is_refused_and_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer changed slightly (one channel's scale off by 1 %): the check finds it."""
    real_build = onnx_resnet.build_graph

    def slightly_wrong(net: DlibNetwork, name: str = "x") -> bytes:
        layers = list(net.layers)
        index = next(i for i, layer in enumerate(layers) if isinstance(layer, Affine))
        affine = layers[index]
        assert isinstance(affine, Affine)
        gamma = affine.gamma.copy()
        gamma[0] *= 1.01
        layers[index] = Affine(gamma, affine.beta)
        return real_build(DlibNetwork(net.input, tuple(layers), net.margin, 0.6))

    monkeypatch.setattr(onnx_resnet, "build_graph", slightly_wrong)
    with pytest.raises(OnnxMismatch, match="differs from dlib by"):
        load_or_build(WEIGHTS, tmp_path)
    # Nothing cached: only the builders' lock file is left.
    assert [path.suffix for path in tmp_path.iterdir()] == [".lock"]


def test_the_check_chips_agree_with_dlib(tmp_path: Path) -> None:
    embedder = OnnxResnetEmbedder(cache_dir=tmp_path)
    chips = onnx_resnet.check_chips()
    assert chips.shape == (5, 150, 150, 3) and chips.dtype == np.uint8
    assert embedder.model.max_difference <= onnx_resnet.TOLERANCE
    ours = embedder.embed_chips(chips)
    floats = embedder.embed_chips(chips.astype(np.float32))
    np.testing.assert_array_equal(ours, floats)
    assert ours.shape == (5, 128) and ours.dtype == np.float32


def test_no_faces_give_no_chips_and_no_vectors() -> None:
    embedder = OnnxResnetEmbedder()
    image = np.zeros((80, 60, 3), np.uint8)
    chips, landmarks = embedder.chips(image, [])
    assert chips.shape == (0, 150, 150, 3) and landmarks == []
    vectors, landmarks = embedder.embed(image, [], 0)
    assert vectors.shape == (0, 128) and landmarks == []
    answers = embedder.embed_photos([(image, []), (image, [])])
    assert [(vectors.shape, marks) for vectors, marks in answers] == [((0, 128), [])] * 2
    assert "model" not in vars(embedder)  # nothing was built for no faces


def test_the_embedder_refuses_no_threads() -> None:
    with pytest.raises(ValueError, match="threads"):
        OnnxResnetEmbedder(threads=0)


# -- real faces ------------------------------------------------------------------------------
def normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.faces
def test_real_faces_give_dlibs_vectors(tmp_path: Path) -> None:
    """Every face HOG finds in the face_recognition set and 16 lfw_dev photos: the ONNX
    embedder's landmarks are dlib's, its normalised vectors within 1e-4 of dlib's; all the
    photos embedded in one batch (`embed_photos`) give the same vectors and landmarks."""
    rows = read_labels(require_set("face_recognition")) + read_labels(require_set("lfw_dev"))[:16]
    dlib_embedder, ours = DlibResnetEmbedder(), OnnxResnetEmbedder(cache_dir=tmp_path)
    detector = HogDetector()
    photos: list[tuple[np.ndarray, list[Box]]] = []
    theirs_all, ours_all = [], []
    for row in rows:
        pixels = decode_image(Path(row.path).read_bytes(), row.path, MAX_SIDE).pixels
        boxes = [d.box for d in detector.detect(pixels, 1)]
        photos.append((pixels, boxes))
        theirs, their_marks = dlib_embedder.embed(pixels, boxes, 0)
        vectors, marks = ours.embed(pixels, boxes, 0)
        assert marks == their_marks, row.path
        assert vectors.dtype == np.float32 and vectors.shape == theirs.shape
        theirs_all.append(theirs)
        ours_all.append(vectors)
    theirs, vectors = np.concatenate(theirs_all), np.concatenate(ours_all)
    assert len(vectors) >= MIN_FACES, f"only {len(vectors)} faces found"
    difference = np.abs(normalised(vectors) - normalised(theirs)).max()
    assert difference <= 1e-4, f"max difference {difference:.3g} over {len(vectors)} faces"
    batched = ours.embed_photos(photos)
    assert [len(v) for v, _ in batched] == [len(boxes) for _, boxes in photos]
    np.testing.assert_allclose(np.concatenate([v for v, _ in batched]), vectors, atol=1e-6)
    assert [m for _, marks in batched for m in marks] == [
        m for pixels, boxes in photos for m in ours.embed(pixels, boxes, 0)[1]
    ]


@pytest.mark.faces
def test_jittered_descriptors_stay_near_the_plain_one(tmp_path: Path) -> None:
    folder = require_set("face_recognition")
    pixels = decode_image((folder / "images/obama/obama.jpg").read_bytes(), "obama", MAX_SIDE)
    boxes = [d.box for d in HogDetector().detect(pixels.pixels, 1)]
    embedder = OnnxResnetEmbedder(cache_dir=tmp_path)
    chips, _ = embedder.chips(pixels.pixels, boxes)
    plain = normalised(embedder.embed_chips(chips))
    jittered = embedder.embed_chips(chips, jitters=4)
    assert jittered.shape == plain.shape and jittered.dtype == np.float32
    once = embedder.embed_chips(chips, jitters=1)  # dlib too: 1 jitter is the plain pass
    np.testing.assert_array_equal(once, embedder.embed_chips(chips))
    assert float(np.min(np.sum(normalised(jittered) * plain, axis=1))) > 0.9


# -- the default embedder, its cache, its fallback ------------------------------------------
#: Builds (or reads) the graph in a process of its own and prints whether it built it.
BUILD_IN_ANOTHER_PROCESS = """
import sys
from iddetective.faces.onnx_resnet import OnnxResnetEmbedder, load_or_build
print(load_or_build(OnnxResnetEmbedder().weights, sys.argv[1]).built)
"""
#: The start of the one line a process falls back to dlib's runtime with.
FALLBACK_NOTICE = "dlib's ResNet runs on dlib in this process, not on ONNX Runtime"


@pytest.fixture()
def notices(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The library's notices of this test (each is said once per process: forgotten here)."""
    onnx_resnet._say_once.cache_clear()
    caplog.set_level(logging.WARNING, logger="iddetective")
    yield caplog
    onnx_resnet._say_once.cache_clear()


@pytest.fixture()
def mismatching(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check against dlib fails here: no difference at all is allowed (float rounding
    is 2.6e-7), so no graph is built, checked or read from a cache in this process."""
    monkeypatch.setattr(onnx_resnet, "TOLERANCE", 0.0)


def fallback_notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(FALLBACK_NOTICE)]


def test_the_default_embedder_is_dlibs_resnet_on_onnx_runtime(model_cache: Path) -> None:
    settings = PipelineSettings()
    embedder = pipeline_for(settings).embedder
    assert isinstance(embedder, OnnxResnetEmbedder)
    assert embedder.name == pipeline_for(settings).model == "dlib-resnet-v1"
    assert settings.model_cache == embedder.cache_dir == model_cache  # conftest's folder
    assert embedder.runtime == "onnxruntime"
    assert PipelineSettings().embedder == "dlib-resnet-v1"
    # dlib's own runtime of the same model: the same name.
    native = pipeline_for(PipelineSettings(embedder=DLIB_RUNTIME)).embedder
    assert isinstance(native, DlibResnetEmbedder) and native.name == "dlib-resnet-v1"
    # Where the cache is changes no vector: it is not part of the settings' repr (the key
    # evaluation caches embeddings under).
    assert repr(settings) == repr(PipelineSettings(model_cache=None))


def test_processes_starting_together_build_the_graph_once(tmp_path: Path) -> None:
    """Two processes on an empty cache: one builds and checks, the other waits for it and
    reads the graph it cached; a third process reads it too."""
    cache = tmp_path / "models"

    def start() -> subprocess.Popen[str]:
        command = [sys.executable, "-c", BUILD_IN_ANOTHER_PROCESS, str(cache)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ.copy())

    processes = [start(), start()]
    answers = sorted(process.communicate(timeout=120)[0].strip() for process in processes)
    assert [p.returncode for p in processes] == [0, 0]
    assert answers == ["False", "True"]
    assert start().communicate(timeout=120)[0].strip() == "False"
    assert sorted(path.suffix for path in cache.iterdir()) == [".json", ".lock", ".onnx"]


def test_an_unwritable_cache_is_said_once_and_the_graph_used_uncached(
    tmp_path: Path, notices: pytest.LogCaptureFixture
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    for _ in range(2):
        built = load_or_build(WEIGHTS, not_a_folder / "models")
        assert built.built and built.path is None and built.max_difference <= 1e-4
    said = [r.getMessage() for r in notices.records]
    assert len(said) == 1 and said[0].startswith("cannot keep the checked ONNX graph in"), said


def test_a_failed_check_falls_back_to_dlib_with_one_notice(
    tmp_path: Path, mismatching: None, notices: pytest.LogCaptureFixture
) -> None:
    """The same model, computed by dlib: dlib's own vectors and landmarks, one line saying
    why, nothing cached; `prepared` names dlib's runtime for worker processes."""
    image = np.full((120, 100, 3), 128, np.uint8)
    image[30:90, 25:75] = np.arange(50, dtype=np.uint8)[None, :, None] * 4
    boxes = [Box(20, 25, 80, 95)]
    embedder = OnnxResnetEmbedder(cache_dir=tmp_path)
    vectors, marks = embedder.embed(image, boxes, 0)
    theirs, their_marks = DlibResnetEmbedder().embed(image, boxes, 0)
    np.testing.assert_array_equal(vectors, theirs)
    assert marks == their_marks and embedder.runtime == "dlib"
    assert embedder.name == "dlib-resnet-v1"
    chips, _ = embedder.chips(image, boxes)
    np.testing.assert_array_equal(embedder.embed_chips(chips), theirs)
    assert [len(v) for v, _ in embedder.embed_photos([(image, boxes), (image, [])])] == [1, 0]
    settings = PipelineSettings(model_cache=tmp_path)
    assert prepared(settings) == PipelineSettings(model_cache=tmp_path, embedder=DLIB_RUNTIME)
    said = fallback_notices(notices)
    assert len(said) == 1 and len(notices.records) == 1, notices.records
    assert "differs from dlib by" in said[0] and "\n" not in said[0]
    assert not list(tmp_path.glob("*.onnx"))
    with pytest.raises(OnnxMismatch):
        OnnxResnetEmbedder(cache_dir=tmp_path, fallback=False).embed(image, boxes, 0)


def test_a_graph_that_cannot_be_built_falls_back_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, notices: pytest.LogCaptureFixture
) -> None:
    def unavailable(*args: object) -> bytes:
        raise ImportError("No module named 'onnx'\n(a line the notice does not keep)")

    monkeypatch.setattr(onnx_resnet, "build_graph", unavailable)
    embedder = OnnxResnetEmbedder(cache_dir=tmp_path)
    assert embedder.prepare() == DLIB_RUNTIME and embedder.runtime == "dlib"
    (said,) = fallback_notices(notices)
    assert "ImportError: No module named 'onnx' (a line" in said


@pytest.mark.faces
def test_indexing_falls_back_with_one_warning_and_the_same_model(
    tmp_path: Path,
    mismatching: None,
    notices: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """`index --workers 2` where the graph fails its check: one warning, said by the run
    (its workers are given dlib's runtime and say nothing), the photos indexed and their
    embeddings stored as `dlib-resnet-v1`."""
    folder = require_set("face_recognition") / "images" / "obama"
    data = tmp_path / "data"
    result = CliRunner().invoke(main, ["index", str(folder), "--data", str(data), "--workers", "2"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and FALLBACK_NOTICE in warnings[0], result.stderr
    assert FALLBACK_NOTICE not in capfd.readouterr().err  # nothing from the workers
    with Catalogue(data) as catalogue:
        assert catalogue.model == "dlib-resnet-v1"
        stored = sum(len(ids) for ids, _ in catalogue.store.embeddings("dlib-resnet-v1", 100))
    assert stored == len(list(folder.iterdir())) > 1


@pytest.mark.faces
def test_a_pool_of_workers_reads_the_graph_its_parent_cached(tmp_path: Path) -> None:
    """An index run with 2 workers on a cache holding the checked graph: neither the run
    nor its workers build it again (the cached file is the same file afterwards)."""
    settings = PipelineSettings(model_cache=tmp_path / "models")
    assert prepared(settings) == settings
    (graph,) = (tmp_path / "models").glob("*.onnx")
    before = graph.stat()
    photos = sorted((require_set("face_recognition") / "images").rglob("*.jpg"))[:4]
    with Catalogue(tmp_path / "data", create=True, pipeline=settings) as catalogue:
        report = catalogue.index([str(p) for p in photos], workers=2)
    assert report.faces >= 4 and not report.failed
    after = graph.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
