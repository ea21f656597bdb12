"""Model cards: an ONNX embedder the operator brings, checked and recorded by `models add`,
listed with its licence, refused when its file changed, and run by a catalogue's pipeline.

The model is built here with the `onnx` package (a fixed random projection of the pooled
aligned face: small, and an ONNX file like any other); it is no face model, so the test of
the whole path searches with a photo that is itself indexed (distance 0).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from iddetective.catalogue import Catalogue
from iddetective.cli import main
from iddetective.errors import UsageError
from iddetective.faces.model_cards import ARCFACE_112, ModelCard, ModelCardError, file_sha256
from iddetective.faces.onnx_embedder import ModelFileChanged, OnnxEmbedder, similarity_transform
from iddetective.faces.pipeline import FacePipeline, PipelineSettings

from support.facesets import require_set

LICENCE = "MIT (test model written by the test)"


def tiny_model(
    path: Path,
    *,
    size: int = 112,
    dimension: int = 16,
    layout: str = "nchw",
    batch: str | int = "N",
) -> Path:
    """An ONNX embedder: N x 3 x size x size float (or N x size x size x 3) -> N x dimension,
    average-pooled 8 x 8, flattened, multiplied by a fixed random matrix."""
    from onnx import TensorProto, helper, numpy_helper, save

    pooled = size // 8
    weights = np.random.default_rng(17).standard_normal((3 * pooled * pooled, dimension))
    shape: list[str | int] = [batch, 3, size, size] if layout == "nchw" else [batch, size, size, 3]
    nodes = []
    current = "image"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", ["image"], ["planar"], perm=[0, 3, 1, 2]))
        current = "planar"
    nodes += [
        helper.make_node("AveragePool", [current], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dimension])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, list(args))


def add(model: Path, data: Path, *extra: str, name: str = "tiny") -> Result:
    return run(
        "models", "add", str(model), "--name", name, "--licence", LICENCE,
        "--source", "written by tests/test_model_cards.py", "--data", str(data), *extra,
    )  # fmt: skip


def card_of(data: Path, name: str = "tiny") -> ModelCard:
    with Catalogue(data) as catalogue:
        (card,) = [c for c in catalogue.model_cards() if c.name == name]
    return card


def test_models_add_records_the_file_and_how_faces_are_fed(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "tiny.onnx")
    result = add(model, tmp_path / "data", "--mean", "127.5", "--std", "128", "--colour", "bgr")
    assert result.exit_code == 0, result.output
    card = card_of(tmp_path / "data")
    assert card.sha256 == file_sha256(model) and card.path == str(model.resolve())
    assert (card.width, card.height, card.dimension, card.layout) == (112, 112, 16, "nchw")
    assert (card.colour, card.mean, card.std) == ("bgr", (127.5,) * 3, (128.0,) * 3)
    assert (card.licence, card.alignment, card.added_by) == (LICENCE, "arcface-112", "cli")
    assert card.sha256 in result.stdout
    assert ModelCard.from_json(json.loads(json.dumps(card.to_json()))) == card


def test_models_list_shows_the_licence_and_whether_the_file_is_intact(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "tiny.onnx")
    assert add(model, tmp_path / "data").exit_code == 0
    listed = run("models", "list", "--data", str(tmp_path / "data"))
    assert listed.exit_code == 0, listed.output
    assert LICENCE in listed.stdout and "16-d" in listed.stdout and "(intact)" in listed.stdout
    assert file_sha256(model)[:12] in listed.stdout
    model.write_bytes(model.read_bytes() + b"\0")
    assert "(changed)" in run("models", "list", "--data", str(tmp_path / "data")).stdout
    model.unlink()
    assert "(missing)" in run("models", "list", "--data", str(tmp_path / "data")).stdout


def test_a_changed_model_file_is_refused_at_load_naming_both_hashes(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "tiny.onnx")
    assert add(model, tmp_path / "data").exit_code == 0
    card = card_of(tmp_path / "data")
    tiny_model(model, dimension=16, layout="nhwc")  # another graph in its place
    actual = file_sha256(model)
    with pytest.raises(ModelFileChanged) as refused:
        OnnxEmbedder(card).embed_chips(np.zeros((1, 112, 112, 3), np.uint8))
    assert card.sha256 in str(refused.value) and actual in str(refused.value)
    assert str(model.resolve()) in str(refused.value)


def test_a_model_with_an_intact_file_embeds_aligned_chips(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "tiny.onnx", layout="nhwc")
    assert add(model, tmp_path / "data", "--layout", "nhwc").exit_code == 0
    embedder = OnnxEmbedder(card_of(tmp_path / "data"))
    chips = np.random.default_rng(1).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    vectors = embedder.embed_chips(chips)
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32
    assert np.allclose(embedder.embed_chips(chips[1:2]), vectors[1:2], atol=1e-5)


def test_a_model_exported_for_one_face_at_a_time_embeds_several(tmp_path: Path) -> None:
    batched = tiny_model(tmp_path / "batched.onnx")
    single = tiny_model(tmp_path / "single.onnx", batch=1)  # many published graphs are so
    assert add(batched, tmp_path / "data", name="batched").exit_code == 0
    assert add(single, tmp_path / "data", name="single").exit_code == 0
    chips = np.random.default_rng(2).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    want = OnnxEmbedder(card_of(tmp_path / "data", "batched")).embed_chips(chips)
    got = OnnxEmbedder(card_of(tmp_path / "data", "single")).embed_chips(chips)
    assert got.shape == (3, 16) and np.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    ("make", "options", "refusal"),
    [
        (lambda p: p.write_bytes(b"not a model at all"), (), "is not an ONNX model"),
        (lambda p: tiny_model(p, size=64), (), "has shape"),
        (lambda p: tiny_model(p), ("--layout", "nhwc"), "has shape"),
        (lambda p: tiny_model(p), ("--dimension", "32"), "not the 32 declared"),
        (lambda p: tiny_model(p), ("--input-size", "112"), "WIDTHxHEIGHT"),
        (lambda p: tiny_model(p), ("--std", "0"), "field 'std' must be positive"),
    ],
)
def test_a_foreign_file_or_misdeclared_model_is_refused_at_add(
    tmp_path: Path, make: object, options: tuple[str, ...], refusal: str
) -> None:
    model = tmp_path / "model.onnx"
    make(model)  # type: ignore[operator]
    result = add(model, tmp_path / "data", *options)
    assert result.exit_code == 2, result.output
    assert refusal in result.output
    with Catalogue(tmp_path / "data", create=True) as catalogue:
        assert catalogue.model_cards() == []


def test_a_missing_file_and_a_taken_name_are_refused(tmp_path: Path) -> None:
    assert "no such file" in add(tmp_path / "nowhere.onnx", tmp_path / "data").output
    model = tiny_model(tmp_path / "tiny.onnx")
    assert add(model, tmp_path / "data").exit_code == 0
    again = add(model, tmp_path / "data")
    assert again.exit_code == 2 and "already in the catalogue" in again.output
    removed = run("models", "remove", "tiny", "--data", str(tmp_path / "data"))
    assert removed.exit_code == 0 and model.exists(), removed.output
    assert "no model cards" in run("models", "list", "--data", str(tmp_path / "data")).stdout


@pytest.mark.parametrize(
    ("field", "value"),
    [("colour", "grey"), ("layout", "chw"), ("sha256", "abc"), ("dimension", 0), ("mean", [1])],
)
def test_a_bad_card_is_refused_naming_the_field(field: str, value: object) -> None:
    good = ModelCard(name="m", path="/m.onnx", sha256="0" * 64, width=112, height=112, dimension=8)
    data = good.to_json()
    (data["input"] if field == "layout" else data)[field] = value
    with pytest.raises(ModelCardError, match=f"'{field}'"):
        ModelCard.from_json(data)
    assert isinstance(ModelCardError("x"), UsageError)


def test_the_similarity_transform_recovers_a_rotation_scale_and_shift() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -2.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = np.asarray(ARCFACE_112)
    target = source @ (scale * rotation).T + shift
    matrix = similarity_transform(source, target)
    assert np.allclose(matrix[:, :2], scale * rotation) and np.allclose(matrix[:, 2], shift)


def test_card_embedder_needs_the_catalogue_card(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="names a model card"):
        FacePipeline(PipelineSettings(embedder="card:tiny"))
    with pytest.raises(UsageError, match="does not have"):
        Catalogue(tmp_path / "data", create=True, pipeline=PipelineSettings(embedder="card:x"))


@pytest.mark.faces
def test_a_card_embedder_gives_a_vector_and_5_points_per_face(tmp_path: Path) -> None:
    from iddetective.faces.imaging import decode_image

    photos = require_set("face_recognition") / "images"
    assert add(tiny_model(tmp_path / "tiny.onnx"), tmp_path / "data").exit_code == 0
    settings = PipelineSettings(embedder="card:tiny", model_cache=None)
    with Catalogue(tmp_path / "data", pipeline=settings) as catalogue:
        pipeline = FacePipeline(catalogue.pipeline_with("card:tiny"))
    assert (pipeline.model, pipeline.embedder.dimension) == ("tiny", 16)
    path = photos / "multi" / sorted(p.name for p in (photos / "multi").iterdir())[0]
    image = decode_image(path.read_bytes(), path.name, 1600)
    boxes, _ = pipeline.detect(image.pixels)
    vectors, landmarks = pipeline.embedder.embed(image.pixels, boxes, 0)
    assert len(boxes) > 1 and vectors.shape == (len(boxes), 16) and vectors.dtype == np.float32
    assert all(len(points) == 5 for points in landmarks)
    for box, points in zip(boxes, landmarks, strict=True):  # the eyes are inside the face
        assert all(box.left <= x <= box.right and box.top <= y <= box.bottom for x, y in points[:2])
    empty, none = pipeline.embedder.embed(image.pixels, [], 0)
    assert empty.shape == (0, 16) and none == []


@pytest.mark.faces
def test_a_catalogue_indexes_and_searches_with_a_card_model(tmp_path: Path) -> None:
    photos = require_set("face_recognition") / "images"
    data = tmp_path / "data"
    assert add(tiny_model(tmp_path / "tiny.onnx"), data).exit_code == 0
    env = {"IDDETECTIVE_EMBEDDER": "card:tiny"}
    indexed = run(
        "index", str(photos), "--people-from-folders", "--data", str(data), "--workers", "2",
        env=env,
    )  # fmt: skip
    assert indexed.exit_code == 0, indexed.output
    assert "indexed 18 photos" in indexed.output
    with Catalogue(data) as catalogue:
        assert [(m.name, m.dimension) for m in catalogue.store.models()] == [("tiny", 16)]
    query = str(photos / "obama" / "obama2.jpg")
    refused = run("search", query, "--data", str(data), env=env)
    assert refused.exit_code != 0 and "iddetective calibrate" in refused.output
    found = run("search", query, "--data", str(data), "--threshold", "0.001", "--json", env=env)
    assert found.exit_code == 0, found.output
    answer = json.loads(found.stdout)
    names = [m["person"]["name"] for f in answer["faces"] for m in f["matches"] if m["person"]]
    assert "obama" in names
    removed = run("models", "remove", "tiny", "--data", str(data))
    assert removed.exit_code != 0 and "stored faces" in removed.output


def test_a_card_travels_to_fleet_workers_with_each_batch(tmp_path: Path) -> None:
    from iddetective.ingest.fleet.enqueue import sent_settings
    from iddetective.ingest.fleet.tasks import _pipeline_settings

    model = tiny_model(tmp_path / "tiny.onnx")
    assert add(model, tmp_path / "data").exit_code == 0
    settings = PipelineSettings(embedder="card:tiny", model_cache=None)
    with Catalogue(tmp_path / "data", pipeline=settings) as catalogue:
        attached = catalogue.pipeline
    assert attached.card == card_of(tmp_path / "data")
    received = _pipeline_settings(json.loads(json.dumps(sent_settings(attached))))
    assert received == replace(attached, model_cache=received.model_cache)
    plain = json.loads(json.dumps(sent_settings(PipelineSettings())))
    assert _pipeline_settings(plain).card is None
