"""Derive the default match threshold from the labelled dev sets.

For each set (default lfw_dev), every photo in `labels.csv` is embedded once through the
iddetective pipeline (`pipeline_for(PipelineSettings()).analyse`) in a pool of 2 processes,
and the labelled face of each photo is taken with `labelling.choose_labelled_face`, as the
catalogue does. The pipeline returns L2-normalised embeddings (`distances.prepare`); the raw
dlib vectors are captured inside this script by wrapping the pipeline's embedder. For both
raw and normalised embeddings it prints, as one Markdown table per set:

* how many photos have no face found (they fail every pair they are in);
* 10-fold pair accuracy on `pairs.csv` (folds stratified by same/different; the threshold of
  each fold is the best one on the other 9; a pair with a missing face counts as an error;
  a second row counts it as a "no match" answer instead, which is right for impostor pairs),
  and the best single threshold over all pairs;
* over ALL pairs of labelled photos with a face: the threshold at false-match rates 1e-2 to
  1e-5 (the largest distance that accepts at most that share of impostor pairs) with the
  true-accept rate there (share of all genuine pairs at or under it);
* the false-match rate (and true-accept rate) of the folklore raw 0.6, of its normalised
  equivalent 0.6 / RAW_NORM, and of `DLIB.match`;
* the mean and standard deviation of the raw embedding norms.

Embeddings are cached in bench/.cache/ (git-ignored), keyed by the set name and a hash of the
file list and pipeline settings (not the pipeline's code: pass --refresh after changing it);
the first run on lfw_dev takes about 4 to 6 minutes on 2 cores, later runs about 20 seconds.

Run (from the repository root, in the project's virtualenv):

    python bench/threshold.py --sets lfw_dev
    python bench/threshold.py --sets lfw_dev deepface face_recognition orl_att

Photo sets come from $IDDETECTIVE_FACES (default ../shared/faces beside the repository).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iddetective.entities import Box
from iddetective.errors import BadImage
from iddetective.evaluation.metrics import (
    all_pairs,
    best_threshold,
    kfold_accuracy,
    rate_at,
    threshold_at_fmr,
)
from iddetective.faces.labelling import choose_labelled_face
from iddetective.faces.pipeline import Embedder, Landmarks, PipelineSettings, pipeline_for
from iddetective.matching import distances
from iddetective.matching.calibration import calibration_for
from iddetective.processes.children import spawn_pool

#: dlib's shipped thresholds (matching/calibration/dlib-resnet-v1.json).
DLIB = calibration_for("dlib-resnet-v1").thresholds

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
CACHE_VERSION = 1
FMR_TARGETS = (1e-2, 1e-3, 1e-4, 1e-5)
FOLKLORE_RAW = 0.6


# -- embedding (runs in the pool's processes) ----------------------------------------------------
class RecordingEmbedder:
    """Wraps the pipeline's embedder and keeps the raw vectors of the last call."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.last_raw = np.zeros((0, self.dimension), np.float32)

    def embed(
        self, image: np.ndarray, boxes: Sequence[Box], jitters: int
    ) -> tuple[np.ndarray, list[Landmarks]]:
        vectors, landmarks = self.inner.embed(image, boxes, jitters)
        self.last_raw = np.array(vectors, dtype=np.float32, copy=True)
        return vectors, landmarks


@dataclass(frozen=True)
class Embedded:
    """The labelled face of one photo: raw and normalised vectors (None if no face)."""

    faces: int
    raw: np.ndarray | None
    normalised: np.ndarray | None
    error: str | None = None


def start_worker() -> None:
    """Install the recording embedder in this process's cached pipeline."""
    pipeline = pipeline_for(PipelineSettings())
    if not isinstance(pipeline.embedder, RecordingEmbedder):
        pipeline.embedder = RecordingEmbedder(pipeline.embedder)


def embed_photo(path: str) -> Embedded:
    """Analyse one photo and return its labelled face's embeddings."""
    pipeline = pipeline_for(PipelineSettings())
    try:
        analysis = pipeline.analyse(Path(path).read_bytes(), path)
    except (BadImage, OSError) as error:
        return Embedded(0, None, None, str(error))
    if not analysis.faces:
        return Embedded(0, None, None)
    boxes = [face.box for face in analysis.faces]
    chosen = analysis.faces[choose_labelled_face(boxes, analysis.width, analysis.height)]
    if not isinstance(pipeline.embedder, RecordingEmbedder):
        raise RuntimeError("start_worker() must run first in this process")
    raw_all = pipeline.embedder.last_raw
    # Faces were re-ordered by size after embedding: find the raw vector by its direction.
    match = int(np.argmax(distances.prepare(raw_all) @ chosen.embedding))
    return Embedded(len(analysis.faces), raw_all[match], np.asarray(chosen.embedding))


