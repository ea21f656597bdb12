"""dlib's ResNet face descriptor: dlib-bin against the ONNX graph built from the same weights.

Takes the first `--chips` faces HOG finds (upsample 1) in lfw_dev, aligned to 150 x 150 chips
as dlib aligns them (5-point shape predictor, `dlib.get_face_chips`, padding 0.25), then
times on the same chips, in turns, best of `--repeat` rounds:

* dlib: `face_recognition_model_v1.compute_face_descriptor(chips)`, which runs the network in
  batches of 16 as `compute_face_descriptors` does after cutting the chips;
* ONNX Runtime with `--threads` threads (default 1): `OnnxResnetEmbedder.embed_chips(chips)`,
  one call for all chips (batches of `onnx_resnet.MAX_BATCH`).

Prints milliseconds per face (wall clock and this process's CPU time), the ratio, the largest
difference between the two L2-normalised descriptors of any chip, and how many cores other
processes kept busy meanwhile (the figures are noisy on a shared machine; repeat them).
Alignment (the shape predictor and chip cutting, the same for both) is not timed.

Run (from the repository root, in the project's virtualenv):

    python bench/onnx_resnet.py                       # 200 chips, 1 thread, best of 3
    python bench/onnx_resnet.py --threads 1 2 --repeat 5

The chips are cached in bench/.cache/onnx_resnet/ (git-ignored), and the checked graph there
too (built and checked against dlib on first use, a few seconds). Photo sets come from
$IDDETECTIVE_FACES (default ../shared/faces beside the repository).
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from iddetective.faces.imaging import decode_image
from iddetective.faces.onnx_resnet import OnnxResnetEmbedder
from iddetective.faces.pipeline import HogDetector

from machine import machine_busy_seconds, wait_for_quiet

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache" / "onnx_resnet"


def faces_root() -> Path:
    return Path(os.environ.get("IDDETECTIVE_FACES", REPO.parent / "shared" / "faces"))


def lfw_chips(count: int) -> np.ndarray:
    """The aligned chips of the first `count` faces found in lfw_dev (cached)."""
    cached = CACHE / f"lfw_dev-{count}-chips.npy"
    if cached.exists():
        chips: np.ndarray = np.load(cached)
        return chips
    folder = faces_root() / "lfw_dev"
    with open(folder / "labels.csv", newline="") as handle:
        paths = [folder / row["path"] for row in csv.DictReader(handle)]
    detector, aligner = HogDetector(), OnnxResnetEmbedder()
    found: list[np.ndarray] = []
    for path in paths:
        pixels = decode_image(path.read_bytes(), str(path), 1600).pixels
        boxes = [d.box for d in detector.detect(pixels, 1)]
        if boxes:
            found.extend(aligner.chips(pixels, boxes)[0])
        if len(found) >= count:
            break
    chips = np.stack(found[:count])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(cached, chips)
    return chips


def timed(run: Callable[[], np.ndarray]) -> tuple[float, float, np.ndarray]:
    """Wall and CPU seconds of one call, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors.astype(np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chips", type=int, default=200, help="faces of lfw_dev to embed")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is shown")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="ONNX threads")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait for other processes to calm down first",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import dlib
    import face_recognition_models

    chips = lfw_chips(args.chips)
    network = dlib.face_recognition_model_v1(
        face_recognition_models.face_recognition_model_location()
    )
    embedders = {
        threads: OnnxResnetEmbedder(cache_dir=CACHE, threads=threads, fallback=False)
        for threads in args.threads
    }
    methods: dict[str, Callable[[], np.ndarray]] = {
        "dlib-bin compute_face_descriptor": lambda: np.asarray(
            [np.asarray(v) for v in network.compute_face_descriptor(list(chips), 0)]
        ),
    }
    for threads, embedder in embedders.items():
        methods[f"ONNX Runtime, {threads} thread{'s' if threads > 1 else ''}"] = (
            functools.partial(embedder.embed_chips, chips)
        )
    for embedder in embedders.values():
        embedder.embed_chips(chips[:2])  # build or load the graph, warm the session up
    wait_for_quiet(args.quiet_wait)
    best: dict[str, tuple[float, float]] = {}
    results: dict[str, np.ndarray] = {}
    busy_start, clock_start, own_start = (
        machine_busy_seconds(),
        time.monotonic(),
        time.process_time(),
    )
    for round_ in range(args.repeat):
        for name, run in methods.items():
            wall, cpu, results[name] = timed(run)
            previous = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(previous[0], wall), min(previous[1], cpu))
            print(
                f"round {round_ + 1}: {name}: {1000 * wall / len(chips):.1f} ms/face",
                file=sys.stderr,
            )
    elapsed = time.monotonic() - clock_start
    own = time.process_time() - own_start
    others = max(0.0, (machine_busy_seconds() - busy_start - own) / elapsed)
    reference = normalised(results["dlib-bin compute_face_descriptor"])
    baseline = best["dlib-bin compute_face_descriptor"][0]
    print(
        f"\n{len(chips)} chips of lfw_dev, best of {args.repeat} rounds; "
        f"other processes kept ~{others:.1f} cores busy meanwhile\n"
    )
    print("| method | ms/face (wall) | ms/face (CPU) | speed-up (wall) | max abs diff vs dlib |")
    print("|---|---:|---:|---:|---:|")
    for name, (wall, cpu) in best.items():
        difference = float(np.max(np.abs(normalised(results[name]) - reference)))
        print(
            f"| {name} | {1000 * wall / len(chips):.1f} | {1000 * cpu / len(chips):.1f} | "
            f"{baseline / wall:.2f}x | {difference:.2e} |"
        )


if __name__ == "__main__":
    main()
