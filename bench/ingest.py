"""Indexing speed: iddetective against a plain face_recognition loop, on the same photos.

Measures photos per second of

* the plain loop: one process, for each photo `face_recognition.load_image_file`,
  `face_locations(img, number_of_times_to_upsample=1)` (HOG) and `face_encodings(img, boxes)`;
* `Catalogue(data_dir, create=True).index(paths, workers=N)` (what `iddetective index` runs)
  with 1 and with 2 workers, each into a fresh temporary data directory, with the default
  embedder (`dlib-resnet-v1`: dlib's ResNet on ONNX Runtime), and with 1 worker on dlib's
  own runtime of the same model (`dlib-resnet-v1-dlib`, what every run used before),

over one deterministic photo list (by default 300 photos drawn from lfw_dev with a fixed seed,
plus every photo of deepface and face_recognition, so small and large images are both in the
mix; byte-identical files are dropped). It prints one Markdown table for the README.

Fairness: every file is read once before any timing (warm page cache). The plain loop's models
load when `face_recognition` is imported and one untimed warm-up photo runs through each
method before its timed run, so the one-worker runs are timed with models loaded. With 2
workers the processes are spawned and load their models inside `index()`: that start-up is a
real part of an index run and is timed too; the script measures it separately (an untimed
`index()` of two tiny photos) and reports it under the table. With --repeat the methods take
turns round by round and each one's fastest run is shown. Before each run the script waits
(--quiet-wait) for other processes to go idle, and under the table it prints the CPU time each
run used and how much other processes used meanwhile, flagging noisy runs.

The work is not identical on large photos, by design: iddetective decodes JPEGs at most
1600 px (libjpeg draft mode) and runs HOG on a copy at most 1024 px, while the plain loop
decodes and searches the full image; the "faces found" column shows whether that cost faces.
On small photos (lfw_dev, 150 px) both do the same detection and alignment; the descriptor
network is dlib's on dlib's runtime and on the plain loop, the same network on ONNX Runtime by
default.

Same vectors: under the table the script compares the embeddings each run stored (matched by
photo SHA-256 and face box) with those of the dlib-runtime run, L2-normalised as they are
stored, and prints the largest difference (the contract: at most 1e-4, float rounding).

The ONNX graph is read from the user's model cache (~/.cache/iddetective/models, or
$IDDETECTIVE_MODEL_CACHE), built and checked there first if it is not yet: untimed, in the
warm-up, as a user's first run would do once.

Install the baseline first, without its dependencies (pip would otherwise build dlib from
source; dlib and the model weights are already installed with iddetective):

    pip install --no-deps -r bench/requirements-nodeps.txt

Run (from the repository root, in the project's virtualenv):

    python bench/ingest.py                              # the default mix
    python bench/ingest.py --sets lfw_dev:500,deepface  # SET or SET:COUNT, comma separated
    python bench/ingest.py --limit 100 --repeat 3       # fewer photos, best of 3 runs
    python bench/ingest.py --sets lfw_dev:300 --workers 1 --repeat 3   # per core, small photos

Photo sets come from $IDDETECTIVE_FACES (default ../shared/faces beside the repository).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from iddetective.catalogue import Catalogue
from iddetective.faces.onnx_resnet import DLIB_RUNTIME
from iddetective.faces.pipeline import PipelineSettings, pipeline_for
from iddetective.settings import default_model_cache
from iddetective.sources.paths import PHOTO_SUFFIXES

from machine import machine_busy_seconds, wait_for_quiet

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SETS = "lfw_dev:300,deepface,face_recognition"
SEED = 20240611
BASELINE = "plain face_recognition loop, 1 process"
#: The embedder every index run uses unless it is the dlib-runtime one.
DEFAULT_EMBEDDER = PipelineSettings().embedder
#: Two runtimes of one model store the same vectors within this (docs/contracts.md, seams).
SAME_VECTORS = 1e-4
INSTALL_HINT = (
    "bench/ingest.py needs the face_recognition package as its baseline. Install it WITHOUT "
    "dependencies (otherwise pip builds dlib from source):\n"
    "    pip install --no-deps face_recognition==1.3.0"
)


@dataclass(frozen=True)
class Timing:
    """One timed method over the photo list, and the CPU time spent while it ran."""

    method: str
    photos: int
    seconds: float
    faces: int
    #: CPU seconds of this process and its (finished) children during the run.
    own_cpu: float = 0.0
    #: CPU seconds every other process on the machine used during the run.
    other_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.photos / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class CpuSample:
    """Machine-wide busy CPU seconds (from /proc/stat) and this process tree's own."""

    wall: float
    machine_busy: float
    own: float

    @classmethod
    def now(cls) -> CpuSample:
        own = sum(
            getattr(resource.getrusage(who), field)
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for field in ("ru_utime", "ru_stime")
        )
        return cls(time.perf_counter(), machine_busy_seconds(), own)


