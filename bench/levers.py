"""Cheap levers on the dlib ResNet embedding: which raise lfw_dev pair accuracy?

Detects once per photo of lfw_dev's pairs.csv with the iddetective pipeline (HOG up1, CNN
fallback: `FacePipeline.detect`), chooses the labelled face with `choose_labelled_face`, stores
boxes and 5/68-point landmarks of every face, then computes embedding passes of the chosen face
only. Each pass is cached in bench/.cache/levers/lfw_dev/<stage>.npz (git-ignored; raw,
unnormalised float32 vectors + seconds per face), so a rerun only recomputes what is missing
(delete the folder after changing the pipeline or the photos). Combinations (flip = plain +
mirror, 5+68 ensembles, jit10 = two independent jit5 calls averaged) are formed from cached
passes at report time.

Variants, each against the baseline (the pipeline's own embedder: 5-point landmarks, jitters
0, padding 0.25) on the same pairs: flip test-time augmentation (the mirrored chip's vector
added), 68-point alignment, both, 5+68-point ensembles, chip padding 0.1 and 0.5, dlib's
num_jitters 5 (and 10 with --jitter-calls 2). For each: 10-fold pair accuracy (the project's
protocol, `iddetective.evaluation.metrics`), errors, pairs fixed / broken against the baseline,
TAR at FAR 1e-2 and 1e-3 on pairs.csv, TAR at FMR 1e-3 and 1e-4 over all pairs of the evaluated
photos, and seconds per face (landmarks included). The `errors` stage classifies the
baseline's 10-fold errors by cause (no face, the chosen face not the most central, several
faces, CNN-fallback face, tiny face, else a hard genuine pair or a look-alike impostor) and
tries choosing the most central or the largest face instead.

Run (from the repository root, in the project's virtualenv):

    OMP_NUM_THREADS=1 nice -n 10 python bench/levers.py      # every stage
    python bench/levers.py --stages report,errors            # the tables, from the cache
    python bench/levers.py --quick                           # the 500 pairs of an eighth

From an empty cache the default run is ~48 min on one core of a 2-core machine (under a load of
~5 from other work); with the cache in place `--stages report,errors` takes ~3 s, and the
default run about a minute (`timing` always reruns; jitter repeats its determinism check).
`--jitter-calls 2` adds num_jitters 10 (a second 5-jitter pass, ~11 min on the eighth subset).
Padding and jitter variants run on stratified random subsets of the pairs (PAD_SUBSET,
JITTER_SUBSET: "eighth" = 500 pairs / 840 photos, seed 0), reported next to the baseline on the
same pairs. `--quick` uses only the pairs of that eighth subset as if they were the whole set
(padding and jitter on an eighth of those, 62 pairs: indicative only; timing on 10 faces; its
own cache, bench/.cache/levers/lfw_dev-quick/; ~10 min from an empty cache, and its baseline
row equals the full run's baseline on the same eighth pairs).

Stages: detect base mirror5 lm68 mirror68 alt pad jitter timing report errors (any subset,
comma-separated, run in that order). The report, timing and errors tables are printed as
Markdown and also written to report.md, timing.md and errors.md in the cache folder.

Photo sets come from $IDDETECTIVE_FACES (default ../shared/faces beside the repository).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import dlib
import face_recognition_models as weights
import numpy as np

from iddetective.entities import Box
from iddetective.evaluation.metrics import (
    FOLDS,
    all_pairs,
    best_threshold,
    kfold_accuracy,
    rate_at,
    stratified_folds,
    tar_at_far,
    threshold_at_fmr,
)
from iddetective.faces.imaging import decode_image
from iddetective.faces.labelling import choose_labelled_face
from iddetective.faces.pipeline import Detection, FacePipeline, PipelineSettings
from iddetective.matching import distances

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
SET = "lfw_dev"
SETTINGS = PipelineSettings(fallback_detector="dlib-cnn")
#: Slow variants run on a stratified random share of the pairs (seed 0; quarter inside half).
PAD_SUBSET = "eighth"
JITTER_SUBSET = "eighth"
#: --quick keeps only the pairs of this subset, as if they were the whole set.
QUICK_SUBSET = "eighth"
TIMING_FACES = 40
QUICK_TIMING_FACES = 10
STAGES = (
    "detect",
    "base",
    "mirror5",
    "lm68",
    "mirror68",
    "alt",
    "pad",
    "jitter",
    "timing",
    "report",
    "errors",
)

#: A pass's embedder: (decoded pixels, face row of detect.npz) -> {key: (raw vector, seconds)}.
Embed = Callable[[np.ndarray, int], dict[str, tuple[np.ndarray, float]]]


def faces_root() -> Path:
    """`$IDDETECTIVE_FACES`, else `../shared/faces` relative to the repository root."""
    return Path(os.environ.get("IDDETECTIVE_FACES") or REPO.parent / "shared" / "faces")


class Paths:
    """Where the photos are read and the passes and tables are written (set by `main`)."""

    root = faces_root() / SET
    cache = CACHE_DIR / "levers" / SET


def clip_box(box: Box, width: int, height: int) -> Box:
    """The box clipped to the image, as `FacePipeline.analyse_image` does."""
    return Box(max(0, box.left), max(0, box.top), min(width, box.right), min(height, box.bottom))


# -- data ----------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def load(
    quick: bool = False,
) -> tuple[list[str], dict[str, str], np.ndarray, np.ndarray, np.ndarray]:
    """Photos of pairs.csv (sorted), person by photo, pair indices a/b and same (bool)."""
    for name in ("pairs.csv", "labels.csv"):
        if not (Paths.root / name).is_file():
            sys.exit(f"no labelled pairs: {Paths.root / name} does not exist")
    pairs = read_rows(Paths.root / "pairs.csv")
    if quick:
        keep = subsets(np.array([p["same"] == "1" for p in pairs]))[QUICK_SUBSET]
        pairs = [p for p, kept in zip(pairs, keep, strict=True) if kept]
    people = {r["path"]: r["person"] for r in read_rows(Paths.root / "labels.csv")}
    paths = sorted({p["path_a"] for p in pairs} | {p["path_b"] for p in pairs})
    index = {p: i for i, p in enumerate(paths)}
    a = np.array([index[p["path_a"]] for p in pairs])
    b = np.array([index[p["path_b"]] for p in pairs])
    same = np.array([p["same"] == "1" for p in pairs])
    return paths, people, a, b, same


def subsets(same: np.ndarray) -> dict[str, np.ndarray]:
    """Pair masks: 'half', 'quarter' and 'eighth' (each inside the last), stratified, seed 0."""
    rng = np.random.default_rng(0)
    half = np.zeros(len(same), bool)
    quarter = np.zeros(len(same), bool)
    eighth = np.zeros(len(same), bool)
    for kind in (True, False):
        where = rng.permutation(np.flatnonzero(same == kind))
        half[where[: len(where) // 2]] = True
        quarter[where[: len(where) // 4]] = True
        eighth[where[: len(where) // 8]] = True
    return {"all": np.ones(len(same), bool), "half": half, "quarter": quarter, "eighth": eighth}


def photos_of(mask: np.ndarray, a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    used = np.zeros(n, bool)
    used[a[mask]] = True
    used[b[mask]] = True
    return used


def image(path: str) -> np.ndarray:
    full = Paths.root / path
    return decode_image(full.read_bytes(), str(full), SETTINGS.max_side).pixels


def shape_of(box: np.ndarray, marks: np.ndarray) -> dlib.full_object_detection:
    rect = dlib.rectangle(*(int(v) for v in box))
    return dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in marks])


@cache
def model(name: str) -> Any:
    """dlib's 5- and 68-point shape predictors ("sp5", "sp68") and ResNet ("net"), loaded once."""
    if name == "sp5":
        return dlib.shape_predictor(weights.pose_predictor_five_point_model_location())
    if name == "sp68":
        return dlib.shape_predictor(weights.pose_predictor_model_location())
    if name == "net":
        return dlib.face_recognition_model_v1(weights.face_recognition_model_location())
    raise KeyError(name)