# -- data sets -----------------------------------------------------------------------------------
def faces_root() -> Path:
    """`$IDDETECTIVE_FACES`, else `../shared/faces` relative to the repository root."""
    return Path(os.environ.get("IDDETECTIVE_FACES") or REPO.parent / "shared" / "faces")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@dataclass
class LabelledSet:
    """One set's labelled photos (paths relative to the set folder) and its pairs, if any."""

    name: str
    folder: Path
    paths: list[str]
    people: list[str]
    pairs: list[tuple[str, str, bool]] | None

    @classmethod
    def load(cls, root: Path, name: str) -> LabelledSet:
        folder = root / name
        if not (folder / "labels.csv").is_file():
            sys.exit(f"no labelled set {name!r}: {folder / 'labels.csv'} does not exist")
        rows = read_rows(folder / "labels.csv")
        pairs = None
        if (folder / "pairs.csv").is_file():
            pairs = [
                (r["path_a"], r["path_b"], r["same"].strip() == "1")
                for r in read_rows(folder / "pairs.csv")
            ]
        return cls(name, folder, [r["path"] for r in rows], [r["person"] for r in rows], pairs)

    def cache_key(self) -> str:
        """The set name and a hash of its file list and the pipeline settings."""
        digest = hashlib.sha256(f"v{CACHE_VERSION} {PipelineSettings()!r}\n".encode())
        for path in self.paths:
            digest.update(f"{path}\t{(self.folder / path).stat().st_size}\n".encode())
        return f"{self.name}-{digest.hexdigest()[:16]}"


@dataclass
class Embeddings:
    """Per labelled photo: faces found, raw and normalised vectors (NaN rows where none)."""

    faces: np.ndarray
    raw: np.ndarray
    normalised: np.ndarray
    errors: list[str]

    @property
    def found(self) -> np.ndarray:
        return self.faces > 0


def embed_set(labelled: LabelledSet, workers: int, refresh: bool = False) -> Embeddings:
    """The set's embeddings, from the cache or computed (and cached)."""
    cache = CACHE_DIR / f"{labelled.cache_key()}.npz"
    if cache.is_file() and not refresh:
        with np.load(cache) as saved:
            return Embeddings(
                saved["faces"], saved["raw"], saved["normalised"], list(saved["errors"])
            )
    results = compute(labelled, workers)
    embeddings = to_arrays(results)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        faces=embeddings.faces,
        raw=embeddings.raw,
        normalised=embeddings.normalised,
        errors=np.array(embeddings.errors, dtype=str),
    )
    return embeddings


