"""Read dlib's serialised face-recognition ResNet into plain numpy layer specs.

`dlib_face_recognition_resnet_model_v1.dat` is dlib's `serialize(net)` of the `anet_type` in
dlib's examples/dnn_face_recognition_ex.cpp: 29 convolutions in residual blocks, batch-norm
folded into `affine` layers, `tag`/`skip`/`add_prev` layers joining the shortcuts. Only what
that type needs is understood here.

dlib's stream does not describe its own nesting. Each layer writes a version number, then
the layers beneath it (so the outermost layer's number comes first and the input layer sits
in the middle of the file), then its own parameters; tags and skips name no tag id at all,
the type does. So the reader walks the layers of `anet_type` itself and checks every byte
against it: each version, each layer's version string ("con_4", "affine_" ...), each
template parameter the file repeats (filter sizes, strides, padding, image size) and the
shape of every tensor. Anything else, a damaged file, another network or a newer encoding,
is refused with a `DlibFormatError` naming the byte offset and the layer; nothing is guessed.

The encodings (dlib/serialize.h, dlib/float_details.h, dlib/cuda/tensor.h): an integer is a
control byte (its length, 0x80 for negative) then that many little-endian bytes of its
magnitude; a float is a `float_details`, an int64 mantissa and an int16 exponent in that
integer encoding; a string is its length then its bytes; a bool is the character '1' or
'0'; a tensor's values are little-endian float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import IDDetectiveError, printable

__all__ = [
    "AddPrev",
    "Affine",
    "AvgPool",
    "Conv",
    "DlibFormatError",
    "DlibNetwork",
    "FullyConnected",
    "InputImage",
    "Layer",
    "MaxPool",
    "Relu",
    "Skip",
    "Tag",
    "parse_network",
    "read_network",
]


class DlibFormatError(IDDetectiveError):
    """A file that is not dlib's face-recognition ResNet as this reader knows it (damaged,
    truncated, another network or another version): the message names the byte and layer."""

    def __init__(self, name: str, offset: int, layer: str, reason: str) -> None:
        super().__init__(
            f"{printable(name)}: not dlib's face-recognition ResNet (anet_type) as this reader "
            f"knows it: at byte {offset}, in {layer}: {reason}"
        )
        self.name, self.offset, self.layer, self.reason = name, offset, layer, reason


@dataclass(frozen=True)
class InputImage:
    """dlib's `input_rgb_image_sized`: an RGB chip of `size` (rows, columns), each channel
    minus its mean, divided by 256."""

    size: tuple[int, int]
    mean_rgb: tuple[float, float, float]
    scale: float = 1 / 256


@dataclass(frozen=True, eq=False)
class Conv:
    """A convolution (cross-correlation), zero padding, then bias (and ReLU when fused)."""

    #: output channels x input channels x rows x columns, float32
    filters: np.ndarray
    #: one per output channel, float32
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]
    relu: bool = False


@dataclass(frozen=True, eq=False)
class Affine:
    """A per-channel `x * gamma + beta` (batch normalisation folded at training's end)."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class Relu:
    """max(x, 0)."""


@dataclass(frozen=True)
class MaxPool:
    """Max over windows of `size` (rows, columns); padding never wins."""

    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class AvgPool:
    """Mean over windows of `size`; size (0, 0) is the whole image (`avg_pool_everything`)."""

    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True, eq=False)
class FullyConnected:
    """`x.flatten() @ weights` (inputs x outputs, float32), no bias (`fc_no_bias`)."""

    weights: np.ndarray


@dataclass(frozen=True)
class Tag:
    """Remembers the tensor here as tag `id`; the tensor passes unchanged."""

    id: int


@dataclass(frozen=True)
class Skip:
    """Replaces the tensor by the one most recently tagged `id`."""

    id: int


