"""Erasing people and faces, for both stores (written once over the store's `sql`,
store/dialect.py; docs/privacy.md).

Each erasure is one transaction, audited by an opaque token with how many faces of how many
people it removed. Erasing a person also leaves, on purpose:

- **Erased labels.** The person's folded name, aliases and external id are kept as keyed
  hashes (HMAC-SHA256 under the catalogue's own secret), never as text. A later label that
  names them (a manifest row, a folder name, an import row re-creating them) is refused and
  the photo listed for review, so re-indexing the same folder never gives the name to the
  bystander left in a group photo.
- **Redaction.** Audit entries whose query text mentions the person (name, alias, handle,
  external id or person id, folded as search folds them) lose the text, review notes that
  mention them are cleared (the photo lost their face) or redacted, and so are the reasons
  of recorded failures (a manifest row "already labelled 'Ann Lee'").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence

from ..entities import Erasure, PhotoRef
from ..errors import NotFound
from ..query.textfold import fold, search_forms
from .dialect import Sql, timestamp
from .person_text import TextSearch

__all__ = ["REDACTED", "Erasing", "new_token"]

#: What a redacted audit query text or review note says instead ({token}: the erasure).
REDACTED = "redacted at {token}: it named an erased person"

#: Terms shorter than this are not looked for in texts: a one-letter alias would redact all.
_MIN_TERM = 2


class Erasing:
    """`erase_person`, `erase_faces` and what they record, in both stores."""

    sql: Sql
    text: TextSearch
    _photos: Callable[[Iterable[int]], dict[int, PhotoRef]]
    _bump_epoch: Callable[[], None]
    _audit_event: Callable[..., None]
    forget_edits_of: Callable[[str], int]

    def erase_person(self, person_id: str, actor: str, unnamed: Sequence[int] = ()) -> Erasure:
        """Remove the person, their faces, those of `unnamed` that still have no person (and
        were not rejected from them), and photos left with no face, in one transaction.

        Their names and external id are kept as keyed hashes so no later label names them;
        audit query texts and review notes that mention them are redacted. The audit log gets
        one `erase` entry naming an opaque token, never the person.
        """
        with self.sql.write():
            if self.sql.scalar("SELECT 1 FROM person WHERE id = ?", (person_id,)) is None:
                raise NotFound(f"no person has the id {person_id!r}")
            faces = self.sql.firsts("SELECT id FROM face WHERE person_id = ?", (person_id,))
            extra = self.erasable_unnamed(person_id, unnamed)
            token = new_token("erase")
            terms = self._record_erased_labels(person_id, token)
            touched, emptied = self._delete_faces([*faces, *extra])
            self.text.delete(person_id)
            self.forget_edits_of(person_id)
            self.sql.execute("DELETE FROM person WHERE id = ?", (person_id,))
            self._redact_mentions(terms, token, touched)
            self._audit_event("erase", actor, token, len(faces) + len(extra), people=1)
        removed = tuple(sorted(int(i) for i in [*faces, *extra]))
        return Erasure(token, removed, emptied, people=1, unnamed=len(extra))

    def erase_faces(self, face_ids: Sequence[int], actor: str, kind: str) -> Erasure:
        """Remove these faces, and photos left with no face; audited as `kind` by token, with
        how many faces of how many named people."""
        ids = sorted({int(i) for i in face_ids})
        with self.sql.write():
            owners = self.sql.rows_in("SELECT id, person_id FROM face WHERE id IN ({marks})", ids)
            people = len({row[1] for row in owners if row[1] is not None})
            unnamed = sum(1 for row in owners if row[1] is None)
            _, emptied = self._delete_faces(ids)
            token = new_token(kind)
            self._audit_event(kind, actor, token, len(owners), people=people)
        removed = tuple(sorted(int(row[0]) for row in owners))
        return Erasure(token, removed, emptied, people=people, unnamed=unnamed)

    def erasable_unnamed(self, person_id: str, face_ids: Sequence[int]) -> list[int]:
        """Those of `face_ids` that have no person and were not rejected from this one."""
        rows = self.sql.rows_in(
            "SELECT id FROM face WHERE id NOT IN "
            "(SELECT face_id FROM face_rejection WHERE person_id = ?) "
            "AND person_id IS NULL AND id IN ({marks})",
            sorted({int(i) for i in face_ids}),
            before=(person_id,),
        )
        return sorted(int(row[0]) for row in rows)

    def _delete_faces(self, face_ids: list[int]) -> tuple[list[int], tuple[PhotoRef, ...]]:
        """Delete faces; returns the photos they were in, and those left with no face (also
        deleted)."""
        found = self.sql.rows_in("SELECT photo_id FROM face WHERE id IN ({marks})", face_ids)
        touched = sorted({r[0] for r in found})
        self.sql.execute_in("DELETE FROM face WHERE id IN ({marks})", face_ids)
        self.sql.execute_in(
            "UPDATE photo SET face_count = (SELECT count(*) FROM face "
            "WHERE face.photo_id = photo.id) WHERE id IN ({marks})",
            touched,
        )
        emptied = sorted(
            r[0]
            for r in self.sql.rows_in(
                "SELECT id FROM photo WHERE id IN ({marks}) AND face_count = 0", touched
            )
        )
        photos = self._photos(emptied)
        self.sql.execute_in("DELETE FROM photo WHERE id IN ({marks})", emptied)
        if face_ids:
            self._bump_epoch()
        return touched, tuple(photos[i] for i in emptied)

    def _identity(self, person_id: str) -> tuple[list[str], list[str], list[str]]:
        """The person's names (name and aliases), account handles and external ids."""
        names = self.sql.firsts("SELECT name FROM person WHERE id = ?", (person_id,))
        names += self.sql.firsts("SELECT name FROM alias WHERE person_id = ?", (person_id,))
        handles = self.sql.firsts("SELECT handle FROM account WHERE person_id = ?", (person_id,))
        external = self.sql.firsts(
            "SELECT external_id FROM person WHERE id = ? AND external_id IS NOT NULL",
            (person_id,),
        )
        return names, handles, external

    def _record_erased_labels(self, person_id: str, token: str) -> list[str]:
        """Keep keyed hashes of the person's names and external id (run before deleting
        them); returns every text that identifies them, for `_redact_mentions`."""
        names, handles, external = self._identity(person_id)
        secret = self._erase_secret(create=True)
        assert secret is not None
        keys = {_key(secret, "name", fold(n)) for n in names if fold(n)}
        keys |= {_key(secret, "id", e) for e in external}
        now = timestamp()
        self.sql.execute_many(
            "INSERT INTO erased_label (key, token, erased_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING",
            [(key, token, now) for key in sorted(keys)],
        )
        return [*names, *handles, *external, person_id]

    def _erased_label(self, label: str, person_id: str | None) -> str | None:
        """The token of the erasure that `label` (or the person it resolved to) names, if any."""
        secret = self._erase_secret(create=False)
        if secret is None:
            return None  # nobody was ever erased
        keys = {_key(secret, "name", fold(label))}
        if person_id is not None:
            names, _, external = self._identity(person_id)
            keys |= {_key(secret, "name", fold(n)) for n in names}
            keys |= {_key(secret, "id", e) for e in external}
        found = self.sql.rows_in(
            "SELECT token FROM erased_label WHERE key IN ({marks}) ORDER BY erased_at", keys
        )
        return str(found[0][0]) if found else None

    def _erase_secret(self, create: bool) -> str | None:
        secret = self.sql.scalar("SELECT secret FROM erase_secret WHERE id = 1")
        if secret is None and create:
            secret = secrets.token_hex(32)
            self.sql.execute("INSERT INTO erase_secret (id, secret) VALUES (1, ?)", (secret,))
        return None if secret is None else str(secret)

    def _redact_mentions(self, terms: Sequence[str], token: str, touched: Iterable[int]) -> None:
        """Redact audit query texts, review notes and failure reasons that mention one of
        `terms`; review notes of photos in `touched` (they lost an erased face) are cleared
        instead."""
        wanted = {form for term in terms for form in search_forms(term) if len(form) >= _MIN_TERM}
        if not wanted:
            return
        redacted = REDACTED.format(token=token)
        audit = self.sql.rows("SELECT id, query_text FROM audit WHERE query_text IS NOT NULL")
        hits = [(redacted, row[0]) for row in audit if _mentions(row[1], wanted)]
        self.sql.execute_many("UPDATE audit SET query_text = ? WHERE id = ?", hits)
        lost = set(touched)
        reviews = self.sql.rows("SELECT id, review FROM photo WHERE review IS NOT NULL")
        notes = [
            (None if row[0] in lost else redacted, row[0])
            for row in reviews
            if _mentions(row[1], wanted)
        ]
        self.sql.execute_many("UPDATE photo SET review = ? WHERE id = ?", notes)
        failures = self.sql.rows("SELECT path, reason FROM failure")
        reasons = [(redacted, row[0]) for row in failures if _mentions(row[1], wanted)]
        self.sql.execute_many("UPDATE failure SET reason = ? WHERE path = ?", reasons)


def new_token(kind: str) -> str:
    """A fresh opaque token naming one audited privacy event (`erase_…`, `optout_…`)."""
    return f"{kind}_{secrets.token_hex(8)}"


def _key(secret: str, kind: str, value: str) -> str:
    return hmac.new(secret.encode(), f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()


def _mentions(text: str, wanted: set[str]) -> bool:
    forms = search_forms(text)
    return any(term in form for term in wanted for form in forms)
