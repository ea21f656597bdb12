"""`iddetective eval`: the figures on hand-computable cases, and the command on a real set."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from iddetective.cli import main
from iddetective.errors import UsageError
from iddetective.evaluation.detection_study import (
    compare_detectors,
    parse_detector_settings,
    sample_photos,
)
from iddetective.evaluation.evaluate import (
    Distractors,
    EmbeddingCache,
    LabelledSet,
    PhotoFaces,
    all_pair_distances,
    detection_counts,
    distractor_faces,
    evaluate,
    identification,
    read_labelled_set,
    read_pairs,
    split_enrolment,
    verification,
)
from iddetective.faces.pipeline import PipelineSettings

from support.facesets import require_set

pytestmark = pytest.mark.faces

NAN = np.nan


# -- the figures by hand -------------------------------------------------------------------------
def test_verification_of_six_pairs_by_hand() -> None:
    dist = np.array([0.1, 0.2, 0.3, 0.4, 0.5, NAN])
    same = np.array([True, True, False, True, False, False])
    figures = verification(dist, same)
    assert (figures.genuine, figures.impostor, figures.missing) == (3, 3, 1)
    # Too few pairs for 10 folds, too few impostor pairs for a FAR of 1e-2 (300 needed).
    assert figures.accuracy is None and set(figures.tar.values()) == {None}


def test_verification_tar_at_far_by_hand() -> None:
    # 300 impostor pairs: at FAR 1e-2 three may pass (0.30, 0.35, 0.40), the fourth (0.90) not.
    impostor = np.array([0.30, 0.35, 0.40] + [0.90] * 297)
    genuine = np.array([0.2, 0.5, 0.85, 0.95, NAN])  # the missing face is a rejection
    dist = np.concatenate([genuine, impostor])
    same = np.arange(len(dist)) < len(genuine)
    figures = verification(dist, same)
    tar, threshold = figures.tar[1e-2] or (0.0, 0.0)
    assert tar == pytest.approx(3 / 5) and 0.85 < threshold < 0.9
    assert figures.tar[1e-3] is None  # 3,000 impostor pairs needed
    assert figures.accuracy is None  # 5 genuine pairs: fewer than 10 folds


def test_verification_kfold_accuracy_counts_a_missing_face_as_an_error() -> None:
    same = np.array([True] * 10 + [False] * 10)
    dist = np.where(same, 0.2, 0.8)
    dist[0] = NAN
    assert verification(dist, same).accuracy == (pytest.approx(0.95), pytest.approx(0.15))


def test_all_pair_distances_keep_the_pairs_of_a_missing_face() -> None:
    vectors = np.array([[1, 0], [0.6, 0.8], [0, 1], [NAN, NAN]], dtype=np.float32)
    dist, same = all_pair_distances(vectors, ["a", "a", "b", "b"])
    # Genuine: a-a (0.894), b-b (missing). Impostor: 4 pairs, 2 with the missing face.
    assert same.tolist() == [True, True, False, False, False, False]
    assert dist[:2] == pytest.approx([np.hypot(0.4, 0.8), NAN], nan_ok=True)
    assert dist[2:] == pytest.approx([np.hypot(0.6, 0.2), np.sqrt(2), NAN, NAN], nan_ok=True)


def test_split_enrolment_by_hand() -> None:
    enrolled, probes, unknown = split_enrolment(["a", "b", "a", "c", "a", "b"])
    assert (enrolled, probes, unknown) == ([0, 1], [2, 4, 5], [3])


# Three people in two dimensions: a at angle 0, b at 90 degrees, c at 180 (one photo: unknown).
def _unit(degrees: float) -> list[float]:
    return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]


PEOPLE = ["a", "b", "a", "a", "b", "c"]
VECTORS = np.array(
    [_unit(0), _unit(90), _unit(10), _unit(80), [NAN, NAN], _unit(180)], dtype=np.float32
)


def test_identification_by_hand() -> None:
    figures = identification(VECTORS, PEOPLE)
    counts = (figures.people, figures.faceless, figures.probes, figures.unknown_probes)
    assert counts == (2, 0, 3, 1)
    # Probes: a at 10 degrees (a nearest), a at 80 (b nearer: rank 2), b with no face (missed).
    assert figures.rank == {1: pytest.approx(1 / 3), 5: pytest.approx(2 / 3)}
    assert set(figures.dir.values()) == {None}  # one unknown probe: 30 needed for 1e-1


def test_identification_with_distractors_by_hand() -> None:
    # A distractor at 5 degrees comes nearer to the probe at 10 degrees than a (at 0) does.
    distractors = np.array([_unit(5)], dtype=np.float32)
    figures = identification(VECTORS, PEOPLE, distractors, ["distractor:0"])
    assert figures.distractor_faces == 1
    assert figures.rank == {1: 0.0, 5: pytest.approx(2 / 3)}


def test_identification_enrolling_the_single_photo_people_by_hand() -> None:
    # d has one photo, at 5 degrees: enrolled, it comes nearer to a's probe at 10 than a does.
    vectors = np.concatenate([VECTORS, np.array([_unit(5)], dtype=np.float32)])
    people = [*PEOPLE, "d"]
    assert identification(vectors, people).rank[1] == pytest.approx(1 / 3)
    figures = identification(vectors, people, enrol_single_photo_people=True)
    assert (figures.people, figures.distractor_faces, figures.unknown_probes) == (2, 2, 0)
    assert figures.rank == {1: 0.0, 5: pytest.approx(2 / 3)}
    assert set(figures.dir.values()) == {None}


def test_identification_enrols_no_faceless_single_photo_person() -> None:
    vectors = np.concatenate([VECTORS, np.full((1, 2), NAN, np.float32)])
    figures = identification(vectors, [*PEOPLE, "d"], enrol_single_photo_people=True)
    assert figures.distractor_faces == 1  # c; d has no face to enrol


def test_identification_dir_by_hand() -> None:
    # 30 unknown probes, 3 of them (10 %) may match: the nearest is 0.1 from a, the fourth 0.5.
    unknown = [_unit(angle) for angle in [-6, -12, -18, -29] + [-60] * 26]
    vectors = np.array([_unit(0), _unit(3), _unit(25), *unknown], dtype=np.float32)
    people = ["a", "a", "a", *(f"u{i}" for i in range(30))]
    figures = identification(vectors, people)
    rate, threshold = figures.dir[1e-1] or (0.0, 0.0)
    # Threshold just under the 4th unknown (2 sin(14.5 deg) = 0.501): the probe at 3 degrees
    # (0.052) is identified, the one at 25 degrees (0.433) too; both are rank 1.
    assert rate == 1.0 and 0.433 < threshold < 0.501
    assert figures.dir[1e-2] is None


def _photo(*vectors: list[float], labelled: int = 0, error: str = "") -> PhotoFaces:
    array = np.array(vectors, dtype=np.float32).reshape(-1, 2)
    return PhotoFaces("", array, labelled if len(array) else -1, error)


def test_detection_counts_by_hand() -> None:
    photos = [_photo([1, 0]), _photo(), _photo([1, 0], [0, 1]), _photo(error="not an image")]
    counts = detection_counts(["p1", "p2", "p3", "p4"], photos)
    assert counts.photos == 4 and counts.no_face == ("p2",) and counts.several_faces == 1
    assert counts.unusable == (("p4", "not an image"),)


def test_distractor_faces_from_a_folder_or_labels() -> None:
    photos = [_photo([1, 0], [0, 1], labelled=1), _photo()]
    folder = Distractors("dir", ("x.jpg", "y.jpg"), None)
    faces, people = distractor_faces(folder, photos, 2)
    assert faces.tolist() == [[1, 0], [0, 1]] and len(set(people)) == 2  # every face, apart
    labelled = Distractors("labels.csv", ("x.jpg", "y.jpg"), ("distractor:p", "distractor:q"))
    faces, people = distractor_faces(labelled, photos, 2)
    assert faces.tolist() == [[0, 1]] and people == ["distractor:p"]  # the labelled face


# -- reading the inputs --------------------------------------------------------------------------
def test_bad_labels_and_pairs_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,person\na.jpg,anna\nmissing.jpg,bob\n")
    with pytest.raises(UsageError, match="1 rows cannot be used"):
        read_labelled_set(str(labels))
    labels.write_text("path,person\na.jpg,anna\n")
    labelled = read_labelled_set(str(labels))
    assert labelled == LabelledSet(str(labels), (str(tmp_path / "a.jpg"),), ("anna",))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("path_a,path_b,same\na.jpg,other.jpg,1\n")
    with pytest.raises(UsageError, match="line 2"):
        read_pairs(str(pairs), labelled)


def test_detector_settings_parse_with_the_rest_of_the_pipeline() -> None:
    base = PipelineSettings(max_side=800, fallback_detector="dlib-cnn")
    found = parse_detector_settings("hog:0, cnn:1,hog:0,dlib-hog:2", base)
    assert [(s.detector, s.upsample) for s in found] == [
        ("dlib-hog", 0),
        ("dlib-cnn", 1),
        ("dlib-hog", 2),
    ]
    assert {(s.max_side, s.fallback_detector) for s in found} == {(800, None)}


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("sift:1", "unknown detector 'sift'"),
        ("hog", "'hog' needs an upsample count from 0 to 3"),
        ("hog:1,cnn:9", "'cnn:9' needs an upsample count"),
        ("hog:-1", "'hog:-1' needs an upsample count"),
    ],
)
def test_bad_detector_settings_say_which_part(spec: str, says: str) -> None:
    with pytest.raises(UsageError, match=re.escape(says)):
        parse_detector_settings(spec, PipelineSettings())


def test_detector_sample_is_the_same_every_run() -> None:
    paths = [f"p{i}.jpg" for i in range(50)]
    first = sample_photos(paths, 10)
    assert first == sample_photos(paths, 10) and len(set(first)) == 10
    assert set(first) <= set(paths) and sample_photos(paths, 80) == paths


def test_embedding_cache_round_trip(tmp_path: Path) -> None:
    settings = PipelineSettings()
    cache = EmbeddingCache(tmp_path, "model-x", settings)
    cache.put(PhotoFaces("ab" * 32, np.array([[1, 2], [3, 4]], np.float32), 1))
    cache.close()
    cache = EmbeddingCache(tmp_path, "model-x", settings)
    found = cache.get("ab" * 32)
    assert found is not None and found.vectors.tolist() == [[1, 2], [3, 4]] and found.labelled == 1
    assert cache.get("cd" * 32) is None
    cache.close()
    other_model = EmbeddingCache(tmp_path, "model-y", settings)
    assert other_model.get("ab" * 32) is None
    other_model.close()


# -- the command on a real set -------------------------------------------------------------------
@pytest.fixture(scope="session")
def eval_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embeddings cache for the session: each set is embedded once."""
    return tmp_path_factory.mktemp("eval-cache")