@dataclass(frozen=True)
class AddPrev:
    """Adds the tensor most recently tagged `id`. Tensors of different shapes are zero-padded
    to the larger of each dimension first, at the end of the channels, rows and columns (dlib
    does that in add_prev; in this network where a block's 3x3 output meets its 4x4
    shortcut, and where 64 channels meet 32, ...)."""

    id: int


Layer = Conv | Affine | Relu | MaxPool | AvgPool | FullyConnected | Tag | Skip | AddPrev


@dataclass(frozen=True, eq=False)
class DlibNetwork:
    """The network read from a file: its input, its layers from the input on, and the
    metric loss's margin and distance threshold (kept for reference; not part of the
    descriptor)."""

    input: InputImage
    layers: tuple[Layer, ...]
    margin: float
    distance_threshold: float
    #: How many floats the parameters hold (for reports).
    parameters: int = field(default=0)


def read_network(path: str | Path) -> DlibNetwork:
    """The network in dlib's serialised `anet_type` file `path` (`DlibFormatError` when it
    is anything else)."""
    return parse_network(Path(path).read_bytes(), str(path))


def parse_network(data: bytes, name: str = "network") -> DlibNetwork:
    """The network serialised in `data` (the bytes of the file `name`)."""
    stream = _Stream(data, name)
    stream.where = "the loss layer (add_loss_layer)"
    stream.expect_int(1, "add_loss_layer version")
    margin, threshold = _read_loss(stream)
    wants = _anet_type()
    versions = [_read_layer_version(stream, index, want, wants) for index, want in enumerate(wants)]
    stream.where = "the input layer (input_rgb_image_sized)"
    image = _read_input(stream)
    shapes = _Shapes(channels=3)
    layers: list[Layer] = []
    for index in reversed(range(len(wants))):
        want = wants[index]
        stream.where = _describe(index, want, wants)
        layer = _LAYER_READERS[want.kind](stream, want, shapes)
        if want.kind not in ("tag", "skip"):
            _read_add_layer_rest(stream, versions[index], over_input=index == len(wants) - 1)
        layers.append(layer)
    stream.where = "the end of the file"
    if stream.offset != len(data):
        stream.refuse(f"{len(data) - stream.offset} bytes follow the network")
    return DlibNetwork(image, tuple(layers), margin, threshold, shapes.parameters)


# -- the type -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Want:
    """One layer of the type, outermost first: its kind and the template parameters."""

    kind: str
    filters: int = 0
    size: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (1, 1)
    tag: int = 0

    @property
    def padding(self) -> tuple[int, int]:
        """dlib's default: `stride != 1 ? 0 : size / 2`, per axis."""
        return (
            0 if self.stride[0] != 1 else self.size[0] // 2,
            0 if self.stride[1] != 1 else self.size[1] // 2,
        )


def _con(filters: int, size: int, stride: int) -> _Want:
    return _Want("con", filters, (size, size), (stride, stride))


def _block(filters: int, stride: int) -> list[_Want]:
    """block<N,affine,stride> = affine<con<N,3,3,1,1,relu<affine<con<N,3,3,stride,stride>>>>>."""
    return [
        _Want("affine"),
        _con(filters, 3, 1),
        _Want("relu"),
        _Want("affine"),
        _con(filters, 3, stride),
    ]


def _ares(filters: int) -> list[_Want]:
    """ares = relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>."""
    return [_Want("relu"), _Want("add_prev", tag=1), *_block(filters, 1), _Want("tag", tag=1)]


def _ares_down(filters: int) -> list[_Want]:
    """ares_down =
    relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>."""
    return [
        _Want("relu"),
        _Want("add_prev", tag=2),
        _Want("avg_pool", size=(2, 2), stride=(2, 2)),
        _Want("skip", tag=1),
        _Want("tag", tag=2),
        *_block(filters, 2),
        _Want("tag", tag=1),
    ]


