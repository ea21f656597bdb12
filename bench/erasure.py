"""How far from an erased person's faces an unnamed face may be and still be erased with them,
and what opting out all of a person's faces costs other people (docs/privacy.md).

On a labelled set (default lfw_dev; bench/threshold.py's cached embeddings, one labelled face
per photo), every person with at least two photos is erased in turn: the first half of their
photos (rounded up) are their named faces, the rest are their unnamed faces, and every photo
of everyone else is an unnamed face of a stranger. For each distance it prints:

* **caught**: the share of the person's unnamed faces within that distance of one of their
  named faces (what erasing them removes, as it should);
* **strangers per erasure**: strangers' faces within it of one of the named faces (removed
  by mistake), on average per erasure, and per 1,000 unnamed faces in the catalogue;
* **erasures with a stranger**: the share of erasures that remove at least one.

A second table does the same for opt-outs at `OPTOUT_THRESHOLD`: one opt-out entry (the
person's first photo, what `optout add` takes) against one entry per named face (what
`erase --optout` adds).

    python bench/erasure.py               # lfw_dev
    python bench/erasure.py --sets lfw_dev deepface
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from iddetective.matching import distances
from iddetective.matching.calibration import calibration_for

from threshold import LabelledSet, embed_set, faces_root

#: dlib's shipped thresholds (matching/calibration/dlib-resnet-v1.json).
DLIB = calibration_for("dlib-resnet-v1").thresholds

DISTANCES = (0.30, 0.33, 0.35, DLIB.match, DLIB.optout)


def people_with_faces(labelled: LabelledSet, vectors: np.ndarray) -> dict[str, list[int]]:
    """Rows (photos with a face) of each person with at least two of them."""
    rows: dict[str, list[int]] = defaultdict(list)
    for row, person in enumerate(labelled.people):
        if not np.isnan(vectors[row, 0]):
            rows[person].append(row)
    return {person: found for person, found in rows.items() if len(found) >= 2}


def nearest_named(
    vectors: np.ndarray, faced: np.ndarray, named: list[int], limit: int = 4096
) -> np.ndarray:
    """For every photo with a face: its distance to the nearest of `named`."""
    nearest = np.full(len(vectors), np.inf, np.float32)
    for start in range(0, len(named), limit):
        chunk = named[start : start + limit]
        found = distances.euclidean_many(vectors[faced], vectors[chunk]).min(axis=1)
        nearest[faced] = np.minimum(nearest[faced], found)
    return nearest


def erasure_table(labelled: LabelledSet, vectors: np.ndarray) -> str:
    people = people_with_faces(labelled, vectors)
    faced = np.flatnonzero(~np.isnan(vectors[:, 0]))
    owner = np.array(labelled.people)
    caught = {d: 0 for d in DISTANCES}
    strangers = {d: 0 for d in DISTANCES}
    touched = {d: 0 for d in DISTANCES}
    unnamed_own = 0
    for person, rows in people.items():
        half = (len(rows) + 1) // 2
        named, own = rows[:half], rows[half:]
        nearest = nearest_named(vectors, faced, named)
        others = nearest[faced][owner[faced] != person]
        unnamed_own += len(own)
        for d in DISTANCES:
            caught[d] += int((nearest[own] <= d).sum())
            hits = int((others <= d).sum())
            strangers[d] += hits
            touched[d] += hits > 0
    pool = len(faced) - np.mean([len(r) for r in people.values()])
    lines = [
        f"{labelled.name}: {len(people)} people erased in turn (named: first half of their "
        f"photos; {unnamed_own} unnamed faces of theirs in all), "
        f"~{pool:.0f} strangers' unnamed faces",
        "",
        "| distance | caught | strangers per erasure | per 1,000 unnamed faces "
        "| erasures with a stranger |",
        "|---|---|---|---|---|",
    ]
    for d in DISTANCES:
        per = strangers[d] / len(people)
        lines.append(
            f"| {d:.3f} | {caught[d] / unnamed_own:.1%} | {per:.2f} | {1000 * per / pool:.2f} "
            f"| {touched[d] / len(people):.1%} |"
        )
    return "\n".join(lines)


def optout_table(labelled: LabelledSet, vectors: np.ndarray) -> str:
    people = people_with_faces(labelled, vectors)
    faced = np.flatnonzero(~np.isnan(vectors[:, 0]))
    owner = np.array(labelled.people)
    radius = DLIB.optout
    lines = [
        f"{labelled.name}: opt-outs at {radius} ({len(people)} people)",
        "",
        "| entries | their other photos blocked | strangers blocked per 1,000 |",
        "|---|---|---|",
    ]
    for label, count in (("one photo (`optout add`)", 1), ("every named face", None)):
        blocked = own_total = strangers = pool = 0
        for person, rows in people.items():
            half = (len(rows) + 1) // 2
            named = rows[:half] if count is None else rows[:count]
            own = [r for r in rows if r not in named]
            nearest = nearest_named(vectors, faced, named)
            blocked += int((nearest[own] <= radius).sum())
            own_total += len(own)
            others = nearest[faced][owner[faced] != person]
            strangers += int((others <= radius).sum())
            pool += len(others)
        lines.append(f"| {label} | {blocked / own_total:.1%} | {1000 * strangers / pool:.2f} |")
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["lfw_dev"])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    for name in args.sets:
        labelled = LabelledSet.load(faces_root(), name)
        vectors = embed_set(labelled, args.workers).normalised
        print(erasure_table(labelled, vectors), end="\n\n")
        print(optout_table(labelled, vectors), end="\n\n")


if __name__ == "__main__":
    main()
