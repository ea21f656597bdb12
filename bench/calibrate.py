"""Make the shipped calibration table: distance → false-match rate, from labelled photos.

Every photo of a labelled set (default lfw_dev) is embedded once through the pipeline
(bench/threshold.py's cached embeddings), all pairs of photos of different people give the
impostor distances, and `matching.calibration.build_calibration` makes the table by the
method `iddetective calibrate` uses too: the share of them within each distance of a grid
(0.20 to 0.80, step 0.005) is the measured false-match rate there; rates under 3 / impostor
pairs cannot be measured, and for them the table carries a straight line through log10(rate)
against distance, fitted (least squares) on the measured points from that floor to 1e-3.

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
from iddetective.matching.calibration import build_calibration

from threshold import LabelledSet, embed_set, faces_root

REPO = Path(__file__).resolve().parent.parent


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
    made_from = (
        f"{'+'.join(args.sets)}: {photos:,} labelled photos with a face, "
        f"{sum(map(len, genuines)):,} genuine and {sum(map(len, impostors)):,} impostor pairs "
        "(bench/calibrate.py)"
    )
    model = pipeline_for(PipelineSettings()).embedder.name
    result = build_calibration(model, made_from, np.concatenate(impostors)).to_json()
    target = REPO / "src" / "iddetective" / "matching" / "calibration" / f"{model}.json"
    if target.is_file():
        # The shipped thresholds were chosen by the benches (thresholds_chosen_by): kept.
        shipped = json.loads(target.read_text())
        for key in ("thresholds", "thresholds_chosen_by"):
            if key in shipped:
                result[key] = shipped[key]
    text = json.dumps(result, indent=1)
    if args.print:
        print(text)
        return
    target.parent.mkdir(exist_ok=True)
    target.write_text(text + "\n")
    print(f"wrote {target}: {made_from}; tail {result['tail']}")


if __name__ == "__main__":
    main()
