"""Search by photo: every face of the query, matched against the catalogue, grouped by person.

For each query face the vector index gives every catalogue face within the threshold (a range
search, so a person with hundreds of photos gets all of them) plus the nearest faces beyond
it (near misses, shown as "no match"). Faces are grouped by person, best face first; unnamed
faces within the threshold form one group with no person. The JSON form is the versioned
contract `iddetective/search/v1`, documented in docs/contracts.md.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..entities import Box, PersonRef, PhotoAnalysis, PhotoRef, StoredFace
from ..store import Store
from ..vector_index import IndexDamaged, Neighbours, VectorIndex
from . import distances
from .calibration import Calibration, FmrEstimate

__all__ = [
    "SCHEMA_ID",
    "FaceResult",
    "PersonMatch",
    "PhotoHit",
    "SearchResult",
    "check_against_catalogue",
    "match_faces",
    "to_json",
]

SCHEMA_ID = "iddetective/search/v1"

#: Near misses are looked for among this many nearest faces per person asked for.
_CANDIDATES_PER_PERSON = 8


@dataclass(frozen=True)
class PhotoHit:
    """A catalogue face that supports a match, and the photo it is in."""

    face_id: int
    photo: PhotoRef
    box: Box
    distance: float


@dataclass(frozen=True)
class PersonMatch:
    """One person (or the group of unnamed faces) as a candidate for a query face."""

    person: PersonRef | None
    distance: float
    verdict: str
    photos: tuple[PhotoHit, ...]


@dataclass(frozen=True)
class FaceResult:
    """A face of the query photo and its candidates, best first."""

    box: Box
    score: float
    matches: tuple[PersonMatch, ...]

    @property
    def verdict(self) -> str:
        return "match" if any(m.verdict == "match" for m in self.matches) else "no_match"


@dataclass(frozen=True)
class SearchResult:
    """The answer to a search by photo."""

    path: str | None
    sha256: str
    width: int
    height: int
    model: str
    threshold: float
    faces: tuple[FaceResult, ...]
    #: The model's calibration table (None: nobody calibrated it), for rates in words.
    calibration: Calibration | None = field(default=None, repr=False, compare=False)

    def fmr_at(self, distance: float) -> FmrEstimate | None:
        """The estimated false-match rate of a distance, if the model is calibrated."""
        return self.calibration.fmr_at(distance) if self.calibration is not None else None

    @property
    def match_count(self) -> int:
        """Matches over all faces (a person or the unnamed group counts once per face)."""
        return sum(m.verdict == "match" for face in self.faces for m in face.matches)


def match_faces(
    store: Store,
    index: VectorIndex,
    analysis: PhotoAnalysis,
    *,
    threshold: float,
    top: int = 5,
    allowed: np.ndarray | None = None,
) -> list[FaceResult]:
    """Candidates for every face of `analysis`, faces in its order (largest first).

    `top` caps the people listed per face; `allowed` restricts the search to those face ids.
    """
    if not analysis.faces:
        return []
    queries = np.stack([face.embedding for face in analysis.faces])
    within = index.range_search(queries, threshold, allowed)
    nearest = index.search(queries, top * _CANDIDATES_PER_PERSON, allowed)
    wanted = {int(i) for hits in (*within, *nearest) for i in hits.ids}
    check_against_catalogue(store, queries, within + nearest, model=analysis.model)
    stored = store.faces(sorted(wanted))
    return [
        FaceResult(face.box, face.score, _group(inside, near, stored, top, threshold))
        for face, inside, near in zip(analysis.faces, within, nearest, strict=True)
    ]


def check_against_catalogue(
    store: Store,
    queries: np.ndarray,
    found: list[Neighbours],
    tolerance: float = 1e-3,
    *,
    model: str | None = None,
) -> None:
    """Raise `IndexDamaged` if any distance the index reported differs from the distance to
    the catalogue's own embedding of that face: the catalogue is the source of truth, and a
    damaged index must never be reported as a confident match. `found[i]` answers
    `queries[i % len(queries)]`. Faces removed since the index was read are skipped; given
    the index's `model`, a face of another model is damage too."""
    ids = np.concatenate([hits.ids for hits in found]).astype(np.int64)
    if not len(ids):
        return
    reported = np.concatenate([hits.distances for hits in found])
    owners = np.repeat(np.arange(len(found)) % len(queries), [len(hits) for hits in found])
    known, vectors = store.embeddings_of(np.unique(ids), model)
    rows = np.minimum(np.searchsorted(known, ids), max(len(known) - 1, 0))
    present = known[rows] == ids if len(known) else np.zeros(len(ids), bool)
    if model is not None and not present.all():
        _refuse_other_models(store, ids[~present], model)
    difference = vectors[rows[present]] - queries[owners[present]]
    actual = np.sqrt(np.einsum("ij,ij->i", difference, difference))
    wrong = np.flatnonzero(np.abs(actual - reported[present]) > tolerance)
    if len(wrong):
        first = wrong[0]
        raise IndexDamaged(
            f"the vector index reported face {ids[present][first]} at distance "
            f"{reported[present][first]:.4f}, but the catalogue's embedding of it is at "
            f"{actual[first]:.4f}"
        )