def measured(method: str, photos: int, run: Callable[[], tuple[float | None, int]]) -> Timing:
    """Run `run` (returning its own timed seconds, or None to use the wall time, and faces)."""
    before = CpuSample.now()
    seconds, faces = run()
    after = CpuSample.now()
    own = after.own - before.own
    other = max(0.0, after.machine_busy - before.machine_busy - own)
    wall = after.wall - before.wall
    return Timing(method, photos, wall if seconds is None else seconds, faces, own, other)


# -- the photo list ------------------------------------------------------------------------------
def faces_root() -> Path:
    """`$IDDETECTIVE_FACES`, else `../shared/faces` relative to the repository root."""
    return Path(os.environ.get("IDDETECTIVE_FACES") or REPO.parent / "shared" / "faces")


def set_photos(root: Path, name: str) -> list[Path]:
    """Every photo file under the set's `images/` folder, sorted."""
    folder = root / name / "images"
    if not folder.is_dir():
        sys.exit(f"no photo set {name!r}: {folder} is not a folder")
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
    )


def parse_sets(spec: str) -> list[tuple[str, int | None]]:
    """`lfw_dev:300,deepface` -> [("lfw_dev", 300), ("deepface", None)]."""
    sets: list[tuple[str, int | None]] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition(":")
        sets.append((name, int(count) if count else None))
    return sets


def choose_photos(
    root: Path, sets: Sequence[tuple[str, int | None]], limit: int | None
) -> list[str]:
    """The deterministic photo list: a seeded sample per set, byte-identical files dropped."""
    rng = random.Random(SEED)
    chosen: list[Path] = []
    for name, count in sets:
        photos = set_photos(root, name)
        if count is not None and count < len(photos):
            photos = sorted(rng.sample(photos, count))
        chosen += photos
    chosen = drop_duplicates(chosen)
    if limit is not None and limit < len(chosen):
        chosen = [chosen[i] for i in sorted(rng.sample(range(len(chosen)), limit))]
    return [str(p.resolve()) for p in chosen]


def drop_duplicates(paths: Sequence[Path]) -> list[Path]:
    """The paths without byte-identical repeats (iddetective would skip those, the loop not)."""
    seen: set[str] = set()
    unique: list[Path] = []
    for path in paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append(path)
    return unique


def describe(paths: Sequence[str], root: Path) -> str:
    """How many photos each set gave and their total pixel count."""
    from PIL import Image

    counts: dict[str, int] = {}
    megapixels = 0.0
    for path in paths:
        name = Path(path).relative_to(root.resolve()).parts[0]
        counts[name] = counts.get(name, 0) + 1
        with Image.open(path) as image:
            megapixels += image.width * image.height / 1e6
    parts = ", ".join(f"{n} {name}" for name, n in counts.items())
    return f"{len(paths)} photos ({parts}), {megapixels:.0f} megapixels in all"


def warm_page_cache(paths: Sequence[str]) -> None:
    """Read every file once so no method pays for the first disk read."""
    for path in paths:
        Path(path).read_bytes()


# -- the methods ---------------------------------------------------------------------------------
def import_baseline() -> ModuleType:
    """`face_recognition` (loads its models on import), or exit saying how to install it."""
    try:
        import face_recognition
    except ImportError as error:
        sys.exit(f"{INSTALL_HINT}\n(import failed: {error})")
    return face_recognition


def plain_loop(paths: Sequence[str], fr: ModuleType) -> int:
    """The face_recognition-style loop; returns the number of faces found."""
    faces = 0
    for path in paths:
        image = fr.load_image_file(path)
        locations = fr.face_locations(image, number_of_times_to_upsample=1)
        fr.face_encodings(image, locations)
        faces += len(locations)
    return faces


FaceKey = tuple[str, tuple[int, int, int, int]]