def _anet_type() -> list[_Want]:
    """dlib's anet_type, outermost layer first (the loss and input layers apart)."""
    return [
        _Want("fc", filters=128),
        _Want("avg_pool"),  # avg_pool_everything: avg_pool_<0,0,1,1>
        *_ares_down(256),
        *_ares(256),
        *_ares(256),
        *_ares_down(256),
        *_ares(128),
        *_ares(128),
        *_ares_down(128),
        *_ares(64),
        *_ares(64),
        *_ares(64),
        *_ares_down(64),
        *_ares(32),
        *_ares(32),
        *_ares(32),
        _Want("max_pool", size=(3, 3), stride=(2, 2)),
        _Want("relu"),
        _Want("affine"),
        _con(32, 7, 2),
    ]


def _describe(index: int, want: _Want, wants: list[_Want]) -> str:
    """A layer named as dlib's `print(net)` numbers it (layer<1> is the fc; the loss is 0)."""
    details = {
        "con": f" {want.filters} {want.size[0]}x{want.size[1]} stride {want.stride[0]}",
        "fc": f" {want.filters}",
        "avg_pool": f" {want.size[0]}x{want.size[1]}" if want.size != (0, 0) else "_everything",
        "max_pool": f" {want.size[0]}x{want.size[1]}",
        "tag": f"{want.tag}",
        "skip": f"{want.tag}",
        "add_prev": f"{want.tag}",
    }.get(want.kind, "")
    return f"layer<{index + 1}> of {len(wants)} ({want.kind}{details})"


# -- the bytes ------------------------------------------------------------------------------
class _Stream:
    """dlib's serialised values, read in order from `data`, refusing with the offset."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name, self.offset, self.where = data, name, 0, "the file"

    def refuse(self, reason: str, offset: int | None = None) -> None:
        raise DlibFormatError(
            self.name, self.offset if offset is None else offset, self.where, reason
        )

    def take(self, count: int, what: str) -> bytes:
        if count > len(self.data) - self.offset:
            self.refuse(
                f"truncated: {what} needs {count} bytes, the file has "
                f"{len(self.data) - self.offset} left"
            )
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def integer(self, what: str, limit: int = 8, signed: bool = True) -> int:
        """dlib's pack_int: a control byte (the length; 0x80: negative, for signed types)
        then the magnitude's bytes, least significant first."""
        start = self.offset
        control = self.take(1, what)[0]
        size = control & (0x0F if signed else 0x8F)
        if not 1 <= size <= limit:
            self.refuse(
                f"{what}: control byte 0x{control:02x} is no integer of {limit} bytes", start
            )
        magnitude = int.from_bytes(self.take(size, what), "little")
        return -magnitude if signed and control & 0x80 else magnitude

    def expect_int(self, wanted: int, what: str, limit: int = 4, signed: bool = True) -> None:
        start = self.offset
        found = self.integer(what, limit, signed)
        if found != wanted:
            self.refuse(f"{what} is {found}, not {wanted}", start)

    def number(self, what: str) -> float:
        """A float_details: mantissa * 2**exponent (exponents 32000..32002: inf, -inf, nan)."""
        start = self.offset
        if self.take(1, what)[0] & 0x70:
            self.refuse(f"{what} is in dlib's old text encoding of floats", start)
        self.offset = start
        mantissa = self.integer(f"{what} (mantissa)", 8)
        exponent = self.integer(f"{what} (exponent)", 2)
        if exponent >= 32000:
            self.refuse(f"{what} is not a finite number", start)
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            self.refuse(f"{what} is too large", start)
            raise

    def text(self, what: str) -> str:
        start = self.offset
        length = self.integer(f"{what} (length)", signed=False)
        if length > 64:
            self.refuse(f"{what} would be {length} bytes long, no version string is", start)
        raw = self.take(length, what)
        if not raw.isascii() or not raw.decode("ascii").isprintable():
            self.refuse(f"{what} {raw!r} is no version string", start)
        return raw.decode("ascii")

    def version(self, accepted: tuple[str, ...]) -> str:
        start = self.offset
        found = self.text("the layer's version string")
        if found not in accepted:
            self.refuse(
                f"version string {found!r}, expected {' or '.join(map(repr, accepted))}", start
            )
        return found

    def flag(self, what: str) -> bool:
        start = self.offset
        char = self.take(1, what)
        if char not in (b"0", b"1"):
            self.refuse(f"{what} is byte 0x{char[0]:02x}, not '0' or '1'", start)
        return char == b"1"

    def dims(self, what: str) -> tuple[int, int, int, int]:
        start = self.offset
        found = tuple(self.integer(f"{what} (dimension)") for _ in range(4))
        if min(found) < 0:
            self.refuse(f"{what} has negative dimensions {found}", start)
        return found[0], found[1], found[2], found[3]

    def tensor(self, what: str) -> np.ndarray:
        """A resizable_tensor (version 2): four dimensions, then little-endian float32s."""
        self.expect_int(2, f"{what} (tensor version)")
        shape = self.dims(what)
        count = math.prod(shape)
        raw = self.take(4 * count, f"{what}'s {count} floats")
        return np.frombuffer(raw, "<f4").astype(np.float32).reshape(shape)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        """An alias_tensor (version 1): only the shape of a part of the parameters."""
        self.expect_int(1, f"{what} (alias_tensor version)")
        return self.dims(what)


