"""LFW 10-fold verification accuracy for each real embedder (pairs.txt; threshold from the other 9 folds).

    python benchmarks/lfw.py [--shared ../shared] [--embedders dlib_resnet mobilefacenet] [--detector retinaface] [--out results/lfw]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _harness import append_runlog, embed_paths, pair_scores, run_header, shared_root, weights_sha

from pifr.datasets import lfw_pairs
from pifr.metrics import verification_summary

import numpy as np

PUBLISHED = {"dlib_resnet": 99.38, "mobilefacenet": 99.48}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--embedders", nargs="+", default=["dlib_resnet", "mobilefacenet"])
    ap.add_argument("--detector", default="retinaface")
    ap.add_argument("--pairs", default="pairs.txt", help="pairs.txt (report) or pairsDevTrain.txt (tune)")
    ap.add_argument("--out", default="results/lfw")
    args = ap.parse_args()
    lfw = shared_root(args.shared) / "data" / "lfw"
    pairs = lfw_pairs(lfw, args.pairs)
    split = "report (LFW pairs.txt, 10 folds)" if args.pairs == "pairs.txt" else f"tune ({args.pairs})"
    rec = run_header("lfw", str(lfw), weights_sha(args.embedders), split)
    rec.update(detector=args.detector, pairs=len(pairs))
    t0 = time.time()
    results = {}
    print(f"\n| embedder | accuracy % (mean ± std, 10-fold) | EER % | AUC | TAR@FAR=1e-3 | faces missing | published |")
    print("|---|---|---|---|---|---|---|")
    for name in args.embedders:
        embs = embed_paths([p.a for p in pairs] + [p.b for p in pairs], name, args.detector, select="center")
        scores, missing = pair_scores(pairs, embs)
        same = np.array([p.same for p in pairs])
        folds = np.array([p.fold for p in pairs])
        m = verification_summary(scores, same, folds)
        m["pairs_with_missing_face"] = missing
        results[name] = m
        print(f"| {name} | {100 * m['accuracy']:.2f} ± {100 * m['accuracy_std']:.2f} | {100 * m['eer']:.2f} | {m['auc']:.4f} | "
              f"{100 * m['tar_at_far_1e-3']:.1f} | {missing} | {PUBLISHED.get(name, '-')} (quoted) |")
    rec.update(results=results, seconds=round(time.time() - t0, 1))
    append_runlog(Path(args.out), rec)
    (Path(args.out) / "lfw.json").write_text(json.dumps(rec, indent=2, default=float))


if __name__ == "__main__":
    main()
