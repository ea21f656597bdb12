"""`iddetective eval`: measure accuracy on your own labelled photos.

The shipped calibration and the figures in docs/accuracy.md come from news photos of public
figures; a catalogue of a school, a family or another region may differ. This module embeds
every photo of a labels CSV once through the product pipeline (`pipeline_for`), takes the face
the label belongs to as the catalogue does (`choose_labelled_face`), and reports verification
(pairs.csv, 10-fold accuracy as in the LFW protocol; TAR at FAR), closed-set identification
(rank-1, rank-5, optionally against distractors), open-set identification (DIR at a
false-alarm rate) and detection failures, as Markdown tables and two plots.

Embeddings are cached by the photo's SHA-256, the model and the pipeline settings in one
SQLite file, so a second run embeds nothing. A photo where no face is found is never a match:
it is an error in every figure and is listed on its own. The figures themselves are pure
functions of arrays (`verification`, `identification`, `detection_counts`) over
evaluation/metrics.py.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..entities import FailedPhoto, IndexedPhoto, Outcome
from ..errors import BadImage, UsageError
from ..faces.imaging import open_photo_file
from ..faces.labelling import choose_labelled_face
from ..faces.pipeline import PipelineSettings, pipeline_for, prepared
from ..ingest.indexing import CRASHED, PHOTOS_AT_ONCE, analyse_file, analyse_files
from ..matching import distances
from ..processes.pool import map_in_processes
from ..settings import default_cache_dir
from ..sources.paths import PhotoJob, plan_sources, read_manifest
from .detection_study import DetectorTrial, compare_detectors, sample_photos
from .metrics import (
    FOLDS,
    all_pairs,
    dir_at_fpir,
    enough_trials,
    identification_ranks,
    kfold_accuracy,
    missing_pairs,
    tar_at_far,
)

__all__ = [
    "FARS",
    "FPIRS",
    "RANKS",
    "DetectionCounts",
    "Distractors",
    "EmbeddingCache",
    "EmbeddingRun",
    "Evaluation",
    "Identification",
    "LabelledSet",
    "Pairs",
    "PhotoFaces",
    "Verification",
    "all_pair_distances",
    "analyse_photo",
    "detection_counts",
    "distractor_faces",
    "embed_photos",
    "evaluate",
    "identification",
    "labelled_vectors",
    "pair_distances",
    "read_distractors",
    "read_labelled_set",
    "read_pairs",
    "split_enrolment",
    "verification",
    "with_detector_trials",
]

#: False-accept rates at which verification reports the true-accept rate.
FARS = (1e-2, 1e-3, 1e-4)
#: False-alarm rates (share of unknown probes matched to someone) for open-set search.
FPIRS = (1e-2, 1e-1)
#: Ranks of closed-set identification.
RANKS = (1, 5)
#: Photos with no face found listed by name in the report (the count is always given).
LISTED_PHOTOS = 100

Progress = Callable[[int, int], None]


# -- inputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelledSet:
    """Labelled photos in the file's order: absolute paths and who each one shows."""

    source: str
    paths: tuple[str, ...]
    people: tuple[str, ...]

    @property
    def folder(self) -> Path:
        """The folder of the labels file, which its paths are relative to."""
        return Path(self.source).resolve().parent


@dataclass(frozen=True)
class Pairs:
    """Pairs to verify, as indexes into a labelled set, and whether each shows one person."""

    source: str
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray


@dataclass(frozen=True)
class Distractors:
    """Photos of other people enrolled besides the set's: labelled (a CSV) or not (a folder,
    where every face is a person of its own)."""

    source: str
    paths: tuple[str, ...]
    people: tuple[str, ...] | None


