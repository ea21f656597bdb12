"""Model cards: what an operator-supplied ONNX embedder is, recorded when it is added.

A card names an ONNX file the operator brings (nothing is downloaded), its SHA-256 (a file
whose bytes changed is refused when loaded: `faces/onnx_embedder.py`), how faces are fed to
it (input size, colour order, normalisation, layout, alignment), the dimension of its output,
and the licence and source the operator gives. Cards are kept in the catalogue
(store/model_cards.py), so every process using it sees the same ones (docs/models.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = [
    "ALIGNMENTS",
    "ARCFACE_112",
    "CARD_PREFIX",
    "ModelCard",
    "ModelCardError",
    "card_name",
    "file_sha256",
    "file_state",
    "inspect_onnx",
    "new_card",
]

#: An embedder spec naming a card of the open catalogue: "card:NAME".
CARD_PREFIX = "card:"
#: The standard 5-point ArcFace template for a 112 x 112 face: eye centres (left, right in
#: the image), nose tip, mouth corners (left, right).
ARCFACE_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
#: Alignments a card may name: the template and the size it is drawn for.
ALIGNMENTS = {"arcface-112": (ARCFACE_112, 112)}
_COLOURS = ("rgb", "bgr")
_LAYOUTS = ("nchw", "nhwc")


class ModelCardError(UsageError):
    """A card, or the file it names, is not usable; the message names the field or file."""


@dataclass(frozen=True)
class ModelCard:
    """An ONNX face embedder the operator brought: where it is, what it was when added, and
    how faces are fed to it (pixel = (x - mean) / std per channel, x in 0..255, in
    `colour` order)."""

    name: str
    path: str
    sha256: str
    width: int
    height: int
    dimension: int
    colour: str = "rgb"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    layout: str = "nchw"
    alignment: str = "arcface-112"
    licence: str = ""
    source: str = ""
    added_at: str = ""
    added_by: str = ""
    kind: str = "embedder"

    def __post_init__(self) -> None:
        _check(self)

    @property
    def template(self) -> tuple[tuple[float, float], ...]:
        """The 5 alignment points in the input's pixels (the template scaled to its size)."""
        points, size = ALIGNMENTS[self.alignment]
        return tuple((x * self.width / size, y * self.height / size) for x, y in points)

    def to_json(self) -> dict[str, Any]:
        """The card as JSON-ready data (`from_json` reads it back)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "path": self.path,
            "sha256": self.sha256,
            "input": {"width": self.width, "height": self.height, "layout": self.layout},
            "colour": self.colour,
            "mean": list(self.mean),
            "std": list(self.std),
            "alignment": self.alignment,
            "dimension": self.dimension,
            "licence": self.licence,
            "source": self.source,
            "added_at": self.added_at,
            "added_by": self.added_by,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "model card") -> ModelCard:
        """The card `data` describes; `ModelCardError` naming the field that is wrong."""
        if not isinstance(data, dict):
            raise ModelCardError(f"{where} is not a JSON object")
        size = data.get("input")
        if not isinstance(size, dict):
            raise ModelCardError(f"{where}: field 'input' must be an object")
        try:
            return cls(
                name=_text(data, "name", where),
                kind=_text(data, "kind", where),
                path=_text(data, "path", where),
                sha256=_text(data, "sha256", where),
                width=_whole(size, "width", where),
                height=_whole(size, "height", where),
                layout=_text(size, "layout", where),
                colour=_text(data, "colour", where),
                mean=_triple(data, "mean", where),
                std=_triple(data, "std", where),
                alignment=_text(data, "alignment", where),
                dimension=_whole(data, "dimension", where),
                licence=_text(data, "licence", where),
                source=_text(data, "source", where),
                added_at=_text(data, "added_at", where),
                added_by=_text(data, "added_by", where),
            )
        except ModelCardError as error:
            message = str(error)
            raise ModelCardError(
                message if message.startswith(where) else f"{where}: {message}"
            ) from None


def _check(card: ModelCard) -> None:
    if not card.name or any(c.isspace() for c in card.name) or ":" in card.name:
        raise ModelCardError(
            f"field 'name' must be a word without spaces or ':', not {card.name!r}"
        )
    if card.kind != "embedder":
        raise ModelCardError(f"field 'kind' must be 'embedder', not {card.kind!r}")
    if len(card.sha256) != 64 or any(c not in "0123456789abcdef" for c in card.sha256):
        raise ModelCardError(f"field 'sha256' must be 64 lowercase hex digits, not {card.sha256!r}")
    for name in ("width", "height", "dimension"):
        value = getattr(card, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelCardError(f"field {name!r} must be a positive whole number, not {value!r}")
    if card.colour not in _COLOURS:
        raise ModelCardError(
            f"field 'colour' must be one of {', '.join(_COLOURS)}, not {card.colour!r}"
        )
    if card.layout not in _LAYOUTS:
        raise ModelCardError(
            f"field 'layout' must be one of {', '.join(_LAYOUTS)}, not {card.layout!r}"
        )
    if card.alignment not in ALIGNMENTS:
        raise ModelCardError(
            f"field 'alignment' must be one of {', '.join(ALIGNMENTS)}, not {card.alignment!r}"
        )
    for name in ("mean", "std"):
        values = getattr(card, name)
        if len(values) != 3 or not all(isinstance(v, int | float) for v in values):
            raise ModelCardError(
                f"field {name!r} must be 3 numbers (one per channel), not {values!r}"
            )
    if any(v <= 0 for v in card.std):
        raise ModelCardError(f"field 'std' must be positive, not {card.std!r}")


def _text(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ModelCardError(f"{where}: field {key!r} must be text, not {value!r}")
    return value


def _whole(data: dict[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelCardError(f"{where}: field {key!r} must be a whole number, not {value!r}")
    return value


def _triple(data: dict[str, Any], key: str, where: str) -> tuple[float, float, float]:
    value = data.get(key)
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ModelCardError(f"{where}: field {key!r} must be 3 numbers, not {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def file_state(card: ModelCard) -> str:
    """Whether the file `card` names is "intact" (its bytes hash as recorded), "changed"
    or "missing"."""
    path = Path(card.path)
    try:
        return "intact" if file_sha256(path) == card.sha256 else "changed"
    except OSError:
        return "missing"


def card_name(spec: str) -> str | None:
    """The card an embedder spec names ("card:NAME" gives NAME), or None."""
    return spec[len(CARD_PREFIX) :] if spec.startswith(CARD_PREFIX) else None


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at `path`, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_onnx(path: Path, layout: str, width: int, height: int) -> int:
    """The output dimension of the ONNX model at `path`, checked to load in ONNX Runtime and
    to take one float input of `layout` and size (any batch dimension); `ModelCardError`
    saying what does not fit."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime raises its own types for a foreign file
        reason = " ".join(str(error).split())[:300]
        raise ModelCardError(
            f"{path} is not an ONNX model ONNX Runtime can load ({reason})"
        ) from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ModelCardError(f"{path} has {len(inputs)} inputs; an embedder takes one image batch")
    wanted = [3, height, width] if layout == "nchw" else [height, width, 3]
    shape = list(inputs[0].shape)
    if len(shape) != 4 or [_fixed(d) for d in shape[1:]] != wanted:
        shown = "x".join(str(d) for d in wanted)
        raise ModelCardError(
            f"{path}: input {inputs[0].name!r} has shape {shape}, not N x {shown} ({layout}, "
            f"{width}x{height}); give --layout and --input-size as the model takes them"
        )
    if "float" not in inputs[0].type:
        raise ModelCardError(f"{path}: input {inputs[0].name!r} is {inputs[0].type}, not float")
    last = outputs[0].shape[-1] if outputs and outputs[0].shape else None
    if not isinstance(last, int) or last < 1:
        raise ModelCardError(
            f"{path}: the output's last dimension is {last!r}, not a fixed number of components"
        )
    return last


