"""Make the shipped calibration table: distance → false-match rate, from labelled photos.

Every photo of a labelled set (default lfw_dev) is embedded once through the pipeline
(bench/threshold.py's cached embeddings), all pairs of photos of different people give the
impostor distances, and the share of them within each distance of a grid (0.20 to 0.80,
step 0.005) is the measured false-match rate there. Rates under 3 / impostor pairs cannot
be measured; for them the table carries a straight line through log10(rate) against
distance, fitted (least squares) on the measured points with rates from that floor to 1e-3.

    python bench/calibrate.py    # writes src/iddetective/matching/calibration/<model>.json
    python bench/calibrate.py --sets lfw_dev --print
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from iddetective.evaluation.metrics import all_pairs
from iddetective.faces.pipeline import PipelineSettings, pipeline_for

from threshold import LabelledSet, embed_set, faces_root

REPO = Path(__file__).resolve().parent.parent
GRID = np.round(np.arange(0.20, 0.8001, 0.005), 3)
TAIL_TOP = 1e-3


def measure(impostor: np.ndarray) -> np.ndarray:
    """Share of the (sorted) impostor distances within each grid distance."""
    return np.searchsorted(impostor, GRID, side="right") / len(impostor)


def fit_tail(fmrs: np.ndarray, floor: float) -> tuple[float, float]:
    """log10(rate) = a + b * distance, on the measured points between the floor and 1e-3."""
    usable = (fmrs >= floor) & (fmrs <= TAIL_TOP)
    b, a = np.polyfit(GRID[usable], np.log10(fmrs[usable]), 1)
    return float(a), float(b)


def table(name: str, photos: int, impostor: np.ndarray, genuine: np.ndarray) -> dict[str, object]:
    fmrs = measure(impostor)
    floor = 3 / len(impostor)
    a, b = fit_tail(fmrs, floor)
    return {
        "model": pipeline_for(PipelineSettings()).embedder.name,
        "made_from": (
            f"{name}: {photos:,} labelled photos with a face, {len(genuine):,} genuine and "
            f"{len(impostor):,} impostor pairs (bench/calibrate.py)"
        ),
        "impostor_pairs": len(impostor),
        "method": (
            "measured share of impostor pairs within each distance; below 3 / impostor pairs, "
            "log10(rate) = a + b * distance fitted on the measured rates from that floor to 1e-3"
        ),
        "points": [[float(d), float(f)] for d, f in zip(GRID, fmrs, strict=True)],
        "tail": {"a": a, "b": b},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["lfw_dev"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--print", action="store_true", help="print instead of writing")
    args = parser.parse_args()
    root = faces_root()
    impostors, genuines, photos = [], [], 0
    for name in args.sets:
        labelled = LabelledSet.load(root, name)
        embeddings = embed_set(labelled, args.workers)
        genuine, impostor = all_pairs(embeddings.normalised, labelled.people)
        genuines.append(genuine)
        impostors.append(impostor)
        photos += int(embeddings.found.sum())
    result = table(
        "+".join(args.sets), photos, np.sort(np.concatenate(impostors)), np.concatenate(genuines)
    )
    text = json.dumps(result, indent=1)
    if args.print:
        print(text)
        return
    target = REPO / "src" / "iddetective" / "calibration" / f"{result['model']}.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(text + "\n")
    print(f"wrote {target}: {result['made_from']}; tail a={result['tail']}")


if __name__ == "__main__":
    main()