def read_labelled_set(labels: str) -> LabelledSet:
    """The photos of a `path,person` CSV (or JSONL) manifest; `UsageError` for any bad row."""
    found, problems = read_manifest(labels)
    if problems:
        first = problems[0]
        raise UsageError(
            f"{labels}: {len(problems)} rows cannot be used, the first: "
            f"{first.file.path}: {first.reason}"
        )
    if not found:
        raise UsageError(f"{labels}: no labelled photos")
    return LabelledSet(labels, tuple(found), tuple(found.values()))


def read_pairs(pairs: str, labelled: LabelledSet) -> Pairs:
    """A `path_a,path_b,same` CSV (paths relative to it, each in the labelled set; same 1/0)."""
    try:
        with open(pairs, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"pairs file {pairs}: cannot read it ({error})") from None
    base = Path(pairs).resolve().parent
    index = {path: i for i, path in enumerate(labelled.paths)}
    first, second, same = [], [], []
    for line, row in enumerate(rows, start=2):
        a, b, flag = (row.get(key) or "" for key in ("path_a", "path_b", "same"))
        ends = [index.get(os.path.abspath(base / path)) for path in (a, b)]
        if None in ends or flag.strip() not in ("0", "1"):
            raise UsageError(
                f"pairs file {pairs} line {line}: needs path_a and path_b listed in "
                f"{labelled.source} and same 1 or 0"
            )
        first.append(ends[0])
        second.append(ends[1])
        same.append(flag.strip() == "1")
    return Pairs(pairs, np.array(first, int), np.array(second, int), np.array(same, bool))


def read_distractors(source: str) -> Distractors:
    """Distractors from a folder of photos (scanned recursively) or a labels CSV."""
    if os.path.isdir(source):
        paths = tuple(job.path for job in plan_sources([source]).jobs)
        if not paths:
            raise UsageError(f"distractors {source}: no photos in this folder")
        return Distractors(source, paths, None)
    labelled = read_labelled_set(source)
    # Kept apart from the set's people even where a name is the same.
    return Distractors(source, labelled.paths, tuple(f"distractor:{p}" for p in labelled.people))


# -- embedding -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoFaces:
    """What the pipeline found in one photo: every face's embedding (largest first) and which
    one its label names; `error` says why a photo could not be used (it then has no face)."""

    sha256: str
    vectors: np.ndarray = field(repr=False, compare=False)
    labelled: int = -1
    error: str = ""

    @property
    def faces(self) -> int:
        """Faces found."""
        return len(self.vectors)


class EmbeddingCache:
    """Faces of photos by SHA-256, model and pipeline settings, in `embeddings.sqlite`."""

    FILE = "embeddings.sqlite"

    def __init__(self, folder: Path, model: str, settings: PipelineSettings) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(folder / self.FILE, timeout=60)
            self.connection.execute(
                "CREATE TABLE IF NOT EXISTS faces (sha256 TEXT, model TEXT, pipeline TEXT,"
                " dimension INTEGER, vectors BLOB, labelled INTEGER, error TEXT,"
                " PRIMARY KEY (sha256, model, pipeline))"
            )
        except (OSError, sqlite3.Error) as error:
            raise UsageError(f"embedding cache {folder}: cannot use it ({error})") from None
        self.path = folder / self.FILE
        self.key = (model, repr(settings))

    def get(self, sha256: str) -> PhotoFaces | None:
        """The cached faces of these bytes, or None."""
        row = self.connection.execute(
            "SELECT dimension, vectors, labelled, error FROM faces"
            " WHERE sha256 = ? AND model = ? AND pipeline = ?",
            (sha256, *self.key),
        ).fetchone()
        if row is None:
            return None
        vectors = np.frombuffer(row[1], np.float32).reshape(-1, row[0])
        return PhotoFaces(sha256, vectors, row[2], row[3])

    def put(self, photo: PhotoFaces) -> None:
        """Keep one photo's faces (committed by `commit`)."""
        self.connection.execute(
            "INSERT OR REPLACE INTO faces VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                photo.sha256,
                *self.key,
                photo.vectors.shape[1],
                np.ascontiguousarray(photo.vectors, np.float32).tobytes(),
                photo.labelled,
                photo.error,
            ),
        )

    def commit(self) -> None:
        """Write what was put so far."""
        self.connection.commit()

    def close(self) -> None:
        """Commit and close the file."""
        self.connection.commit()
        self.connection.close()