def _fixed(dimension: Any) -> Any:
    return dimension if isinstance(dimension, int) else None


def new_card(
    path: Path,
    *,
    name: str,
    width: int,
    height: int,
    colour: str,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    layout: str,
    alignment: str,
    licence: str,
    source: str,
    added_by: str,
    added_at: str,
    dimension: int | None = None,
) -> ModelCard:
    """The card of the ONNX file at `path`, checked: it exists, loads in ONNX Runtime, takes
    the declared input and gives `dimension` components (when given; read from the graph
    otherwise). `ModelCardError` naming what does not fit."""
    path = path.resolve()
    if not path.is_file():
        raise ModelCardError(f"{path}: no such file")
    card = ModelCard(  # the declared fields checked before the file is opened
        name=name,
        path=str(path),
        sha256="0" * 64,
        width=width,
        height=height,
        dimension=dimension or 1,
        colour=colour,
        mean=mean,
        std=std,
        layout=layout,
        alignment=alignment,
        licence=licence,
        source=source,
    )
    found = inspect_onnx(path, layout, width, height)
    if dimension is not None and dimension != found:
        raise ModelCardError(
            f"{path}: the output has {found} components, not the {dimension} declared (--dimension)"
        )
    return replace(
        card, sha256=file_sha256(path), dimension=found, added_at=added_at, added_by=added_by
    )
