"""The `models` commands: the ONNX embedders an operator brings, recorded as model cards in
the catalogue (faces/model_cards.py, docs/models.md). Nothing is downloaded."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..faces.model_cards import ALIGNMENTS, file_state
from .common import catalogue_for, data_option, library_errors, main, out

#: Nothing to import: the commands register themselves on `main`.
__all__: list[str] = []


@main.group()
def models() -> None:
    """Model cards: ONNX face embedders you bring, checked and recorded in the catalogue."""


def _size(context: click.Context, parameter: click.Parameter, value: str) -> tuple[int, int]:
    found = re.fullmatch(r"(\d+)x(\d+)", value.strip().lower())
    if not found or not int(found[1]) or not int(found[2]):
        raise click.BadParameter("give WIDTHxHEIGHT in pixels, e.g. 112x112", context, parameter)
    return int(found[1]), int(found[2])


def _channels(
    context: click.Context, parameter: click.Parameter, value: str
) -> tuple[float, float, float]:
    try:
        numbers = [float(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3:
        raise click.BadParameter("give one number, or three (R,G,B) separated by commas")
    return (numbers[0], numbers[1], numbers[2])


@models.command("add")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, readable=False))
@click.option("--name", required=True, help="The model's name: stored with its vectors.")
@click.option(
    "--input-size",
    default="112x112",
    show_default=True,
    callback=_size,
    help="WIDTHxHEIGHT of the aligned face the model takes.",
)
@click.option(
    "--colour",
    type=click.Choice(["rgb", "bgr"]),
    default="rgb",
    show_default=True,
    help="Channel order the model takes.",
)
@click.option(
    "--mean",
    default="127.5",
    show_default=True,
    callback=_channels,
    help="Subtracted from each pixel (0..255): one number or R,G,B.",
)
@click.option(
    "--std",
    default="127.5",
    show_default=True,
    callback=_channels,
    help="Then divided by: one number or R,G,B.",
)
@click.option(
    "--layout",
    type=click.Choice(["nchw", "nhwc"]),
    default="nchw",
    show_default=True,
    help="The input tensor's layout.",
)
@click.option(
    "--alignment",
    type=click.Choice(sorted(ALIGNMENTS)),
    default="arcface-112",
    show_default=True,
    help="The 5-point template faces are warped to (scaled to the input size).",
)
@click.option(
    "--dimension", type=click.IntRange(1), default=None, help="Output components, checked."
)
@click.option("--licence", required=True, help="The model's licence, as you have it.")
@click.option("--source", required=True, help="Where the file came from.")
@data_option
def add_model(
    file: Path,
    name: str,
    input_size: tuple[int, int],
    colour: str,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    layout: str,
    alignment: str,
    dimension: int | None,
    licence: str,
    source: str,
    data_dir: Path,
) -> None:
    """Check the ONNX embedder FILE and record its card in the catalogue (its SHA-256: a
    changed file is refused when loaded); the embedder card:NAME then runs it."""
    with library_errors(), catalogue_for(data_dir, create=True) as catalogue:
        card = catalogue.add_model_card(
            file,
            name=name,
            width=input_size[0],
            height=input_size[1],
            colour=colour,
            mean=mean,
            std=std,
            layout=layout,
            alignment=alignment,
            licence=licence,
            source=source,
            dimension=dimension,
        )
    out.print(
        f"{card.name}: {card.dimension}-d, {card.width}x{card.height} {card.colour} "
        f"{card.layout}, sha256 {card.sha256}, licence: {card.licence}"
    )


@models.command("list")
@data_option
def list_models(data_dir: Path) -> None:
    """The model cards: name, dimension, licence, SHA-256 prefix, file and its state."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        cards = catalogue.model_cards()
    if not cards:
        out.print("no model cards (dlib-resnet-v1, dlib's public-domain model, is the default)")
    for card in cards:
        out.print(
            f"{card.name}  {card.dimension}-d  licence: {card.licence}  "
            f"sha256 {card.sha256[:12]}  {card.path} ({file_state(card)})"
        )


@models.command("remove")
@click.argument("name")
@data_option
def remove_model(name: str, data_dir: Path) -> None:
    """Remove the card NAME (refused while faces it embedded are stored)."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        card = catalogue.remove_model_card(name)
    out.print(f"removed the model card {card.name} (the file {card.path} is left as it is)")