@dataclass(frozen=True)
class EmbeddingRun:
    """The faces of each photo asked for, and how they were had."""

    photos: tuple[PhotoFaces, ...]
    from_cache: int
    embedded: int
    seconds: float
    model: str
    settings: PipelineSettings
    cache: Path


def embed_photos(
    paths: Sequence[str],
    workers: int = 1,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    settings: PipelineSettings | None = None,
) -> EmbeddingRun:
    """Every photo's faces, from the cache or through the pipeline in `workers` processes.

    Photos that could not be used are not cached: they are tried again on the next run.
    """
    settings = settings or PipelineSettings()
    model = pipeline_for(settings).model
    started = time.monotonic()
    cache = EmbeddingCache(cache_dir or default_cache_dir({}), model, settings)
    try:
        found, pending = _cached(paths, cache)
        total, done = len(paths), len(paths) - sum(map(len, pending.values()))
        _report(progress, done, total)
        keys = list(pending)
        jobs = [paths[pending[key][0]] for key in keys]
        analysed = _analysed(jobs, workers, settings)
        for number, photo in analysed:
            if photo.sha256 and photo.sha256 == keys[number]:
                cache.put(photo)
            for i in pending[keys[number]]:
                found[i] = photo
            done += len(pending[keys[number]])
            _report(progress, done, total)
            if number % 32 == 31:
                cache.commit()  # an interrupted run keeps what it embedded
    finally:
        cache.close()
    photos = tuple(photo for photo in found if photo is not None)
    seconds = time.monotonic() - started
    return EmbeddingRun(photos, total - len(jobs), len(jobs), seconds, model, settings, cache.path)


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _cached(
    paths: Sequence[str], cache: EmbeddingCache
) -> tuple[list[PhotoFaces | None], dict[str, list[int]]]:
    """Photos found in the cache, and the others by SHA-256 (by path when unreadable here)."""
    found: list[PhotoFaces | None] = [None] * len(paths)
    pending: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        sha256 = _sha256_of(path)
        cached = cache.get(sha256) if sha256 else None
        if cached is not None:
            found[i] = cached
        else:
            pending.setdefault(sha256 or f"unreadable:{path}", []).append(i)
    return found, pending


def _sha256_of(path: str) -> str:
    try:
        with open_photo_file(path) as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except (OSError, BadImage):
        return ""  # the pipeline's reading says why


def _analysed(
    paths: Sequence[str], workers: int, settings: PipelineSettings
) -> Iterator[tuple[int, PhotoFaces]]:
    """(position, faces) of every photo as it is done: in `workers` processes (the
    embedder made ready here first, once), or in this one `PHOTOS_AT_ONCE` at a time."""
    if workers > 1 and len(paths) > 1:
        crashed = functools.partial(_crashed_photo, settings)
        yield from map_in_processes(
            analyse_photo, paths, workers, prepared(settings), crashed=crashed
        )
        return
    for start in range(0, len(paths), PHOTOS_AT_ONCE):
        jobs = [PhotoJob(path) for path in paths[start : start + PHOTOS_AT_ONCE]]
        for offset, outcome in enumerate(analyse_files(jobs, settings)):
            yield start + offset, _photo_faces(outcome, settings)


def analyse_photo(path: str, settings: PipelineSettings) -> PhotoFaces:
    """One photo's faces as the catalogue would find them (read, decode, detect, embed)."""
    return _photo_faces(analyse_file(PhotoJob(path), settings), settings)


