"""Calibrate each embedder's default verification threshold on the tuning split only.

Threshold = the cosine threshold of best accuracy on LFW ``pairsDevTrain.txt`` (1,100 same +
1,100 different pairs; the official development split). Also reports where that threshold
lands on CFP 351–400 frontal–profile pairs (tuning identities), for information.

    python benchmarks/calibrate.py [--embedders dlib_resnet mobilefacenet]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from _harness import parser, append_runlog, embed_paths, pair_scores, run_header, shared_root, weights_sha

from pifr.eval.datasets import lfw_pairs
from pifr.eval.metrics import best_threshold


def main() -> None:
    ap = parser(__doc__, "results/calibrate")
    args = ap.parse_args()
    lfw = shared_root(args.shared) / "data" / "lfw"
    pairs = lfw_pairs(lfw, "pairsDevTrain.txt")
    rec = run_header("calibrate", str(lfw / "pairsDevTrain.txt"), weights_sha(args.embedders), "tune (LFW pairsDevTrain)")
    same = np.array([p.same for p in pairs])
    out = {}
    print("\n| embedder | threshold (cosine) | DevTrain accuracy % | FAR at threshold % |")
    print("|---|---|---|---|")
    for name in args.embedders:
        embs = embed_paths([p.a for p in pairs] + [p.b for p in pairs], name, args.detector, select="center")
        scores, missing = pair_scores(pairs, embs)
        thr, acc = best_threshold(scores, same)
        far = float(np.mean(scores[~same] >= thr))
        out[name] = {"threshold": round(thr, 4), "accuracy": acc, "far": far, "missing": missing}
        print(f"| {name} | {thr:.4f} | {100 * acc:.2f} | {100 * far:.2f} |")
    rec["results"] = out
    append_runlog(Path(args.out), rec)
    (Path(args.out) / "thresholds.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