# -- detect --------------------------------------------------------------------------------------
class Recording:
    """Wraps the fallback detector to note which photos needed it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.calls = inner, inner.name, 0

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        self.calls += 1
        return self.inner.detect(image, upsample)


def stage_detect(paths: list[str]) -> None:
    target = Paths.cache / "detect.npz"
    if target.exists():
        return
    pipeline = FacePipeline(SETTINGS)
    recording = Recording(pipeline.fallback)
    pipeline.fallback = recording
    sp5, sp68 = model("sp5"), model("sp68")
    rows: dict[str, list[Any]] = {k: [] for k in ("photo", "box", "lm5", "lm68")}
    chosen: list[int] = []
    largest: list[int] = []
    central: list[int] = []
    nfaces: list[int] = []
    fallback: list[bool] = []
    size: list[tuple[int, int]] = []
    t_det = t5 = t68 = 0.0
    n_faces_total = 0
    start = time.perf_counter()
    for i, path in enumerate(paths):
        full = Paths.root / path
        t0 = time.perf_counter()
        decoded = decode_image(full.read_bytes(), str(full), SETTINGS.max_side)
        calls = recording.calls
        boxes, _ = pipeline.detect(decoded.pixels)
        t_det += time.perf_counter() - t0
        fallback.append(recording.calls > calls)
        size.append((decoded.width, decoded.height))
        # As analyse_image: upright clipped boxes, largest first (stable), then the label's choice.
        upright = [clip_box(b.scaled(decoded.scale), decoded.width, decoded.height) for b in boxes]
        order = sorted(range(len(boxes)), key=lambda k: upright[k].area, reverse=True)
        boxes = [boxes[k] for k in order]
        upright = [upright[k] for k in order]
        nfaces.append(len(boxes))
        if not boxes:
            chosen.append(-1)
            largest.append(-1)
            central.append(-1)
            continue
        chosen.append(choose_labelled_face(upright, decoded.width, decoded.height))
        largest.append(0)
        cx, cy = decoded.width / 2, decoded.height / 2
        central.append(
            min(
                range(len(upright)),
                key=lambda k: math.hypot(upright[k].centre[0] - cx, upright[k].centre[1] - cy),
            )
        )
        for box in boxes:
            rect = dlib.rectangle(box.left, box.top, box.right, box.bottom)
            t0 = time.perf_counter()
            s5 = sp5(decoded.pixels, rect)
            t1 = time.perf_counter()
            s68 = sp68(decoded.pixels, rect)
            t2 = time.perf_counter()
            t5, t68 = t5 + t1 - t0, t68 + t2 - t1
            n_faces_total += 1
            rows["photo"].append(i)
            rows["box"].append((box.left, box.top, box.right, box.bottom))
            rows["lm5"].append([(p.x, p.y) for p in s5.parts()])
            rows["lm68"].append([(p.x, p.y) for p in s68.parts()])
        if i % 500 == 0:
            progress(f"  detect {i}/{len(paths)} {time.perf_counter() - start:.0f}s")
    np.savez(
        target,
        paths=np.array(paths),
        chosen=np.array(chosen),
        largest=np.array(largest),
        central=np.array(central),
        nfaces=np.array(nfaces),
        fallback=np.array(fallback),
        size=np.array(size),
        face_photo=np.array(rows["photo"]),
        face_box=np.array(rows["box"]),
        face_lm5=np.array(rows["lm5"]),
        face_lm68=np.array(rows["lm68"]),
        sec_detect=t_det / len(paths),
        sec_lm5=t5 / max(n_faces_total, 1),
        sec_lm68=t68 / max(n_faces_total, 1),
    )
    print(
        f"detect: {len(paths)} photos in {time.perf_counter() - start:.0f}s, "
        f"{sum(fallback)} via CNN fallback, {sum(n == 0 for n in nfaces)} without a face"
    )


class Detected:
    """detect.npz: per photo and per face (rows), with `face_row` from photo to its face."""

    def __init__(self) -> None:
        with np.load(Paths.cache / "detect.npz") as d:
            # per photo
            self.paths: np.ndarray = d["paths"]
            self.chosen: np.ndarray = d["chosen"]  # a face of the photo's, -1 if none
            self.largest: np.ndarray = d["largest"]
            self.central: np.ndarray = d["central"]
            self.nfaces: np.ndarray = d["nfaces"]
            self.fallback: np.ndarray = d["fallback"]
            self.size: np.ndarray = d["size"]
            # per face
            self.face_photo: np.ndarray = d["face_photo"]
            self.face_box: np.ndarray = d["face_box"]
            self.face_lm5: np.ndarray = d["face_lm5"]
            self.face_lm68: np.ndarray = d["face_lm68"]
            # mean seconds per photo (detection) and per face (landmarks)
            self.sec_detect: np.ndarray = d["sec_detect"]
            self.sec_lm5: np.ndarray = d["sec_lm5"]
            self.sec_lm68: np.ndarray = d["sec_lm68"]
        self.first: dict[int, int] = {}
        for row, photo in enumerate(self.face_photo):
            self.first.setdefault(int(photo), row)

    def face_row(self, photo: int, which: str = "chosen") -> int | None:
        k = int(getattr(self, which)[photo])
        return None if k < 0 else self.first[photo] + k


# -- embedding passes -----------------------------------------------------------------------------
def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_pass(
    name: str,
    det: Detected,
    photos: np.ndarray,
    embed: Embed,
    which: str = "chosen",
    keys: tuple[str, ...] = ("v",),
) -> None:
    """embed(pixels, face_row) -> dict of raw vectors (keys); cached with seconds per face."""
    target = Paths.cache / f"{name}.npz"
    if target.exists():
        return
    n = len(det.paths)
    out = {k: np.full((n, 128), np.nan, np.float32) for k in keys}
    seconds = dict.fromkeys(keys, 0.0)
    count = 0
    start = time.perf_counter()
    todo = np.flatnonzero(photos)
    for step, i in enumerate(todo):
        row = det.face_row(int(i), which)
        if row is None:
            continue
        pixels = image(str(det.paths[i]))
        result = embed(pixels, row)
        for k in keys:
            vec, sec = result[k]
            out[k][i] = vec
            seconds[k] += sec
        count += 1
        if step % 500 == 0:
            progress(f"  {name} {step}/{len(todo)} {time.perf_counter() - start:.0f}s")
    mean_seconds = {f"sec_{k}": seconds[k] / max(count, 1) for k in keys}
    # allow_pickle (the default) named: mypy then knows no ** entry can be it
    np.savez(target, **out, **mean_seconds, faces=count, allow_pickle=True)
    progress(f"{name}: {count} faces, {time.perf_counter() - start:.0f}s")


def timed(fn: Callable[[], Any]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    value = fn()
    return np.asarray(value, np.float32), time.perf_counter() - t0


def stage_base(det: Detected, photos: np.ndarray) -> None:
    # The pipeline's own embedder (5-point, jitters 0, padding 0.25), on the stored box.
    pipeline = FacePipeline(SETTINGS)

    def embed(pixels: np.ndarray, row: int) -> dict[str, tuple[np.ndarray, float]]:
        box = Box(*(int(v) for v in det.face_box[row]))
        t0 = time.perf_counter()
        vectors, marks = pipeline.embedder.embed(pixels, [box], 0)
        sec = time.perf_counter() - t0
        assert np.array_equal(np.array(marks[0]), det.face_lm5[row]), "landmarks differ"
        return {"v": (vectors[0], sec)}

    run_pass("base", det, photos, embed)


def chip_embed(det: Detected, marks_key: str, padding: float, mirror: bool) -> Embed:
    net = model("net")

    def embed(pixels: np.ndarray, row: int) -> dict[str, tuple[np.ndarray, float]]:
        shape = shape_of(det.face_box[row], getattr(det, marks_key)[row])
        t0 = time.perf_counter()
        chip = dlib.get_face_chip(pixels, shape, size=150, padding=padding)
        if mirror:
            chip = np.ascontiguousarray(chip[:, ::-1])
        vec = np.asarray(net.compute_face_descriptor(chip), np.float32)
        return {"v": (vec, time.perf_counter() - t0)}

    return embed


def shape_embed(det: Detected, marks_key: str, padding: float, jitters: int) -> Embed:
    net = model("net")

    def embed(pixels: np.ndarray, row: int) -> dict[str, tuple[np.ndarray, float]]:
        shape = shape_of(det.face_box[row], getattr(det, marks_key)[row])
        return {"v": timed(lambda: net.compute_face_descriptor(pixels, shape, jitters, padding))}

    return embed


def stage_jitter(det: Detected, photos: np.ndarray, calls: int) -> None:
    net = model("net")
    # Determinism check on one face: twice in this process, then compare with stored first call.
    row = det.face_row(int(np.flatnonzero(det.chosen >= 0)[0]))
    assert row is not None
    pixels = image(str(det.paths[det.face_photo[row]]))
    shape = shape_of(det.face_box[row], det.face_lm5[row])
    first = np.asarray(net.compute_face_descriptor(pixels, shape, 5))
    second = np.asarray(net.compute_face_descriptor(pixels, shape, 5))
    print(
        f"jitter determinism (same process, two calls, jitters 5): max |diff| = "
        f"{np.abs(first - second).max():.4f}; first call of a fresh process: {first[:3]}"
    )

    def embed(pixels: np.ndarray, row: int) -> dict[str, tuple[np.ndarray, float]]:
        shape = shape_of(det.face_box[row], det.face_lm5[row])
        return {"v": timed(lambda: net.compute_face_descriptor(pixels, shape, 5))}

    # Two independent passes of 5 jitters each (dlib's generator runs on across calls), cached
    # separately; their mean is distributed exactly as num_jitters=10 (a mean of 10 jitters).
    for name in ("jit5a", "jit5b")[:calls]:
        run_pass(name, det, photos, embed)


# -- report ---------------------------------------------------------------------------------------
def fold_verdicts(dist: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: right under the 10-fold protocol, and the threshold its fold used."""
    fold = stratified_folds(same)
    present = ~np.isnan(dist)
    right = np.zeros(len(dist), bool)
    used = np.zeros(len(dist))
    for k in range(FOLDS):
        train, test = (fold != k) & present, fold == k
        threshold, _ = best_threshold(dist[train], same[train])
        match = present[test] & (dist[test] <= threshold)
        right[test] = (match == same[test]) & present[test]
        used[test] = threshold
    return right, used