def compute(labelled: LabelledSet, workers: int) -> list[Embedded]:
    """Embed every labelled photo of the set in a process pool."""
    paths = [str(labelled.folder / p) for p in labelled.paths]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.monotonic()
    results: list[Embedded] = []
    with spawn_pool(workers, start_worker) as pool:
        for done, result in enumerate(pool.map(embed_photo, paths, chunksize=8), start=1):
            results.append(result)
            if done % 250 == 0 or done == len(paths):
                print(
                    f"{labelled.name}: embedded {done}/{len(paths)} photos "
                    f"in {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                )
    return results


def to_arrays(results: Sequence[Embedded]) -> Embeddings:
    dimension = next((len(r.raw) for r in results if r.raw is not None), 128)
    raw = np.full((len(results), dimension), np.nan, np.float32)
    normalised = raw.copy()
    for i, result in enumerate(results):
        if result.raw is not None and result.normalised is not None:
            raw[i], normalised[i] = result.raw, result.normalised
    faces = np.array([r.faces for r in results], dtype=np.int32)
    errors = [r.error or "" for r in results]
    return Embeddings(faces, raw, normalised, errors)


# -- metrics -------------------------------------------------------------------------------------
def pair_distances(labelled: LabelledSet, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pair in pairs.csv (NaN when a photo has no face) and whether same."""
    if labelled.pairs is None:
        raise ValueError(f"{labelled.name} has no pairs.csv")
    index = {path: i for i, path in enumerate(labelled.paths)}
    a = np.array([index[p[0]] for p in labelled.pairs])
    b = np.array([index[p[1]] for p in labelled.pairs])
    same = np.array([p[2] for p in labelled.pairs])
    return np.linalg.norm(vectors[a] - vectors[b], axis=1), same


# -- the report ----------------------------------------------------------------------------------
@dataclass
class Column:
    """One embedding kind's figures for the table, as printed strings by row name."""

    cells: dict[str, str]


def column(labelled: LabelledSet, vectors: np.ndarray, kind: str) -> Column:
    """Every figure of one embedding kind ("raw" or "normalised")."""
    cells = pair_cells(labelled, vectors) if labelled.pairs is not None else {}
    genuine, impostor = all_pairs(vectors, labelled.people)
    cells["genuine / impostor pairs (photos with a face)"] = f"{len(genuine):,} / {len(impostor):,}"
    cells.update(fmr_cells(genuine, impostor))
    cells.update(check_cells(genuine, impostor, kind))
    return Column(cells)


def pair_cells(labelled: LabelledSet, vectors: np.ndarray) -> dict[str, str]:
    """Accuracy on pairs.csv: 10-fold (two ways of counting missing faces) and best single."""
    dist, same = pair_distances(labelled, vectors)
    present = ~np.isnan(dist)
    mean, sd = kfold_accuracy(dist, same)
    loose_mean, loose_sd = kfold_accuracy(dist, same, missing_is_error=False)
    threshold, right = best_threshold(dist[present], same[present])
    return {
        "10-fold pair accuracy": f"{mean:.4f} +- {sd:.4f}",
        "10-fold pair accuracy, a missing face answers no match": (
            f"{loose_mean:.4f} +- {loose_sd:.4f}"
        ),
        "best single threshold (accuracy)": f"{threshold:.3f} ({right / len(dist):.4f})",
    }


def fmr_cells(genuine: np.ndarray, impostor: np.ndarray) -> dict[str, str]:
    """The threshold (and TAR there) at each false-match rate of FMR_TARGETS."""
    cells = {}
    for fmr in FMR_TARGETS:
        threshold = threshold_at_fmr(impostor, fmr)
        cells[f"threshold at FMR {fmr:.0e} (TAR)"] = (
            "n/a (too few impostor pairs)"
            if threshold is None
            else f"{threshold:.3f} ({rate_at(genuine, threshold):.4f})"
        )
    return cells


def check_cells(genuine: np.ndarray, impostor: np.ndarray, kind: str) -> dict[str, str]:
    """FMR and TAR at the folklore raw 0.6 (or its normalised equivalent) and at our default."""
    folklore = FOLKLORE_RAW if kind == "raw" else FOLKLORE_RAW / distances.RAW_NORM
    ours = DLIB.match if kind == "normalised" else None
    checks: dict[str, float | None] = {
        "FMR (TAR) at the folklore raw 0.6 (normalised: 0.6 / RAW_NORM)": folklore,
        f"FMR (TAR) at DEFAULT_THRESHOLD {DLIB.match}": ours,
    }
    return {
        name: ""
        if threshold is None
        else f"{rate_at(impostor, threshold):.2e} ({rate_at(genuine, threshold):.4f}) "
        f"at {threshold:.3f}"
        for name, threshold in checks.items()
    }


def report(labelled: LabelledSet, embeddings: Embeddings) -> str:
    """The set's Markdown table."""
    found = embeddings.found
    raw = column(labelled, embeddings.raw, "raw")
    normalised = column(labelled, embeddings.normalised, "normalised")
    norms = np.linalg.norm(embeddings.raw[found], axis=1)
    unreadable = sum(1 for e in embeddings.errors if e)
    shared = {
        "labelled photos": f"{len(labelled.paths):,}",
        "photos with no face found": f"{int((~found).sum())}"
        + (f" ({unreadable} unreadable)" if unreadable else ""),
    }
    if labelled.pairs is not None:
        dist, _ = pair_distances(labelled, embeddings.normalised)
        shared["pairs.csv pairs (with a missing face)"] = (
            f"{len(dist):,} ({int(np.isnan(dist).sum())})"
        )
    lines = [
        f"### {labelled.name}",
        "",
        "| | raw dlib embeddings | L2-normalised (ours) |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {value} | {value} |" for name, value in shared.items()]
    for name in dict.fromkeys([*raw.cells, *normalised.cells]):
        lines.append(f"| {name} | {raw.cells.get(name, '')} | {normalised.cells.get(name, '')} |")
    lines.append(f"| embedding norm (mean +- sd) | {norms.mean():.3f} +- {norms.std():.3f} | 1 |")
    return "\n".join(lines)


def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["lfw_dev"], help="labelled sets to use")
    parser.add_argument("--workers", type=int, default=2, help="embedding processes")
    parser.add_argument(
        "--refresh", action="store_true", help="embed again even if bench/.cache has the set"
    )
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> None:
    args = parse_args(argv)
    root = faces_root()
    for name in args.sets:
        labelled = LabelledSet.load(root, name)
        embeddings = embed_set(labelled, args.workers, args.refresh)
        print(report(labelled, embeddings))
        print()


if __name__ == "__main__":
    main()