@dataclass
class _Shapes:
    """What flows between the layers as they are read from the input on: the channels here
    and at each tag, for checking each layer's parameters against its input."""

    channels: int
    tags: dict[int, int] = field(default_factory=dict)
    parameters: int = 0


def _read_layer_version(stream: _Stream, index: int, want: _Want, wants: list[_Want]) -> int:
    """The version of the add_layer (1 or 2; 2 or 3 over the input layer), add_tag_layer or
    add_skip_layer (1) wrapping the layer `want`."""
    stream.where = _describe(index, want, wants)
    start = stream.offset
    if want.kind in ("tag", "skip"):
        allowed: tuple[int, ...] = (1,)
    else:
        allowed = (2, 3) if index == len(wants) - 1 else (1, 2)
    found = stream.integer("the layer's version", 4)
    if found not in allowed:
        wrapper = {"tag": "add_tag_layer", "skip": "add_skip_layer"}.get(want.kind, "add_layer")
        stream.refuse(
            f"{wrapper} version {found}, expected {' or '.join(map(str, allowed))}", start
        )
    return found


def _read_add_layer_rest(stream: _Stream, version: int, over_input: bool) -> None:
    """What add_layer writes after its layer: three flags and the training's tensors (kept
    by dlib only while training; read and dropped)."""
    for what in (
        "this_layer_setup_called",
        "gradient_input_is_stale",
        "get_output_and_gradient_input_disabled",
    ):
        stream.flag(what)
    stream.tensor("x_grad")
    stream.tensor("cached_output")
    if over_input:
        stream.tensor("grad_final")
        if version >= 3:
            stream.integer("sample_expansion_factor", 4, signed=False)
    elif version >= 2:
        stream.tensor("params_grad")


def _read_loss(stream: _Stream) -> tuple[float, float]:
    found = stream.version(("loss_metric_", "loss_metric_2"))
    if found == "loss_metric_":
        return 0.1, 0.75  # dlib's values for that version, when they were not written
    return stream.number("margin"), stream.number("distance threshold")


def _read_input(stream: _Stream) -> InputImage:
    stream.version(("input_rgb_image_sized",))
    mean = tuple(stream.number(f"the mean of {channel}") for channel in ("red", "green", "blue"))
    size = []
    for what in ("rows", "columns"):
        start = stream.offset
        found = stream.integer(f"the image's {what}", signed=False)
        if found != 150:
            stream.refuse(f"the image's {what} are {found}, not 150", start)
        size.append(found)
    return InputImage((size[0], size[1]), (mean[0], mean[1], mean[2]))