def have(*names: str) -> bool:
    return all((Paths.cache / f"{n}.npz").exists() for n in names)


def load_vec(name: str, key: str = "v") -> tuple[np.ndarray, float]:
    with np.load(Paths.cache / f"{name}.npz") as d:
        return d[key], float(d[f"sec_{key}"])


def variants(det: Detected) -> list[tuple[str, str, np.ndarray, float]]:
    """(name, subset, raw vectors, embedding seconds per face incl. landmarks)."""
    out = []
    s5, s68 = float(det.sec_lm5), float(det.sec_lm68)
    if have("base"):
        base, tb = load_vec("base")
        out.append(("1 baseline (5-pt, jit 0, pad 0.25)", "all", base, tb + s5))
    if have("base", "mirror5"):
        mir, tm = load_vec("mirror5")
        out.append(("2 flip TTA (5-pt)", "all", base + mir, tb + tm + s5))
        out.append(
            (
                "2b flip TTA, mean of normalised",
                "all",
                distances.prepare(base) + distances.prepare(mir),
                tb + tm + s5,
            )
        )
        out.append(("(mirror chip alone)", "all", mir, tm + s5))
    if have("lm68"):
        l68, t68 = load_vec("lm68")
        out.append(("4 68-point, jit 0", "all", l68, t68 + s68))
    if have("base", "lm68"):
        out.append(("6a 5-pt + 68-pt average", "all", base + l68, tb + t68 + s5 + s68))
    if have("lm68", "mirror68"):
        m68, tm68 = load_vec("mirror68")
        out.append(("6b flip TTA + 68-point", "all", l68 + m68, t68 + tm68 + s68))
    if have("base", "mirror5", "lm68", "mirror68"):
        out.append(
            (
                "6c flip x (5-pt + 68-pt), 4 passes",
                "all",
                base + mir + l68 + m68,
                tb + tm + t68 + tm68 + s5 + s68,
            )
        )
    for pad in ("0.1", "0.5"):
        if have(f"pad{pad}"):
            v, t = load_vec(f"pad{pad}")
            out.append((f"5 padding {pad} (5-pt, jit 0)", PAD_SUBSET, v, t + s5))
    if have("jit5a"):
        a, ta = load_vec("jit5a")
        out.append(("3a num_jitters 5", JITTER_SUBSET, a, ta + s5))
    if have("jit5a", "jit5b"):
        b, tb2 = load_vec("jit5b")
        out.append(("3b num_jitters 10 (2 x 5 averaged)", JITTER_SUBSET, a + b, ta + tb2 + s5))
    return out


