"""Search by photo on the labelled dev sets: enrol one photo per person, search with the rest.

The shares asserted here were measured with the default pipeline and threshold (see
docs/pipeline.md, "Accuracy in the tests"); each bound sits a little under the measured
figure so a real regression fails while the figure itself is not hard-coded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from iddetective.catalogue import Catalogue
from iddetective.faces.labelling import choose_labelled_face
from iddetective.matching.search import SearchResult, to_json
from iddetective.schemas import search_schema

from support.facesets import Labelled, lfw_subset, read_labels, require_set, split_enrol_probe

pytestmark = pytest.mark.faces

Build = Callable[[str, list[Labelled], list[str]], Path]


def labelled_face_result(result: SearchResult) -> tuple[str | None, bool]:
    """(best person's name, is it a match) for the photo's labelled face."""
    if not result.faces:
        return None, False
    chosen = result.faces[
        choose_labelled_face([f.box for f in result.faces], result.width, result.height)
    ]
    if not chosen.matches or chosen.matches[0].person is None:
        return None, False
    best = chosen.matches[0]
    return best.person.name if best.person else None, best.verdict == "match"


def shares(catalogue: Catalogue, probes: list[Labelled]) -> tuple[float, float]:
    """(rank-1 share, share whose rank-1 is the right person and within the threshold)."""
    first = matched = 0
    for probe in probes:
        name, is_match = labelled_face_result(catalogue.search_photo(probe.path))
        first += name == probe.person
        matched += name == probe.person and is_match
    return first / len(probes), matched / len(probes)


def no_match_share(catalogue: Catalogue, strangers: list[str]) -> float:
    """Share of photos of people not enrolled whose labelled face matches nobody named."""
    quiet = 0
    for path in strangers:
        result = catalogue.search_photo(path)
        _, is_match = labelled_face_result(result)
        quiet += not is_match
    return quiet / len(strangers)


def test_face_recognition_set(built_catalogue: Build) -> None:
    folder = require_set("face_recognition")
    rows = read_labels(folder)
    known = [r for r in rows if r.person != "lin_manuel_miranda"]
    enrol, probes = split_enrol_probe(known)
    data = built_catalogue("face_recognition", enrol, [])
    with Catalogue(data) as catalogue:
        rank1, matched = shares(catalogue, probes)
        # Measured: 1.00 / 1.00 over 9 probes of 5 people.
        assert rank1 == 1.0 and matched == 1.0
        stranger = [r.path for r in rows if r.person == "lin_manuel_miranda"]
        assert no_match_share(catalogue, stranger) == 1.0


@pytest.mark.parametrize(
    ("photo", "people"),
    [
        ("obama_and_biden.jpg", {"obama", "biden"}),
        ("kit_with_rose.jpg", {"kit_harington", "rose_leslie"}),
    ],
)
def test_two_person_photo_gives_both_people(
    built_catalogue: Build, photo: str, people: set[str]
) -> None:
    folder = require_set("face_recognition")
    enrol, _ = split_enrol_probe(read_labels(folder))
    data = built_catalogue("face_recognition_all", enrol, [])
    with Catalogue(data) as catalogue:
        result = catalogue.search_photo(str(folder / "images" / "multi" / photo))
    matched = [
        f.matches[0].person.name
        for f in result.faces
        if f.verdict == "match" and f.matches[0].person
    ]
    assert sorted(matched) == sorted(people)
    areas = [f.box.area for f in result.faces]
    assert areas == sorted(areas, reverse=True)
    jsonschema.validate(to_json(result), search_schema())


@pytest.mark.parametrize(
    ("name", "min_rank1", "min_matched"),
    [
        # Measured: rank-1 0.95, matched 0.95 over 160 probes of 40 people (tiny 92x112 photos).
        ("orl_att", 0.92, 0.92),
        # Measured: rank-1 1.00, matched 0.98 over 48 probes of 13 people (large photos).
        ("deepface", 0.95, 0.93),
    ],
)
def test_one_face_sets(
    built_catalogue: Build, name: str, min_rank1: float, min_matched: float
) -> None:
    enrol, probes = split_enrol_probe(read_labels(require_set(name)))
    data = built_catalogue(name, enrol, [])
    with Catalogue(data) as catalogue:
        rank1, matched = shares(catalogue, probes)
    assert rank1 >= min_rank1 and matched >= min_matched


def test_lfw_subset_with_distractors(built_catalogue: Build) -> None:
    subset = lfw_subset()
    probes, strangers = subset.probes, subset.strangers
    data = built_catalogue("lfw_dev", subset.enrol + subset.distractors, [])
    with Catalogue(data) as catalogue:
        rank1, matched = shares(catalogue, probes)
        quiet = no_match_share(catalogue, [s.path for s in strangers])
    # Measured: rank-1 0.90, matched 0.83 over 150 probes of 50 people among 200 enrolled;
    # 0.84 of 50 people not enrolled got "no match" (the threshold lets 1 in 1,000 impostor
    # comparisons match, so with 200 people enrolled about 1 search in 6 finds a false match:
    # the open-set problem the accuracy issue calibrates).
    assert rank1 >= 0.86 and matched >= 0.78
    assert quiet >= 0.78