def _check_template(stream: _Stream, want: _Want, found: dict[str, object], start: int) -> None:
    """The template parameters a layer repeats in the file, against the type's."""
    expected = {
        "rows": want.size[0],
        "columns": want.size[1],
        "stride_y": want.stride[0],
        "stride_x": want.stride[1],
        "padding_y": want.padding[0],
        "padding_x": want.padding[1],
    }
    if want.kind in ("con", "fc"):
        expected["filters"] = want.filters
    wrong = [
        f"{key} {found[key]} (expected {value})"
        for key, value in expected.items()
        if key in found and found[key] != value
    ]
    if wrong:
        stream.refuse(f"{', '.join(wrong)}", start)


def _parameters(
    stream: _Stream, params: np.ndarray, parts: list[tuple[str, tuple[int, ...]]], start: int
) -> list[np.ndarray]:
    """The parts of a layer's parameter tensor, in order, with their shapes; they must
    fill it exactly."""
    flat = params.reshape(-1)
    need = sum(math.prod(shape) for _, shape in parts)
    if flat.size != need:
        described = ", ".join(f"{name} {shape}" for name, shape in parts)
        stream.refuse(
            f"the parameters hold {flat.size} floats, not the {need} of {described}", start
        )
    if not np.all(np.isfinite(flat)):
        stream.refuse("the parameters are not all finite numbers", start)
    pieces, at = [], 0
    for _, shape in parts:
        size = math.prod(shape)
        pieces.append(flat[at : at + size].reshape(shape).copy())
        at += size
    return pieces


def _read_con(stream: _Stream, want: _Want, shapes: _Shapes) -> Conv:
    start = stream.offset
    version = stream.version(("con_4", "con_5", "con_6"))
    params = stream.tensor("the parameters")
    found: dict[str, object] = {"filters": stream.integer("num_filters")}
    for key in ("rows", "columns", "stride_y", "stride_x", "padding_y", "padding_x"):
        found[key] = stream.integer(key)
    _check_template(stream, want, found, start)
    filters_shape = stream.alias("filters")
    bias_shape = stream.alias("biases")
    for what in ("learning rate", "weight decay", "bias learning rate", "bias weight decay"):
        stream.number(f"the {what} multiplier")
    use_bias = stream.flag("use_bias") if version in ("con_5", "con_6") else True
    use_relu = stream.flag("use_relu") if version == "con_6" else False
    wanted = (want.filters, shapes.channels, *want.size)
    if filters_shape != wanted:
        stream.refuse(f"filters of shape {filters_shape}, expected {wanted}", start)
    parts: list[tuple[str, tuple[int, ...]]] = [("filters", wanted)]
    if use_bias:
        if bias_shape != (1, want.filters, 1, 1):
            stream.refuse(
                f"biases of shape {bias_shape}, expected (1, {want.filters}, 1, 1)", start
            )
        parts.append(("biases", (want.filters,)))
    pieces = _parameters(stream, params, parts, start)
    bias = pieces[1] if use_bias else np.zeros(want.filters, np.float32)
    shapes.channels = want.filters
    shapes.parameters += params.size
    return Conv(pieces[0], bias, want.stride, want.padding, use_relu)


def _read_affine(stream: _Stream, want: _Want, shapes: _Shapes) -> Affine:
    start = stream.offset
    version = stream.version(("affine_", "affine_2"))
    params = stream.tensor("the parameters")
    gamma_shape, beta_shape = stream.alias("gamma"), stream.alias("beta")
    mode_at = stream.offset
    mode = stream.integer("mode", 4)
    if mode != 0:
        stream.refuse(f"mode {mode}, expected 0 (CONV_MODE: one gamma and beta a channel)", mode_at)
    if version == "affine_2" and stream.flag("disabled"):
        stream.refuse("a disabled affine layer, which this network does not have", start)
    channels = (1, shapes.channels, 1, 1)
    if gamma_shape != channels or beta_shape != channels:
        stream.refuse(f"gamma {gamma_shape} and beta {beta_shape}, expected {channels} each", start)
    gamma, beta = _parameters(
        stream, params, [("gamma", (shapes.channels,)), ("beta", (shapes.channels,))], start
    )
    shapes.parameters += params.size
    return Affine(gamma, beta)


