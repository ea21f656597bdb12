"""Commands of privacy: erase, the opt-out registry, retention, the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from ..people.privacy import OptOutPreview
from .common import catalogue_for, confirm_or_refuse, data_option, library_errors, main, opened, out

#: Nothing to import: the commands register themselves on `main`.
__all__: list[str] = []


@main.command()
@click.argument("person")
@data_option
@click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
@click.option(
    "--optout",
    "opt_out",
    is_flag=True,
    help="Also opt their faces out, so re-indexing your files never brings them back.",
)
@click.option(
    "--unnamed-within",
    type=float,
    default=None,
    help="Unnamed faces at most this far from one of theirs are erased with them (0: none) "
    "[default: the model's, from its calibration table: 0.33 for dlib-resnet-v1].",
)
def erase(
    person: str, data_dir: Path, yes: bool, opt_out: bool, unnamed_within: float | None
) -> None:
    """Erase PERSON (id or unambiguous name) everywhere: faces, embeddings, index, crops."""
    with library_errors(), opened(data_dir) as catalogue:
        preview = catalogue.preview_erasure(person, unnamed_within=unnamed_within)
        found = preview.person
        out.print(
            f"{found.name} ({found.id}): {len(preview.faces)} faces, and {len(preview.unnamed)} "
            f"unnamed faces within {preview.unnamed_within} of one of them, erased with them"
        )
        total = len(preview.faces) + len(preview.unnamed)
        confirm_or_refuse(f"Erase {found.name} and {total} faces for good?", yes, "erase")
        erasure = catalogue.erase_person(preview, optout=opt_out)
    out.print(
        f"erased {len(erasure.faces)} faces ({erasure.unnamed} unnamed) and "
        f"{len(erasure.photos)} photos left with no face; "
        f"the audit log names this erasure {erasure.token}"
    )
    if erasure.optout:
        out.print(f"opted their faces out as {erasure.optout}")
    else:
        out.print(
            "your photo files are not touched: indexing them again stores these faces again "
            "(unnamed; labels naming them are refused); erase with --optout, or "
            "`iddetective optout add`, to keep them out"
        )


@main.group()
def optout() -> None:
    """The opt-out registry: faces that must never match (docs/privacy.md)."""


@optout.command("add")
@click.argument("photo", type=click.Path(path_type=str, readable=False))
@data_option
@click.option(
    "--person",
    "person",
    default=None,
    help="Who is opting out (id or name) [default: the person of the nearest face, if a match].",
)
@click.option(
    "--erase-others",
    is_flag=True,
    help="Also erase faces within reach that are labelled as someone else (kept by default).",
)
@click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
def optout_add(
    photo: str, data_dir: Path, person: str | None, erase_others: bool, yes: bool
) -> None:
    """Opt out the one face in PHOTO: erase matching faces now, block them from now on."""
    with library_errors(), opened(data_dir, create=True) as catalogue:
        preview = catalogue.preview_optout(photo, person=person)
        _print_optout_preview(preview, erase_others)
        erased = len(preview.to_erase(erase_others))
        confirm_or_refuse(
            f"Block this face from now on and erase {erased} faces?", yes, "optout add"
        )
        result = catalogue.add_optout(preview, erase_others=erase_others)
    gone = result.erased
    out.print(
        f"opted out as {result.optout.token}; erased {len(gone.faces)} faces "
        f"({gone.people} people's, {gone.unnamed} unnamed) and {len(gone.photos)} photos "
        "left with no face"
    )
    kept = sum(len(g.faces) for g in result.kept)
    if kept:
        out.print(
            f"kept {kept} faces of {len(result.kept)} people labelled as someone else "
            "(--erase-others erases them too)"
        )


def _print_optout_preview(preview: OptOutPreview, erase_others: bool) -> None:
    out.print(f"faces within {preview.within} of the face in {preview.photo}:")
    if not preview.groups:
        out.print("  none")
    others = preview.others
    for group in preview.groups:
        if group.person is None:
            who, fate = "unnamed", "erased"
        elif group not in others:
            who, fate = f"{group.person.name} ({group.person.id})", "erased: the person opting out"
        else:
            who = f"{group.person.name} ({group.person.id})"
            fate = "erased (--erase-others)" if erase_others else "kept: labelled as someone else"
        out.print(f"  {who}: {len(group.faces)} faces, nearest {group.nearest:.3f}; {fate}")
    if preview.subject is None:
        out.print("  (no stored face is a match: pass --person to say who is opting out)")


@optout.command("list")
@data_option
def optout_list(data_dir: Path) -> None:
    """List opt-outs by token and date (the faces are never shown)."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        found = catalogue.optouts()
    for item in found:
        out.print(f"{item.token}  {item.created_at}  {item.faces} faces")
    if not found:
        out.print("no opt-outs")


@optout.command("remove")
@click.argument("token")
@data_option
def optout_remove(token: str, data_dir: Path) -> None:
    """Withdraw the opt-out TOKEN (faces erased when it was added stay erased)."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        removed = catalogue.remove_optout(token)
    out.print(f"withdrew opt-out {removed.token}")


@main.command()
@data_option
@click.option(
    "--audit-days",
    type=int,
    default=365,
    show_default=True,
    help="Keep audit entries this many days.",
)
def maintenance(data_dir: Path, audit_days: int) -> None:
    """Retention: purge old audit entries and orphaned cache files; compact the catalogue."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        report = catalogue.maintenance(audit_days=audit_days)
    out.print(
        f"purged {report.audit_entries} audit entries older than {audit_days} days, "
        f"{report.media_files} cached thumbnails and crops of removed photos and faces, "
        f"{report.partial_files} partly written files; catalogue compacted"
    )


@main.command()
@data_option
@click.option("--limit", type=int, default=100, show_default=True, help="Entries to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def audit(data_dir: Path, limit: int, as_json: bool) -> None:
    """Show the audit log of searches, newest first."""
    with library_errors(), catalogue_for(data_dir) as catalogue:
        entries = catalogue.audit(limit=limit)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry.__dict__, ensure_ascii=False))
        return
    table = Table("when", "who", "kind", "query", "results")
    for entry in entries:
        query = f"photo {entry.query_sha256}" if entry.query_sha256 else repr(entry.query_text)
        results = str(entry.results)
        if entry.people is not None:  # erasures: faces, of how many named people
            results += f" ({entry.people} people)"
        table.add_row(entry.at, entry.actor, entry.kind, query, results)
    out.print(table)