@dataclass
class IndexRun:
    """`Catalogue.index` of the photos with `workers` workers and `embedder`, each run into
    a fresh data directory; keeps the (normalised) vectors the last run stored, by photo
    SHA-256 and face box, read untimed after the run."""

    paths: Sequence[str]
    workers: int
    embedder: str
    stored: dict[FaceKey, np.ndarray] = field(default_factory=dict)

    @property
    def settings(self) -> PipelineSettings:
        """The pipeline a user's run would have (model cache from the environment)."""
        return PipelineSettings(embedder=self.embedder, model_cache=default_model_cache(os.environ))

    def __call__(self) -> tuple[float, int]:
        """Seconds the run took, and the faces it stored."""
        with (
            tempfile.TemporaryDirectory(prefix="iddetective-bench-") as data_dir,
            Catalogue(data_dir, create=True, pipeline=self.settings) as catalogue,
        ):
            started = time.perf_counter()
            report = catalogue.index(list(self.paths), workers=self.workers)
            seconds = time.perf_counter() - started
            self.stored = stored_vectors(catalogue)
        if report.failed:
            reasons = "; ".join(f"{r.path}: {r.reason}" for r in report.failed[:3])
            print(f"warning: {len(report.failed)} photos failed ({reasons})", file=sys.stderr)
        return seconds, report.faces


def stored_vectors(catalogue: Catalogue) -> dict[FaceKey, np.ndarray]:
    """Every embedding of the catalogue's model, by its photo's SHA-256 and its box."""
    found: dict[FaceKey, np.ndarray] = {}
    for ids, vectors in catalogue.store.embeddings(catalogue.model):
        faces = catalogue.store.faces([int(i) for i in ids])
        for face_id, vector in zip(ids, vectors, strict=True):
            face = faces[int(face_id)]
            box = (face.box.left, face.box.top, face.box.right, face.box.bottom)
            found[(face.photo.sha256, box)] = vector
    return found


def index_run(paths: Sequence[str], workers: int) -> tuple[float, int]:
    """Seconds `Catalogue.index` takes into a fresh data directory, and the faces it stored."""
    return IndexRun(paths, workers, DEFAULT_EMBEDDER)()


def warm_up_ours(path: str, embedders: Sequence[str]) -> None:
    """Load this process's pipeline models (what `index` with 1 worker uses) untimed; the
    default embedder's graph is built and checked into the model cache if it is not there."""
    for embedder in embedders:
        settings = PipelineSettings(embedder=embedder, model_cache=default_model_cache(os.environ))
        pipeline_for(settings).analyse(Path(path).read_bytes(), path)


Method = tuple[str, Callable[[], tuple[float | None, int]]]


def index_runs(
    paths: Sequence[str], worker_counts: Sequence[int], dlib_worker_counts: Sequence[int]
) -> dict[str, IndexRun]:
    """The index runs to time, by the name of their row: the default embedder with each of
    `worker_counts`, dlib's runtime with each of `dlib_worker_counts`."""
    found: dict[str, IndexRun] = {}
    for workers in worker_counts:
        name = f"iddetective index, {workers} worker{'s' if workers > 1 else ''}"
        found[name] = IndexRun(paths, workers, DEFAULT_EMBEDDER)
    for workers in dlib_worker_counts:
        name = f"iddetective index, {workers} worker{'s' if workers > 1 else ''}, dlib's runtime"
        found[name] = IndexRun(paths, workers, DLIB_RUNTIME)
    return found


def methods(paths: Sequence[str], runs: dict[str, IndexRun]) -> list[Method]:
    """The timed methods, plain loop first, each warmed up (models loaded) already."""
    fr = import_baseline()
    plain_loop(paths[:1], fr)  # first call allocates and touches everything once
    warm_up_ours(paths[0], sorted({run.embedder for run in runs.values()}))
    found: list[Method] = [(BASELINE, lambda: (None, plain_loop(paths, fr)))]
    found += list(runs.items())
    return found


def time_methods(
    paths: Sequence[str], runs: dict[str, IndexRun], repeat: int, quiet_wait: float
) -> list[Timing]:
    """Each method's fastest run; with `repeat` > 1 the methods take turns, round by round,
    so a slow spell of the machine does not fall on one method only."""
    timings: dict[str, list[Timing]] = {}
    timed = methods(paths, runs)
    for round_number in range(1, repeat + 1):
        for name, run in timed:
            wait_for_quiet(quiet_wait)
            timings.setdefault(name, []).append(measured(name, len(paths), run))
            seconds = timings[name][-1].seconds
            print(f"round {round_number}: {seconds:6.1f} s  {name}", file=sys.stderr)
    return [min(each, key=lambda t: t.seconds) for each in timings.values()]