def _read_relu(stream: _Stream, want: _Want, shapes: _Shapes) -> Relu:
    start = stream.offset
    if stream.version(("relu_", "relu_2")) == "relu_2" and stream.flag("disabled"):
        stream.refuse("a disabled relu layer, which this network does not have", start)
    return Relu()


def _read_pool_template(stream: _Stream, want: _Want, version: str) -> None:
    start = stream.offset
    stream.version((version,))
    found: dict[str, object] = {}
    for key in ("rows", "columns", "stride_y", "stride_x", "padding_y", "padding_x"):
        found[key] = stream.integer(key)
    _check_template(stream, want, found, start)


def _read_max_pool(stream: _Stream, want: _Want, shapes: _Shapes) -> MaxPool:
    _read_pool_template(stream, want, "max_pool_2")
    return MaxPool(want.size, want.stride, want.padding)


def _read_avg_pool(stream: _Stream, want: _Want, shapes: _Shapes) -> AvgPool:
    _read_pool_template(stream, want, "avg_pool_2")
    return AvgPool(want.size, want.stride, want.padding)


def _read_fc(stream: _Stream, want: _Want, shapes: _Shapes) -> FullyConnected:
    start = stream.offset
    version = stream.version(("fc_2", "fc_3"))
    outputs = stream.integer("num_outputs", signed=False)
    inputs = stream.integer("num_inputs", signed=False)
    params = stream.tensor("the parameters")
    weights_shape, _ = stream.alias("weights"), stream.alias("biases")
    mode_at = stream.offset
    mode = stream.integer("bias mode", 4)
    if mode != 1:
        stream.refuse(f"bias mode {mode}, expected 1 (FC_NO_BIAS)", mode_at)
    for what in ("learning rate", "weight decay", "bias learning rate", "bias weight decay"):
        stream.number(f"the {what} multiplier")
    if version == "fc_3":
        stream.flag("use_bias")
    # avg_pool_everything leaves one value a channel, so the inputs are the channels.
    wanted = (shapes.channels, want.filters, 1, 1)
    if (inputs, outputs) != wanted[:2] or weights_shape != wanted:
        stream.refuse(
            f"{inputs} inputs and {outputs} outputs, weights {weights_shape}; expected {wanted}",
            start,
        )
    (weights,) = _parameters(stream, params, [("weights", wanted[:2])], start)
    shapes.channels = want.filters
    shapes.parameters += params.size
    return FullyConnected(weights)


def _read_add_prev(stream: _Stream, want: _Want, shapes: _Shapes) -> AddPrev:
    stream.version(("add_prev_",))
    shapes.channels = max(shapes.channels, shapes.tags[want.tag])
    return AddPrev(want.tag)


def _read_tag(stream: _Stream, want: _Want, shapes: _Shapes) -> Tag:
    shapes.tags[want.tag] = shapes.channels
    return Tag(want.tag)


def _read_skip(stream: _Stream, want: _Want, shapes: _Shapes) -> Skip:
    shapes.channels = shapes.tags[want.tag]
    return Skip(want.tag)


_LAYER_READERS: dict[str, Callable[[_Stream, _Want, _Shapes], Layer]] = {
    "con": _read_con,
    "affine": _read_affine,
    "relu": _read_relu,
    "max_pool": _read_max_pool,
    "avg_pool": _read_avg_pool,
    "fc": _read_fc,
    "add_prev": _read_add_prev,
    "tag": _read_tag,
    "skip": _read_skip,
}
