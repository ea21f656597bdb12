"""Commands that curate who is who: clusters and their names, faces moved, merged or
rejected; edits and their undo; review.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
from rich.table import Table

from ..entities import Edit
from ..people.discovery import ClusterReport
from .common import F, catalogue_for, data_option, library_errors, main, opened, out

#: Nothing to import: the commands register themselves on `main`.
__all__: list[str] = []


@main.command()
@data_option
def review(data_dir: Path) -> None:
    """List labelled photos whose label went to one of several faces (or was not applied)."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        found = catalogue.reviews()
    for item in found:
        where = item.photo.paths[0] if item.photo.paths else item.photo.sha256
        who = f"{item.person.name} ({item.person.id})" if item.person else "nobody"
        out.print(f"{where}: {item.reason}; labelled face: {who}")
    if not found:
        out.print("nothing to review")


# -- discovering people (docs/clustering.md) -----------------------------------------------------
@main.command()
@data_option
@click.option("--full", is_flag=True, help="Cluster every unnamed face again, not only new ones.")
def cluster(data_dir: Path, full: bool) -> None:
    """Group the faces nobody has named into likely people (new faces join clusters)."""
    with library_errors(), opened(data_dir) as catalogue:
        report = catalogue.cluster(full=full)
    print_clustering(report)


def print_clustering(report: ClusterReport) -> None:
    out.print(
        f"considered {report.considered} unnamed faces ({report.considered - report.clustered} "
        f"below the quality bar), {report.joined} joined existing clusters, "
        f"in {report.seconds:.1f} s; {report.clusters} clusters of 2+ faces hold "
        f"{report.faces_in_clusters} faces (iddetective clusters)"
    )


@main.command()
@data_option
@click.option("--min-size", type=click.IntRange(1), default=2, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def clusters(data_dir: Path, min_size: int, limit: int, as_json: bool) -> None:
    """List clusters of unnamed faces, largest first, with a few face ids and photos."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        found = catalogue.clusters(min_size=min_size, limit=limit)
    if as_json:
        for item in found:
            click.echo(json.dumps(asdict(item), ensure_ascii=False))
        return
    table = Table("cluster", "faces", "face ids", "photos")
    for item in found:
        paths = sorted({face.photo.paths[0] for face in item.faces if face.photo.paths})
        shown = ", ".join(str(face.id) for face in item.faces)
        more = ", ..." if item.size > len(item.faces) else ""
        table.add_row(str(item.id), str(item.size), shown + more, "\n".join(paths[:3]))
    out.print(table if found else "no clusters (iddetective cluster makes them)")


@main.command()
@click.argument("person")
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def faces(person: str, data_dir: Path, as_json: bool) -> None:
    """List the faces of PERSON (id or name) with their ids, to move or reject them."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        found_person, found = catalogue.person(person)
    if as_json:
        for face in found:
            click.echo(json.dumps(asdict(face), ensure_ascii=False))
        return
    out.print(f"{found_person.name} ({found_person.id}): {len(found)} faces")
    for face in found:
        out.print(f"{face.id:>8}  {face.photo.paths[0] if face.photo.paths else face.photo.sha256}")


def person_options(command: F) -> F:
    """--person REF or --new NAME: who faces go to."""
    command = click.option("--new", "new_name", metavar="NAME", help="A new person named so.")(
        command
    )
    return click.option("--person", metavar="ID_OR_NAME", help="An existing person.")(command)


@main.command("name-cluster")
@click.argument("cluster_id", type=int)
@person_options
@data_option
def name_cluster(cluster_id: int, person: str | None, new_name: str | None, data_dir: Path) -> None:
    """Give the faces of cluster CLUSTER_ID to a person (--person) or a new one (--new)."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        edit = catalogue.name_cluster(cluster_id, person=person, new_name=new_name)
    _print_edit(edit)


@main.command("move-faces")
@click.argument("face_ids", type=int, nargs=-1, required=True)
@person_options
@data_option
def move_faces(
    face_ids: tuple[int, ...], person: str | None, new_name: str | None, data_dir: Path
) -> None:
    """Move faces to another person (--person) or a new one (--new): split a person."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        edit = catalogue.move_faces(face_ids, person=person, new_name=new_name)
    _print_edit(edit)


@main.command()
@click.argument("face_ids", type=int, nargs=-1, required=True)
@data_option
def reject(face_ids: tuple[int, ...], data_dir: Path) -> None:
    """Take faces from their person for good: they never rejoin them automatically."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        edit = catalogue.reject_faces(face_ids)
    _print_edit(edit)


@main.command()
@click.argument("target")
@click.argument("source")
@data_option
def merge(target: str, source: str, data_dir: Path) -> None:
    """Merge person SOURCE into TARGET (faces, names, accounts, lists, relations)."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        edit = catalogue.merge_people(target, source)
    _print_edit(edit)


@main.command()
@click.argument("edit_id", type=int)
@data_option
def undo(edit_id: int, data_dir: Path) -> None:
    """Undo the recorded edit EDIT_ID (iddetective edits lists them)."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        edit = catalogue.undo(edit_id)
    _print_edit(edit)


@main.command()
@data_option
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def edits(data_dir: Path, limit: int, as_json: bool) -> None:
    """List the recorded edits of who is who (name, merge, split, reject, undo), newest first."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        found = catalogue.edits(limit=limit)
    if as_json:
        for edit in found:
            click.echo(json.dumps(asdict(edit), ensure_ascii=False))
        return
    for edit in found:
        undone = f"  (undone {edit.undone_at} by {edit.undone_by})" if edit.undone_at else ""
        out.print(f"{edit.id:>6}  {edit.at}  {edit.actor}  {edit.summary}{undone}")
    if not found:
        out.print("no edits yet")


def _print_edit(edit: Edit) -> None:
    out.print(f"edit {edit.id}: {edit.summary}")
    if edit.kind != "undo":
        out.print(f"undo with: iddetective undo {edit.id}")
