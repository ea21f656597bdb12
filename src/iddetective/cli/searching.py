"""Commands that answer who is who: search, find, query, people, stats."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
from rich.table import Table

from ..matching.search import SearchResult, to_json
from .common import catalogue_for, data_option, library_errors, main, opened, out, threshold_options

#: Nothing to import: the commands register themselves on `main`.
__all__: list[str] = []


@main.command()
@click.argument("photo", type=click.Path(path_type=str, readable=False))
@data_option
@click.option("--top", type=int, default=5, show_default=True, help="People listed per face.")
@threshold_options
@click.option(
    "--person",
    "people",
    multiple=True,
    help="Only compare with this person (id or name); repeatable.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the iddetective/search/v1 JSON object."
)
def search(
    photo: str,
    data_dir: Path,
    top: int,
    threshold: float | None,
    max_fmr: float | None,
    people: tuple[str, ...],
    as_json: bool,
) -> None:
    """Find every face in PHOTO and who each one is."""
    with library_errors(), opened(data_dir) as catalogue:
        result = catalogue.search_photo(
            photo,
            top=top,
            threshold=catalogue.match_threshold(threshold, max_fmr),
            people=list(people) or None,
        )
    if as_json:
        click.echo(json.dumps(to_json(result), indent=2, ensure_ascii=False))
    else:
        _print_search(result)


def _print_search(result: SearchResult) -> None:
    if not result.faces:
        out.print(f"No face found in {result.path}.")
        return
    out.print(f"{len(result.faces)} face(s) in {result.path} (threshold {result.threshold}):")
    for number, face in enumerate(result.faces, start=1):
        box = face.box
        where = f"left={box.left} top={box.top} right={box.right} bottom={box.bottom}"
        out.print(f"\nFace {number} at {where}:")
        if face.verdict == "no_match":
            out.print("  no match: nobody in the catalogue is within the threshold")
        for match in face.matches:
            who = f"{match.person.name} ({match.person.id})" if match.person else "unnamed face(s)"
            word = "MATCH   " if match.verdict == "match" else "no match"
            estimate = result.fmr_at(match.distance)
            odds = f" ({estimate.describe()} strangers this close)" if estimate else ""
            out.print(f"  {word} {match.distance:.3f}{odds}  {who}")
            for hit in match.photos[:5]:
                shown = hit.photo.paths[0] if hit.photo.paths else hit.photo.sha256
                out.print(f"           {hit.distance:.3f}  {shown}")
            if len(match.photos) > 5:
                out.print(f"           ... and {len(match.photos) - 5} more photos")


@main.command()
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def people(data_dir: Path, as_json: bool) -> None:
    """List the people in the catalogue."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        found = catalogue.people()
    if as_json:
        for person in found:
            click.echo(json.dumps(person.__dict__, ensure_ascii=False))
        return
    table = Table("id", "name", "faces", "photos")
    for person in found:
        table.add_row(person.id, person.name, str(person.faces), str(person.photos))
    out.print(table)


@main.command()
@click.argument("text")
@data_option
@click.option("--limit", type=int, default=20, show_default=True, help="People to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def find(text: str, data_dir: Path, limit: int, as_json: bool) -> None:
    """Find people whose name, alias or handle contains TEXT (any case, accents or script)."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        found = catalogue.find(text, limit=limit)
    if as_json:
        for hit in found:
            click.echo(json.dumps(asdict(hit), ensure_ascii=False))
        return
    table = Table("id", "name", "matched", "in")
    for hit in found:
        table.add_row(hit.person.id, hit.person.name, hit.value, hit.field)
    out.print(table if found else f"nobody's name, alias or handle contains {text!r}")


@main.command()
@click.argument("text")
@data_option
@click.option("--top", type=int, default=5, show_default=True, help="People listed per face.")
@threshold_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def query(
    text: str,
    data_dir: Path,
    top: int,
    threshold: float | None,
    max_fmr: float | None,
    as_json: bool,
) -> None:
    """Run a query (docs/query.md): list the people it selects, or with face:PHOTO, search
    that photo among their faces."""
    with library_errors(), opened(data_dir) as catalogue:
        limit = catalogue.match_threshold(threshold, max_fmr)
        answer = catalogue.query(text, top=top, threshold=limit)
    if as_json:
        people = [{"id": p.id, "name": p.name} for p in answer.people]
        search_json = to_json(answer.search) if answer.search else None
        click.echo(json.dumps({"people": people, "search": search_json}, ensure_ascii=False))
    elif answer.search is not None:
        out.print(f"searched among the faces of {len(answer.people)} people")
        _print_search(answer.search)
    else:
        for person in answer.people:
            out.print(f"{person.id}  {person.name}")
        out.print(f"{len(answer.people)} people")


@main.command()
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(data_dir: Path, as_json: bool) -> None:
    """Show the catalogue's size."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        figures = catalogue.stats()
    if as_json:
        click.echo(json.dumps(figures.__dict__))
        return
    for name, value in figures.__dict__.items():
        shown = f"{value / 1e6:.1f} MB" if name == "data_bytes" else str(value)
        out.print(f"{name.replace('_', ' '):>20}  {shown}")