def figures(
    vec: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    same: np.ndarray,
    mask: np.ndarray,
    people_of: list[str],
) -> dict[str, Any]:
    """One variant's figures on the pairs of `mask` (and all pairs of their photos)."""
    v = distances.prepare(vec)
    dist = np.linalg.norm(v[a] - v[b], axis=1)
    d, s = dist[mask], same[mask]
    mean, sd = kfold_accuracy(d, s)
    right, _ = fold_verdicts(d, s)
    fold = stratified_folds(s)
    assert abs(np.mean([right[fold == k].mean() for k in range(FOLDS)]) - mean) < 1e-9
    tar2, thr2 = tar_at_far(d, s, 1e-2)
    tar3, thr3 = tar_at_far(d, s, 1e-3)
    photos = np.zeros(len(v), bool)
    photos[a[mask]] = photos[b[mask]] = True
    keep = np.flatnonzero(photos & ~np.isnan(v[:, 0]))
    genuine, impostor = all_pairs(v[keep], [people_of[k] for k in keep])
    allp = {}
    for fmr in (1e-3, 1e-4):
        t = threshold_at_fmr(impostor, fmr)
        allp[fmr] = (rate_at(genuine, t), t) if t is not None else None
    return {
        "mean": mean,
        "sd": sd,
        "right": right,
        "errors": int((~right).sum()),
        "n": len(d),
        "tar2": tar2,
        "thr2": thr2,
        "tar3": tar3,
        "thr3": thr3,
        "allp": allp,
        "ng": len(genuine),
        "ni": len(impostor),
        "dist": dist,
    }


