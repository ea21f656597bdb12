"""The search JSON shape is defined three times: `search.to_json` writes it, the shipped JSON
Schema (schemas/search-v1.json) publishes it, the pydantic `SearchResponse` (web/models.py)
documents the HTTP API's answer. They must agree field by field: names, types, nullability
and constants, at every level; and what to_json writes is valid under both."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from iddetective.entities import Box, PersonRef, PhotoRef
from iddetective.matching.calibration import Calibration, calibration_for
from iddetective.matching.search import FaceResult, PersonMatch, PhotoHit, SearchResult, to_json
from iddetective.schemas import search_schema
from iddetective.web.models import SearchResponse

Shape = Any


def shape(node: dict[str, Any], root: dict[str, Any]) -> Shape:
    """A JSON Schema node reduced to what the documents must agree on, $refs resolved:
    an object's properties (with whether each is required), an array's items, a nullable
    type, a constant or an enumeration, a scalar type. Descriptions and bounds are left out."""
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return shape(target, root)
    variants = node.get("anyOf") or node.get("oneOf")
    if variants:
        return ("one of", sorted((shape(v, root) for v in variants), key=repr))
    if "const" in node:
        return ("const", node["const"])
    if "enum" in node:
        return ("enum", tuple(sorted(node["enum"])))
    kind = node.get("type")
    if isinstance(kind, list):
        return ("one of", sorted((shape({**node, "type": k}, root) for k in kind), key=repr))
    if kind == "object":
        required = set(node.get("required", ()))
        properties = node.get("properties", {})
        return {name: shape(properties[name], root) for name in sorted(properties)}, required
    if kind == "array":
        return ("array", shape(node["items"], root))
    return kind


def differences(shipped: Shape, model: Shape, where: str = "$") -> list[str]:
    """Where the two shapes disagree, as JSON paths with what each says. A field the shipped
    schema requires must be required by the model too (the model may require more: fields
    to_json always writes that v1 added as optional)."""
    if isinstance(shipped, tuple) and len(shipped) == 2 and isinstance(shipped[0], dict):
        if not (isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], dict)):
            return [f"{where}: an object in the schema, {model!r} in the model"]
        (fields, required), (model_fields, model_required) = shipped, model
        found = [
            f"{where}.{n}: only in the schema" for n in sorted(set(fields) - set(model_fields))
        ]
        found += [
            f"{where}.{n}: only in the model" for n in sorted(set(model_fields) - set(fields))
        ]
        found += [
            f"{where}.{n}: required by the schema only" for n in sorted(required - model_required)
        ]
        for name in sorted(set(fields) & set(model_fields)):
            found += differences(fields[name], model_fields[name], f"{where}.{name}")
        return found
    if isinstance(shipped, tuple) and isinstance(model, tuple) and shipped[0] == model[0]:
        if shipped[0] == "array":
            return differences(shipped[1], model[1], f"{where}[]")
        if shipped[0] == "one of" and len(shipped[1]) == len(model[1]):
            return [
                problem
                for a, b in zip(shipped[1], model[1], strict=True)
                for problem in differences(a, b, where)
            ]
    if shipped == model or _same_constant(shipped, model):
        return []
    return [f"{where}: {shipped!r} in the schema, {model!r} in the model"]


def _same_constant(a: Shape, b: Shape) -> bool:
    """A one-value enum and a constant of that value say the same (pydantic writes either)."""

    def value(s: Shape) -> Any:
        if isinstance(s, tuple) and s[0] == "const":
            return (s[1],)
        if isinstance(s, tuple) and s[0] == "enum":
            return s[1]
        return None

    return value(a) is not None and value(a) == value(b)


def shipped_shape() -> Shape:
    schema = search_schema()
    return shape(schema, schema)


def model_shape() -> Shape:
    schema = SearchResponse.model_json_schema(by_alias=True, mode="serialization")
    return shape(schema, schema)


def test_the_shipped_schema_and_the_pydantic_model_agree_field_by_field() -> None:
    assert differences(shipped_shape(), model_shape()) == []


def test_the_comparison_sees_a_field_that_differs() -> None:
    """The comparison is not vacuous: a renamed, a retyped and a dropped field are all found."""
    schema = search_schema()
    face = schema["$defs"]["face"]
    changed = {
        **schema,
        "$defs": {
            **schema["$defs"],
            "face": {
                **face,
                "properties": {
                    **{k: v for k, v in face["properties"].items() if k != "verdict"},
                    "score": {"type": "integer"},
                    "confidence": {"type": "number"},
                },
            },
        },
    }
    found = differences(shape(changed, changed), model_shape())
    assert "$.faces[].confidence: only in the schema" in found
    assert "$.faces[].verdict: only in the model" in found
    assert "$.faces[].score: 'integer' in the schema, 'number' in the model" in found


def example(table: Calibration | None = None) -> SearchResult:
    """A result with a named match, the group of unnamed faces, and a face with no match
    (rates from dlib's shipped table unless another `table` is given)."""
    photo = PhotoRef(7, "a" * 64, ("/photos/ann.jpg", "/backup/ann.jpg"), 640, 480)
    hit = PhotoHit(3, photo, Box(10, 20, 110, 140), 0.2512)
    named = PersonMatch(PersonRef("p-1", "Ann"), 0.2512, "match", (hit,))
    unnamed = PersonMatch(None, 0.33, "match", (PhotoHit(4, photo, Box(200, 20, 260, 90), 0.33),))
    far = PersonMatch(PersonRef("p-2", "Bob"), 0.61, "no_match", (hit,))
    faces = (
        FaceResult(Box(5, 6, 105, 126), 1.25, (named, unnamed)),
        FaceResult(Box(300, 40, 360, 110), 0.5, (far,)),
        FaceResult(Box(0, 0, 30, 30), 0.1, ()),
    )
    table = table or calibration_for("dlib-resnet-v1")
    return SearchResult(None, "b" * 64, 640, 480, "dlib-resnet-v1", 0.383, faces, table)


def test_what_to_json_writes_is_valid_under_both_and_nothing_is_lost() -> None:
    document = to_json(example())
    jsonschema.validate(document, search_schema())
    parsed = SearchResponse.model_validate(document)
    assert parsed.model_dump(mode="json", by_alias=True) == document


def test_a_model_nobody_calibrated_gives_no_rates_and_stays_valid() -> None:
    result = example()
    document = to_json(SearchResult(**{**vars(result), "calibration": None}))
    jsonschema.validate(document, search_schema())
    matches = [m for face in document["faces"] for m in face["matches"]]
    assert matches and all("fmr" not in m and "fmr_extrapolated" not in m for m in matches)
    parsed = SearchResponse.model_validate(document)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == document


@pytest.mark.parametrize(
    "where", ["query", "faces.0", "faces.0.matches.0", "faces.0.matches.0.photos.0"]
)
def test_to_json_writes_every_property_the_schema_names_and_no_other(where: str) -> None:
    document: Any = to_json(example())
    node: Any = shipped_shape()
    for part in where.split("."):
        document = document[int(part)] if part.isdigit() else document[part]
        node = node[1] if part.isdigit() else node[0][part]
    assert set(document) == set(node[0])