def _photo_faces(outcome: Outcome, settings: PipelineSettings) -> PhotoFaces:
    """What evaluation keeps of an analysed file: its faces' vectors, which one is labelled."""
    dimension = pipeline_for(settings).embedder.dimension
    if isinstance(outcome, FailedPhoto):
        return PhotoFaces("", np.zeros((0, dimension), np.float32), -1, outcome.reason)
    assert isinstance(outcome, IndexedPhoto)  # without a "known photo" check, never KnownPhoto
    analysis = outcome.analysis
    if not analysis.faces:
        return PhotoFaces(outcome.sha256, np.zeros((0, dimension), np.float32))
    boxes = [face.box for face in analysis.faces]
    labelled = choose_labelled_face(boxes, analysis.width, analysis.height)
    vectors = np.stack([np.asarray(face.embedding, np.float32) for face in analysis.faces])
    return PhotoFaces(outcome.sha256, vectors, labelled)


def _crashed_photo(settings: PipelineSettings, path: str) -> PhotoFaces:
    """What a photo whose analysis killed its worker process is: unusable, with why."""
    dimension = pipeline_for(settings).embedder.dimension
    return PhotoFaces("", np.zeros((0, dimension), np.float32), -1, CRASHED)


# -- figures -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionCounts:
    """Photos with no face found (`no_face`: their paths), several faces, or unusable."""

    photos: int
    no_face: tuple[str, ...]
    several_faces: int
    unusable: tuple[tuple[str, str], ...]  # (path, reason)


def detection_counts(paths: Sequence[str], photos: Sequence[PhotoFaces]) -> DetectionCounts:
    """How many of these photos had no face found, several faces, or could not be used."""
    pairs = list(zip(paths, photos, strict=True))
    return DetectionCounts(
        photos=len(pairs),
        no_face=tuple(path for path, photo in pairs if photo.faces == 0 and not photo.error),
        several_faces=sum(photo.faces > 1 for photo in photos),
        unusable=tuple((path, photo.error) for path, photo in pairs if photo.error),
    )


def labelled_vectors(photos: Sequence[PhotoFaces], dimension: int) -> np.ndarray:
    """The labelled face's embedding of each photo (rows), NaN where no face was found."""
    vectors = np.full((len(photos), dimension), np.nan, np.float32)
    for row, photo in enumerate(photos):
        if photo.faces:
            vectors[row] = photo.vectors[photo.labelled]
    return vectors


@dataclass(frozen=True)
class Verification:
    """Verification figures of one set of pairs: a pair is accepted at or under a threshold;
    a pair with a missing face (NaN distance) is never accepted."""

    dist: np.ndarray = field(repr=False, compare=False)
    same: np.ndarray = field(repr=False, compare=False)
    accuracy: tuple[float, float] | None  # 10-fold mean and sd
    #: FAR -> (TAR, threshold); None where too few impostor pairs measure that rate.
    tar: dict[float, tuple[float, float] | None]

    @property
    def genuine(self) -> int:
        """Pairs of photos of one person."""
        return int(self.same.sum())

    @property
    def impostor(self) -> int:
        """Pairs of photos of two people."""
        return int((~self.same).sum())

    @property
    def missing(self) -> int:
        """Pairs with a photo where no face was found."""
        return int(np.isnan(self.dist).sum())


def verification(dist: np.ndarray, same: np.ndarray, kfold: bool = True) -> Verification:
    """TAR at each of `FARS` and (`kfold`, given 10 pairs of each kind) 10-fold accuracy, a
    missing face being an error."""
    impostors = int((~same).sum())
    tar = {
        far: tar_at_far(dist, same, far) if enough_trials(impostors, far) else None for far in FARS
    }
    # Each of the 10 folds needs pairs of both kinds to test on.
    enough = min(int(same.sum()), impostors) >= FOLDS
    accuracy = kfold_accuracy(dist, same) if kfold and enough else None
    return Verification(dist, same, accuracy, tar)


def pair_distances(vectors: np.ndarray, pairs: Pairs) -> np.ndarray:
    """The distance of each pair (NaN where a photo has no face)."""
    return np.linalg.norm(vectors[pairs.first] - vectors[pairs.second], axis=1)


