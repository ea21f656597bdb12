"""Seeing faces through the web app: every view is audited, and audited once.

A person's page or details, a list of clusters, a cluster, a face crop and a photo thumbnail
each show faces of people, so each view writes one audit entry (kind `view`) naming what was
seen (`person p_…`, `cluster 12`, `face 311`, `photo <sha256>`; never a name) and how many
faces it showed. The crops and thumbnails a view showed are remembered for the caller's key
(`Shown`), so the image requests of the page it rendered (or the client it answered) are not
audited a second time; a crop or thumbnail fetched by id that no audited view showed this key
is a view of its own. Searches are audited by the catalogue; the crops of their matches are
remembered the same way.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from fastapi import Request

from ..entities import StoredFace
from ..matching.search import SearchResult
from .auth import SESSION_SECONDS, Caller

__all__ = [
    "MAX_REMEMBERED",
    "Shown",
    "audit_fetch",
    "audit_view",
    "face_item",
    "photo_item",
    "remember_matches",
]

#: Crops and thumbnails remembered as shown, over every key (the oldest are forgotten first:
#: forgetting one only means its next fetch is audited again).
MAX_REMEMBERED = 200_000

#: A face's crop or a photo's thumbnail, as remembered.
Item = tuple[str, int | str]


def face_item(face_id: int) -> Item:
    """The crop of a face (whichever URL serves it)."""
    return ("face", face_id)


def photo_item(sha256: str) -> Item:
    """The thumbnails of a photo (any size)."""
    return ("photo", sha256)


class Shown:
    """Which crops and thumbnails an audited view showed each key, for as long as a page
    session lives."""

    def __init__(self, seconds: float = SESSION_SECONDS, limit: int = MAX_REMEMBERED) -> None:
        self.seconds, self.limit = seconds, limit
        self._until: OrderedDict[tuple[str, Item], float] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, key_id: str, items: Iterable[Item]) -> None:
        """`items` were shown to `key_id` now."""
        now = time.monotonic()
        with self._lock:
            for item in items:
                self._until[(key_id, item)] = now + self.seconds
                self._until.move_to_end((key_id, item))
            # Oldest first: drop what expired, then what is over the limit.
            while self._until and (
                len(self._until) > self.limit or next(iter(self._until.values())) <= now
            ):
                self._until.popitem(last=False)

    def was_shown(self, key_id: str, item: Item) -> bool:
        """Whether an audited view showed `item` to `key_id` lately."""
        with self._lock:
            until = self._until.get((key_id, item))
        return until is not None and until > time.monotonic()


def audit_view(
    request: Request,
    caller: Caller,
    what: str,
    faces: Sequence[StoredFace],
    *,
    thumbnails: bool = False,
) -> None:
    """Audit one view (`what` names it) showing `faces` to the caller; their crops (and with
    `thumbnails`, their photos' thumbnails, which the view links) count as shown."""
    state = request.app.state
    state.catalogue.record_view(what, len(faces), actor=caller.actor)
    items = [face_item(face.id) for face in faces]
    if thumbnails:
        items += [photo_item(face.photo.sha256) for face in faces]
    state.shown.remember(caller.key.id, items)


def audit_fetch(request: Request, caller: Caller, item: Item, what: str) -> None:
    """Audit fetching one crop or thumbnail (`what` names it), unless an audited view showed
    it to the caller's key already."""
    state = request.app.state
    if state.shown.was_shown(caller.key.id, item):
        return
    state.catalogue.record_view(what, 1, actor=caller.actor)
    state.shown.remember(caller.key.id, [item])


def remember_matches(request: Request, caller: Caller, result: SearchResult) -> None:
    """The crops of the faces an (audited) search answered with count as shown."""
    items = [
        face_item(hit.face_id)
        for face in result.faces
        for match in face.matches
        for hit in match.photos
    ]
    request.app.state.shown.remember(caller.key.id, items)