def same_vectors(runs: dict[str, IndexRun]) -> list[str]:
    """How far each run's stored vectors are from those of the (first) dlib-runtime run."""
    reference = next(((n, r) for n, r in runs.items() if r.embedder == DLIB_RUNTIME), None)
    if reference is None:
        return []
    reference_name, theirs = reference
    lines = []
    for name, run in runs.items():
        if run is theirs:
            continue
        if set(run.stored) != set(theirs.stored):
            lines.append(
                f"- {name}: {len(run.stored)} faces stored, {len(theirs.stored)} by "
                f"{reference_name}, not the same photos and boxes -- DIFFERENT"
            )
            continue
        difference = max(
            (float(np.abs(run.stored[k] - theirs.stored[k]).max()) for k in run.stored),
            default=0.0,
        )
        verdict = "the same vectors" if difference <= SAME_VECTORS else "DIFFERENT"
        lines.append(
            f"- {name}: the {len(run.stored)} stored vectors against {reference_name}'s "
            f"(same photos and boxes): largest difference {difference:.2e} "
            f"(tolerance {SAME_VECTORS:g}): {verdict}"
        )
    return lines


def pool_start_up(paths: Sequence[str], workers: int) -> float:
    """Seconds a pooled `index()` of `workers` tiny photos takes: spawn + model loading."""
    from PIL import Image

    def pixels(path: str) -> int:
        with Image.open(path) as image:
            return image.width * image.height

    smallest = sorted(paths, key=pixels)[:workers]
    seconds, _ = index_run(smallest, workers)
    return seconds


# -- output --------------------------------------------------------------------------------------
def markdown_table(timings: Sequence[Timing]) -> str:
    """The Markdown table; the ratio is photos/s relative to the first row (the plain loop)."""
    base = timings[0].rate
    lines = [
        "| method | photos | seconds | photos/s | ratio vs plain loop | faces found |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        lines.append(
            f"| {t.method} | {t.photos} | {t.seconds:.1f} | {t.rate:.2f} | "
            f"{t.rate / base:.2f}x | {t.faces} |"
        )
    return "\n".join(lines)


def notes(timings: Sequence[Timing], start_up: dict[int, float]) -> list[str]:
    """What the table does not show: CPU time used, other load on the machine, pool start-up."""
    lines = []
    for t in timings:
        lines.append(
            f"- {t.method}: {t.own_cpu:.1f} CPU s of its own "
            f"({t.own_cpu / t.seconds:.2f} cores busy on average); other processes used "
            f"{t.other_cpu:.1f} CPU s meanwhile ({t.other_cpu / t.seconds:.2f} cores)"
            + (" -- NOISY, rerun on a quiet machine" if t.other_cpu > 0.05 * t.seconds else "")
        )
    for workers, seconds in start_up.items():
        lines.append(
            f"- with {workers} workers, spawning the pool and loading the models in each "
            f"process takes {seconds:.1f} s (an index() of {workers} tiny photos); the timing "
            "above includes it"
        )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sets",
        default=DEFAULT_SETS,
        help=f"comma-separated SET or SET:COUNT (seeded sample) (default: {DEFAULT_SETS})",
    )
    parser.add_argument("--limit", type=int, help="use at most this many photos in all")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of runs (methods take turns); best shown"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="worker counts to time with the default embedder (ONNX Runtime)",
    )
    parser.add_argument(
        "--dlib-workers",
        type=int,
        nargs="*",
        default=[1],
        help="worker counts to time with dlib's runtime of the same model (none: not timed, "
        "and the stored vectors not compared)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for other processes to go idle",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    root = faces_root()
    import_baseline()  # fail early, before the slow part, if the baseline is missing
    paths = choose_photos(root, parse_sets(args.sets), args.limit)
    summary = f"Photos: {describe(paths, root)}. Machine: {os.cpu_count()} CPUs."
    print(summary, file=sys.stderr)
    warm_page_cache(paths)
    runs = index_runs(paths, args.workers, args.dlib_workers)
    timings = time_methods(paths, runs, args.repeat, args.quiet_wait)
    start_up = {w: pool_start_up(paths, w) for w in args.workers if w > 1}
    print(f"\n{summary}\n")
    print(markdown_table(timings))
    print()
    print("\n".join(notes(timings, start_up) + same_vectors(runs)))


if __name__ == "__main__":
    main()