@pytest.fixture(scope="module")
def fr_report(eval_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`iddetective eval` on face_recognition with orl_att's photos as distractors."""
    folder = require_set("face_recognition")
    distractors = require_set("orl_att") / "images"
    report = tmp_path_factory.mktemp("eval") / "report"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            str(folder / "labels.csv"),
            "--pairs",
            str(folder / "pairs.csv"),
            "--distractors",
            str(distractors),
            "--report",
            str(report),
            "--workers",
            "2",
            "--cache",
            str(eval_cache),
            "--detectors",
            "hog:0,hog:1",
            "--detector-sample",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "216 photos embedded" in result.stderr
    return report


@pytest.mark.slow
def test_eval_writes_the_report_and_plots(fr_report: Path) -> None:
    text = (fr_report / "report.md").read_text()
    assert "# Evaluation: face_recognition" in text and "`iddetective eval " in text
    for heading in ("Detection", "Verification", "Closed-set", "Open-set", "Plots"):
        assert f"## {heading}" in text
    assert "| model | dlib-resnet-v1 " in text
    assert re.search(r"\| 10-fold accuracy .*\| 100\.00 % ± 0\.00 \|", text)
    assert "not enough pairs (102 impostor; 300 needed)" in text
    assert "### Detector settings compared" in text and "on 8 photos chosen at random" in text
    # Every face_recognition photo has a face HOG finds at upsample 1 (and at 0: big faces).
    assert re.search(r"\| hog:0 \| 0 \(0\.00 %\) \| 0 \| 0 \| \d\.\d{3} / ", text)
    assert re.search(r"\| hog:1 \| 0 \(0\.00 %\) \| 0 \| 0 \| \d\.\d{3} / ", text)
    # One person has a single photo: enrolled too in the last closed-set column.
    assert "| figure | without distractors | with distractors | single-photo people" in text
    for plot in ("roc.png", "distances.png"):
        with Image.open(fr_report / plot) as image:
            assert image.format == "PNG" and image.width > 300


@pytest.mark.slow
def test_eval_figures_through_the_library(fr_report: Path, eval_cache: Path) -> None:
    folder = require_set("face_recognition")
    found = evaluate(
        str(folder / "labels.csv"),
        str(folder / "pairs.csv"),
        str(require_set("orl_att") / "images"),
        cache_dir=eval_cache,
    )
    # Everything comes from the cache the command filled.
    assert found.embedding.embedded == 0 and found.embedding.from_cache == 216
    # Measured: a face in each of the 16 photos, one each; 10-fold accuracy 1.0 on the 120
    # pairs; rank-1 and rank-5 1.0 (10 probes of 5 people) without and with orl_att's 200
    # photos as distractors, 192 of which have a face found; 1 unknown probe (too few for DIR).
    assert found.detection.no_face == () and found.detection.several_faces == 0
    assert found.on_pairs is not None and found.on_pairs.accuracy == (1.0, 0.0)
    assert found.identification.rank == {1: 1.0, 5: 1.0}
    assert found.identification.dir == {1e-2: None, 1e-1: None}
    assert found.with_distractors is not None
    assert 185 <= found.with_distractors.distractor_faces <= 200
    assert found.with_distractors.rank[1] >= 0.9 and found.with_distractors.rank[5] == 1.0
    singles = found.with_single_photo_people
    assert singles is not None and singles.distractor_faces == 1 and singles.rank[1] == 1.0


@pytest.mark.slow
def test_detector_comparison_agrees_with_the_pipeline(fr_report: Path) -> None:
    folder = require_set("face_recognition")
    paths = read_labelled_set(str(folder / "labels.csv")).paths
    (trial,) = compare_detectors(paths, parse_detector_settings("hog:1", PipelineSettings()))
    # The pipeline's own detector setting: the same photos as the embedding run found.
    assert (trial.photos, trial.no_face, trial.several_faces, trial.unusable) == (16, 0, 0, 0)
    assert 0 < trial.median_seconds <= trial.mean_seconds * 3 and trial.label == "hog:1"


@pytest.mark.slow
def test_eval_prints_the_tables_and_reuses_the_cache(fr_report: Path, eval_cache: Path) -> None:
    folder = require_set("face_recognition")
    result = CliRunner().invoke(
        main, ["eval", str(folder / "labels.csv"), "--cache", str(eval_cache)]
    )
    assert result.exit_code == 0, result.output
    assert "0 photos embedded" in result.stderr and "16 from the cache" in result.stderr
    assert "| rank-1 | 100.00 % |" in result.stdout
    assert "## Plots" not in result.stdout


def test_eval_of_a_missing_labels_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["eval", str(tmp_path / "nope.csv"), "--cache", str(tmp_path / "cache")]
    )
    assert result.exit_code == 2
    # (The shared progress bar writes an empty line when stderr is not a terminal.)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "does not exist" in line