def _refuse_other_models(store: Store, absent: np.ndarray, model: str) -> None:
    """Raise `IndexDamaged` if faces the index of `model` reported, not found among that
    model's, are faces of another model (not removed since)."""
    others = store.faces(sorted({int(i) for i in absent}))
    if others:
        raise IndexDamaged(
            f"the vector index of the model {model!r} reported face {min(others)}, which is "
            "a face of another model"
        )


def _group(
    inside: Neighbours,
    near: Neighbours,
    stored: dict[int, StoredFace],
    top: int,
    threshold: float,
) -> tuple[PersonMatch, ...]:
    groups: dict[str | None, list[PhotoHit]] = defaultdict(list)
    people: dict[str | None, PersonRef | None] = {}
    seen: set[int] = set()
    for ids, dists in ((inside.ids, inside.distances), (near.ids, near.distances)):
        for face_id, distance in zip(ids.tolist(), dists.tolist(), strict=True):
            face = stored.get(face_id)
            if face is None or face_id in seen:
                continue  # removed since the index was read, or already counted
            if face.person is None and distance > threshold:
                continue  # unnamed faces beyond the threshold tell the user nothing
            seen.add(face_id)
            key = face.person.id if face.person else None
            people[key] = face.person
            groups[key].append(PhotoHit(face_id, face.photo, face.box, float(distance)))
    matches = [_person_match(people[key], hits, threshold) for key, hits in groups.items()]
    matches.sort(key=lambda m: m.distance)
    return tuple(matches[:top])


def _person_match(person: PersonRef | None, hits: list[PhotoHit], threshold: float) -> PersonMatch:
    hits.sort(key=lambda h: h.distance)
    best = hits[0].distance
    supporting = [h for h in hits if distances.is_match(h.distance, threshold)] or hits[:1]
    per_photo: dict[int, PhotoHit] = {}
    for hit in supporting:
        per_photo.setdefault(hit.photo.id, hit)
    return PersonMatch(person, best, distances.verdict(best, threshold), tuple(per_photo.values()))


def to_json(result: SearchResult) -> dict[str, Any]:
    """The result as the `iddetective/search/v1` JSON object."""
    return {
        "schema": SCHEMA_ID,
        "query": {
            "path": result.path,
            "sha256": result.sha256,
            "width": result.width,
            "height": result.height,
        },
        "model": result.model,
        "threshold": result.threshold,
        "faces": [_face_json(face, result) for face in result.faces],
    }


def _fmr_json(distance: float, result: SearchResult) -> dict[str, Any]:
    estimate = result.fmr_at(distance)
    if estimate is None:
        return {}  # the model has no calibration table: no rate to give
    return {"fmr": float(f"{estimate.fmr:.3g}"), "fmr_extrapolated": estimate.extrapolated}


def _face_json(face: FaceResult, result: SearchResult) -> dict[str, Any]:
    return {
        "box": face.box.as_dict(),
        "score": round(face.score, 4),
        "verdict": face.verdict,
        "matches": [
            {
                "person": {"id": m.person.id, "name": m.person.name} if m.person else None,
                "distance": round(m.distance, 4),
                **_fmr_json(m.distance, result),
                "verdict": m.verdict,
                "photos": [_hit_json(hit) for hit in m.photos],
            }
            for m in face.matches
        ],
    }


def _hit_json(hit: PhotoHit) -> dict[str, Any]:
    return {
        "sha256": hit.photo.sha256,
        "paths": list(hit.photo.paths),
        "face_id": hit.face_id,
        "box": hit.box.as_dict(),
        "distance": round(hit.distance, 4),
    }