def stage_report(
    det: Detected, a: np.ndarray, b: np.ndarray, same: np.ndarray, people: dict[str, str]
) -> None:
    masks = subsets(same)
    people_of = [people[p] for p in det.paths]
    base_raw, _ = load_vec("base")
    base_fig = {k: figures(base_raw, a, b, same, m, people_of) for k, m in masks.items()}
    lines = [
        "| variant | pairs | 10-fold acc. (mean ± sd) | errors "
        "| vs baseline on same pairs (fixed / broken) "
        "| TAR @ FAR 1e-2, pairs (thr) | TAR @ FAR 1e-3, pairs* (thr) "
        "| TAR @ FMR 1e-3, all pairs (thr) "
        "| TAR @ FMR 1e-4, all pairs (thr) | s / face |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    listed = variants(det)
    refs = [v for v in listed if v[0][:2] in ("1 ", "4 ", "6b")]
    for sub in sorted({v[1] for v in listed} - {"all"}):
        listed += [
            (f"{n} [same {sub} pairs, for reference]", sub, vec, sec) for n, _, vec, sec in refs
        ]
    for name, subset, vec, sec in listed:
        mask = masks[subset]
        f = figures(vec, a, b, same, mask, people_of)
        bf = base_fig[subset]
        fixed = int((f["right"] & ~bf["right"]).sum())
        broken = int((~f["right"] & bf["right"]).sum())
        allp = " | ".join(
            f"{f['allp'][r][0] * 100:.2f} % ({f['allp'][r][1]:.3f})" if f["allp"][r] else "n/a"
            for r in (1e-3, 1e-4)
        )
        lines.append(
            f"| {name} | {subset} ({f['n']}) | {f['mean'] * 100:.2f} % ± {f['sd'] * 100:.2f} "
            f"| {f['errors']} | {fixed} / {broken} (base {bf['mean'] * 100:.2f} %) "
            f"| {f['tar2'] * 100:.2f} % ({f['thr2']:.3f}) "
            f"| {f['tar3'] * 100:.2f} % ({f['thr3']:.3f}) | {allp} | {sec:.3f} |"
        )
    n_imp = {k: int((~same[m]).sum()) for k, m in masks.items()}
    lines.append("")
    lines.append(
        f"*FAR 1e-3 on pairs.csv: {n_imp['all']} impostor pairs => at most "
        f"{int(n_imp['all'] * 1e-3)} accepted (below the project's MIN_ERRORS=3 rule; "
        f"indicative only). 'All pairs' = every pair of the evaluated photos with labels.csv "
        f"identities (all: {base_fig['all']['ng']:,} genuine / {base_fig['all']['ni']:,} "
        f"impostor)."
    )
    lines.append(
        f"Detection: {float(det.sec_detect):.3f} s/photo (decode + HOG up1 + CNN fallback); "
        f"landmarks 5-pt {float(det.sec_lm5) * 1000:.1f} ms, "
        f"68-pt {float(det.sec_lm68) * 1000:.1f} ms per face (included in s / face)."
    )
    report = "\n".join(lines)
    (Paths.cache / "report.md").write_text(report + "\n")
    print(report)


def stage_errors(det: Detected, a: np.ndarray, b: np.ndarray, same: np.ndarray) -> None:
    """Baseline errors under the 10-fold protocol, by cause; alternative face choices."""
    base_raw, _ = load_vec("base")
    alt = {}
    for which in ("central", "largest"):
        if have(f"alt_{which}"):
            alt[which] = load_vec(f"alt_{which}")[0]
    v = distances.prepare(base_raw)
    dist = np.linalg.norm(v[a] - v[b], axis=1)
    right, thr = fold_verdicts(dist, same)
    widths = np.full(len(det.paths), np.nan)
    for i in range(len(det.paths)):
        row = det.face_row(i)
        if row is not None:
            widths[i] = det.face_box[row][2] - det.face_box[row][0]
    p2 = np.nanpercentile(widths, 2)
    lines = [
        f"chosen-face box width: median {np.nanmedian(widths):.0f} px, 2nd percentile {p2:.0f} "
        f"px (image {tuple(det.size[0])}); photos with several faces: {(det.nfaces > 1).sum()}, "
        f"chosen != largest: {(det.chosen != det.largest).sum()}, chosen != most central: "
        f"{(det.chosen != det.central).sum()}; CNN fallback photos: {det.fallback.sum()}"
    ]
    # Policies: replace the chosen face's vector where the alternative differs.
    for which, vec in alt.items():
        pol = base_raw.copy()
        differs = (det.chosen != getattr(det, which)) & (det.chosen >= 0)
        pol[differs] = vec[differs]
        pv = distances.prepare(pol)
        pdist = np.linalg.norm(pv[a] - pv[b], axis=1)
        m, s = kfold_accuracy(pdist, same)
        pr, _ = fold_verdicts(pdist, same)
        lines.append(
            f"policy 'choose {which} face': 10-fold {m * 100:.2f} % ± {s * 100:.2f} "
            f"(fixed {int((pr & ~right).sum())}, broken {int((~pr & right).sum())}; "
            f"{differs.sum()} photos differ)"
        )
    lines.append("")
    others = {}
    for label, names in (("68-pt", ("lm68",)), ("flip+68", ("lm68", "mirror68"))):
        if have(*names):
            raw = np.sum([load_vec(n)[0] for n in names], axis=0)
            ov = distances.prepare(raw)
            od = np.linalg.norm(ov[a] - ov[b], axis=1)
            others[label] = fold_verdicts(od, same)[0]
    extra = "".join(f" {k} right? |" for k in others)
    lines.append(
        "| pair | same | dist | fold thr | faces a/b | fallback a/b | chosen width a/b | "
        "central differs | verdict w/ central face | cause |" + extra
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(others))
    causes: dict[str, int] = {}
    for k in np.flatnonzero(~right):
        i, j = a[k], b[k]
        tags = []
        if np.isnan(dist[k]):
            tags.append("no face")
        several = det.nfaces[i] > 1 or det.nfaces[j] > 1
        cdiff = [p for p in (i, j) if det.chosen[p] != det.central[p]]
        cverdict = ""
        if cdiff and "central" in alt:
            pol = v.copy()
            for p in cdiff:
                pol[p] = distances.prepare(alt["central"][p][None])[0]
            d2 = float(np.linalg.norm(pol[i] - pol[j]))
            ok = (d2 <= thr[k]) == same[k]
            cverdict = f"{d2:.3f} -> {'right' if ok else 'still wrong'}"
            tags.append("chosen face not central" + (" (central fixes it)" if ok else ""))
        elif several:
            tags.append("several faces (chosen = central)")
        if det.fallback[i] or det.fallback[j]:
            tags.append("CNN-fallback face")
        if min(widths[i], widths[j]) < p2:
            tags.append("tiny face")
        if not tags:
            tags.append("hard genuine pair (far)" if same[k] else "look-alike impostor (near)")
        cause = "; ".join(tags)
        for t in tags:
            causes[t] = causes.get(t, 0) + 1
        lines.append(
            f"| {Path(det.paths[i]).stem} / {Path(det.paths[j]).stem} | {int(same[k])} "
            f"| {dist[k]:.3f} | {thr[k]:.3f} "
            f"| {det.nfaces[i]}/{det.nfaces[j]} | {int(det.fallback[i])}/{int(det.fallback[j])} "
            f"| {widths[i]:.0f}/{widths[j]:.0f} | {len(cdiff)} | {cverdict} | {cause} |"
            + "".join(f" {'yes' if r[k] else 'no'} |" for r in others.values())
        )
    lines.insert(
        1,
        f"baseline 10-fold errors: {int((~right).sum())} "
        f"({int((~right & same).sum())} genuine rejected, "
        f"{int((~right & ~same).sum())} impostors accepted); "
        f"by cause (a pair may have several): {causes}",
    )
    text = "\n".join(lines)
    (Paths.cache / "errors.md").write_text(text + "\n")
    print(text)


def stage_timing(det: Detected, faces: int = TIMING_FACES) -> None:
    """Seconds per face of each recipe, round-robin on the same faces (fair under a varying
    machine load): landmarks + chip + descriptor passes, from the decoded image and the box."""
    sp5, sp68, net = model("sp5"), model("sp68"), model("net")

    def flip(pixels: np.ndarray, shape: Any) -> np.ndarray:
        chip = dlib.get_face_chip(pixels, shape, size=150, padding=0.25)
        a = np.asarray(net.compute_face_descriptor(chip))
        return a + np.asarray(net.compute_face_descriptor(np.ascontiguousarray(chip[:, ::-1])))

    recipes: dict[str, Callable[[np.ndarray, Any], Any]] = {
        "baseline 5-pt": lambda px, r: net.compute_face_descriptor(px, sp5(px, r), 0),
        "68-pt": lambda px, r: net.compute_face_descriptor(px, sp68(px, r), 0),
        "flip 5-pt": lambda px, r: flip(px, sp5(px, r)),
        "flip 68-pt": lambda px, r: flip(px, sp68(px, r)),
        "jitters 5": lambda px, r: net.compute_face_descriptor(px, sp5(px, r), 5),
    }
    took: dict[str, list[float]] = {k: [] for k in recipes}
    rows = np.flatnonzero(det.chosen >= 0)[:faces]
    for i in rows:
        pixels = image(str(det.paths[i]))
        row = det.face_row(int(i))
        assert row is not None
        rect = dlib.rectangle(*(int(v) for v in det.face_box[row]))
        for name, fn in recipes.items():
            t0 = time.perf_counter()
            fn(pixels, rect)
            took[name].append(time.perf_counter() - t0)
    lines = [
        f"| recipe | median s / face ({len(rows)} faces, round-robin) | x baseline |",
        "|---|---|---|",
    ]
    base = np.median(took["baseline 5-pt"])
    for name, values in took.items():
        lines.append(f"| {name} | {np.median(values):.3f} | {np.median(values) / base:.2f} |")
    text = "\n".join(lines)
    (Paths.cache / "timing.md").write_text(text + "\n")
    print(text)


def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--stages",
        default="all",
        help=f"'all' or comma-separated stages of: {' '.join(STAGES)} (run in that order)",
    )
    parser.add_argument(
        "--jitter-calls",
        type=int,
        default=1,
        choices=(1, 2),
        help="1: num_jitters 5 only; 2: also num_jitters 10 (a second 5-jitter pass)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"only the pairs of the {QUICK_SUBSET} subset, timing on {QUICK_TIMING_FACES} faces",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    args.stages = list(STAGES) if args.stages == "all" else args.stages.split(",")
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {', '.join(unknown)}; choose from {' '.join(STAGES)}")
    return args


def main(argv: Iterable[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        Paths.cache = CACHE_DIR / "levers" / f"{SET}-quick"
    Paths.cache.mkdir(parents=True, exist_ok=True)
    paths, people, a, b, same = load(args.quick)
    masks = subsets(same)
    start = time.perf_counter()
    for stage in STAGES:
        if stage not in args.stages:
            continue
        t0 = time.perf_counter()
        if stage == "detect":
            stage_detect(paths)
            continue
        if not have("detect"):
            sys.exit(f"no {Paths.cache / 'detect.npz'}: run the detect stage first")
        det = Detected()
        if list(det.paths) != paths:
            sys.exit(f"{Paths.cache} was made from other photos: delete it and run again")
        everything = np.ones(len(paths), bool)
        if stage == "base":
            stage_base(det, everything)
        elif stage == "mirror5":
            run_pass("mirror5", det, everything, chip_embed(det, "face_lm5", 0.25, True))
        elif stage == "lm68":
            run_pass("lm68", det, everything, shape_embed(det, "face_lm68", 0.25, 0))
        elif stage == "mirror68":
            run_pass("mirror68", det, everything, chip_embed(det, "face_lm68", 0.25, True))
        elif stage == "alt":
            for which in ("central", "largest"):
                differs = (det.chosen != getattr(det, which)) & (det.chosen >= 0)
                embed = shape_embed(det, "face_lm5", 0.25, 0)
                run_pass(f"alt_{which}", det, differs, embed, which=which)
        elif stage == "pad":
            sub = photos_of(masks[PAD_SUBSET], a, b, len(paths))
            for pad in (0.1, 0.5):
                run_pass(f"pad{pad}", det, sub, shape_embed(det, "face_lm5", pad, 0))
        elif stage == "jitter":
            sub = photos_of(masks[JITTER_SUBSET], a, b, len(paths))
            stage_jitter(det, sub, args.jitter_calls)
        elif stage == "timing":
            stage_timing(det, QUICK_TIMING_FACES if args.quick else TIMING_FACES)
        elif stage == "report":
            stage_report(det, a, b, same, people)
        elif stage == "errors":
            stage_errors(det, a, b, same)
        progress(
            f"[{stage}] {time.perf_counter() - t0:.0f}s (total {time.perf_counter() - start:.0f}s)"
        )


if __name__ == "__main__":
    main()