def all_pair_distances(vectors: np.ndarray, people: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of these photos: distances (NaN for the pairs with a missing face) and
    whether each shows one person; genuine pairs first."""
    found = ~np.isnan(vectors[:, 0])
    if found.any():
        genuine, impostor = all_pairs(vectors, people)
    else:
        genuine = impostor = np.zeros(0, np.float32)
    missing_genuine, missing_impostor = missing_pairs(found, people)
    dist = np.concatenate(
        [genuine, np.full(missing_genuine, np.nan), impostor, np.full(missing_impostor, np.nan)]
    )
    same = np.arange(len(dist)) < len(genuine) + missing_genuine
    return dist, same


@dataclass(frozen=True)
class Identification:
    """Closed-set (rank-k) and open-set (DIR at a false-alarm rate) figures of one gallery."""

    people: int  # people enrolled (their first photo)
    faceless: int  # of them, enrolled photos with no face found
    distractor_faces: int
    probes: int  # other photos of enrolled people
    unknown_probes: int  # photos of people with a single photo, not enrolled
    rank: dict[int, float]  # k -> share of probes whose person is among the k nearest
    #: FPIR -> (DIR, threshold); None where too few unknown probes measure that rate.
    dir: dict[float, tuple[float, float] | None]


def split_enrolment(people: Sequence[str]) -> tuple[list[int], list[int], list[int]]:
    """Enrolled (the first photo of each person with several), probes (their other photos)
    and unknown probes (the photos of people with a single photo), as row numbers."""
    rows: dict[str, list[int]] = {}
    for row, person in enumerate(people):
        rows.setdefault(person, []).append(row)
    several = [found for found in rows.values() if len(found) > 1]
    enrolled = [found[0] for found in several]
    probes = sorted(row for found in several for row in found[1:])
    unknown = [found[0] for found in rows.values() if len(found) == 1]
    return enrolled, probes, unknown


def identification(
    vectors: np.ndarray,
    people: Sequence[str],
    distractors: np.ndarray | None = None,
    distractor_people: Sequence[str] = (),
    enrol_single_photo_people: bool = False,
) -> Identification:
    """Rank-k and DIR of these labelled faces (rows; NaN: no face), enrolled as
    `split_enrolment` says, with the distractors' faces (rows) enrolled too.

    With `enrol_single_photo_people` the people with a single photo are enrolled as well
    (distractors from the same set) instead of searched as unknown probes: no DIR then.
    """
    enrolled, probes, unknown = split_enrolment(people)
    if enrol_single_photo_people:
        singles = [row for row in unknown if not np.isnan(vectors[row, 0])]
        extra = [vectors[singles]] if distractors is None else [distractors, vectors[singles]]
        distractors = np.concatenate(extra)
        distractor_people = [*distractor_people, *(people[row] for row in singles)]
        unknown = []
    gallery = vectors[enrolled]
    gallery_people = [people[row] for row in enrolled]
    if distractors is not None:
        gallery = np.concatenate([gallery, distractors])
        gallery_people += list(distractor_people)
    probe_people = [people[row] for row in probes]
    ranks, own = identification_ranks(
        distances.euclidean_many(vectors[probes], gallery), probe_people, gallery_people
    )
    unknown_dist = distances.euclidean_many(vectors[unknown], gallery)
    nearest = np.where(np.isnan(unknown_dist), np.inf, unknown_dist).min(axis=1, initial=np.inf)
    return Identification(
        people=len(enrolled),
        faceless=int(np.isnan(vectors[enrolled, 0]).sum()),
        distractor_faces=0 if distractors is None else len(distractors),
        probes=len(probes),
        unknown_probes=len(unknown),
        rank={k: _share(ranks <= k) for k in RANKS},
        dir={
            fpir: dir_at_fpir(ranks, own, nearest, fpir)
            if enough_trials(len(unknown), fpir)
            else None
            for fpir in FPIRS
        },
    )


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if len(mask) else float("nan")


def distractor_faces(
    distractors: Distractors, photos: Sequence[PhotoFaces], dimension: int
) -> tuple[np.ndarray, list[str]]:
    """The distractors' enrolled faces and their people: the labelled face of each photo of a
    labels CSV, or every face of a folder's photos, each a person of its own."""
    vectors: list[np.ndarray] = []
    people: list[str] = []
    for number, photo in enumerate(photos):
        if distractors.people is not None and photo.faces:
            vectors.append(photo.vectors[photo.labelled])
            people.append(distractors.people[number])
        elif distractors.people is None:
            vectors.extend(photo.vectors)
            people.extend(f"distractor:{number}:{face}" for face in range(photo.faces))
    stacked = np.stack(vectors) if vectors else np.zeros((0, dimension), np.float32)
    return stacked, people


@dataclass(frozen=True)
class Evaluation:
    """Every figure of one run of `iddetective eval`, and what it was measured on."""

    labelled: LabelledSet
    embedding: EmbeddingRun
    detection: DetectionCounts
    all_pairs: Verification
    identification: Identification
    pairs: Pairs | None = None
    on_pairs: Verification | None = None
    distractors: Distractors | None = None
    distractor_detection: DetectionCounts | None = None
    with_distractors: Identification | None = None
    #: Closed-set figures with the single-photo people enrolled as distractors too.
    with_single_photo_people: Identification | None = None
    detector_trials: tuple[DetectorTrial, ...] = ()
    seconds: float = 0.0


def evaluate(
    labels: str,
    pairs: str | None = None,
    distractors: str | None = None,
    workers: int = 1,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    settings: PipelineSettings | None = None,
) -> Evaluation:
    """Embed the photos of `labels` (and of the distractors) and measure every figure."""
    started = time.monotonic()
    labelled = read_labelled_set(labels)
    pair_set = read_pairs(pairs, labelled) if pairs else None
    extra = read_distractors(distractors) if distractors else None
    extra_paths = extra.paths if extra else ()
    run = embed_photos([*labelled.paths, *extra_paths], workers, cache_dir, progress, settings)
    dimension = pipeline_for(run.settings).embedder.dimension
    own = run.photos[: len(labelled.paths)]
    vectors = labelled_vectors(own, dimension)
    evaluation = Evaluation(
        labelled=labelled,
        embedding=run,
        detection=detection_counts(labelled.paths, own),
        all_pairs=verification(*all_pair_distances(vectors, labelled.people), kfold=False),
        identification=identification(vectors, labelled.people),
        with_single_photo_people=identification(
            vectors, labelled.people, enrol_single_photo_people=True
        ),
        pairs=pair_set,
        on_pairs=verification(pair_distances(vectors, pair_set), pair_set.same)
        if pair_set
        else None,
    )
    if extra is not None:
        evaluation = _with_distractors(evaluation, extra, run.photos[len(own) :], vectors)
    return replace(evaluation, seconds=time.monotonic() - started)


def _with_distractors(
    evaluation: Evaluation, extra: Distractors, photos: Sequence[PhotoFaces], vectors: np.ndarray
) -> Evaluation:
    faces, people = distractor_faces(extra, photos, vectors.shape[1])
    return replace(
        evaluation,
        distractors=extra,
        distractor_detection=detection_counts(extra.paths, photos),
        with_distractors=identification(vectors, evaluation.labelled.people, faces, people),
    )


def with_detector_trials(
    evaluation: Evaluation,
    detectors: Sequence[PipelineSettings],
    sample: int | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> Evaluation:
    """The evaluation with each detector setting tried alone on `sample` of its labelled
    photos (all of them when None; the same random ones every run)."""
    photos = sample_photos(evaluation.labelled.paths, sample)
    trials = compare_detectors(photos, detectors, workers, progress)
    return replace(evaluation, detector_trials=tuple(trials))
