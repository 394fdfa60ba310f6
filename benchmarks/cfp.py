"""CFP (Sengupta et al., WACV 2016) frontal–frontal and frontal–profile verification, plus
profile→frontal rank-1, per embedder; per-|yaw| bucket views using pifr's estimated yaw.

Verification: the official 10 folds (threshold chosen on 9, tested on the 10th); protocol
pairs that point to absent identities (401–500) are skipped and counted. Rank-1: gallery =
frontal 01 of every identity present; probes = all profiles. Writes ROC PNG/CSV, the result
tables as CSV and Markdown (cfp, yaw_buckets) and a JSON run record to --out.

    python benchmarks/cfp.py [--embedders dlib_resnet mobilefacenet] [--identities 351-400] [--pairs-per-fold N]
"""
from __future__ import annotations

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401

import csv
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from benchmarks._harness import parser, save_record, embed_paths, pair_scores, plot_roc, run_header, shared_root, weights_sha, write_table

from pifr.eval.datasets import cfp_identity, cfp_images, cfp_protocol
from pifr.eval.metrics import rank1, roc, verification_summary

if TYPE_CHECKING:
    import pandas as pd

YAW_BUCKETS = ((0, 30), (30, 45), (45, 60), (60, 75), (75, 91))


def parse_range(s: str) -> range:
    a, _, b = s.partition("-")
    return range(int(a), int(b or a) + 1)


def bucket_of(y: float) -> str:
    if np.isnan(y):
        return "no face"
    for lo, hi in YAW_BUCKETS:
        if lo <= abs(y) < hi:
            return f"{lo}-{min(hi, 90)}"
    return "90+"


def main() -> None:
    ap = parser(__doc__, "results/cfp")
    ap.add_argument("--identities", default="1-400", help="identity range for rank-1 (e.g. 351-400 = tuning split)")
    ap.add_argument("--pairs-per-fold", type=int, default=0,
                    help="subset: the first N same and N different pairs of each fold, in protocol order (0 = all); "
                         "embeds only those pairs' images and skips rank-1")
    args = ap.parse_args()
    cfp = shared_root(args.shared) / "data" / "cfp"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ids = parse_range(args.identities)
    split = "report (CFP protocol folds, identities 001-400 present)" if args.identities == "1-400" else f"identities {args.identities}"
    if args.pairs_per_fold:
        split += f"; subset: first {args.pairs_per_fold} same + {args.pairs_per_fold} different pairs per fold"
    rec = run_header("cfp", str(cfp), weights_sha(args.embedders), split)
    t0 = time.time()
    protos = {s: cfp_protocol(cfp, s) for s in ("FF", "FP")}
    for s, p in protos.items():
        kept = [x for x in p.pairs if cfp_identity(x.a) in ids and cfp_identity(x.b) in ids]
        print(f"# CFP-{s}: {len(kept)} pairs evaluated, {p.skipped} skipped (identities absent here), "
              f"{len(p.pairs) - len(kept)} outside identities {args.identities}")
        if args.pairs_per_fold:
            taken: dict = {}
            sub = []
            for x in kept:
                if taken.get((x.fold, x.same), 0) < args.pairs_per_fold:
                    taken[(x.fold, x.same)] = taken.get((x.fold, x.same), 0) + 1
                    sub.append(x)
            kept = sub
            print(f"# CFP-{s}: subset of {len(kept)} pairs (the first {args.pairs_per_fold} same and different of each fold)")
        protos[s] = type(p)(kept, p.skipped)
    gallery = [im for im in cfp_images(cfp, ids, "frontal") if im.index == 1] if not args.pairs_per_fold else []
    probes = cfp_images(cfp, ids, "profile") if not args.pairs_per_fold else []
    all_paths = {x for p in protos.values() for pr in p.pairs for x in (pr.a, pr.b)}
    if not args.pairs_per_fold:
        all_paths |= {im.path for im in cfp_images(cfp)}
    results, curves = {}, {}
    rows = []
    for name in args.embedders:
        embs, yaws = embed_paths(sorted(all_paths), name, args.detector, with_yaw=True)
        res = {}
        for s, p in protos.items():
            scores, missing = pair_scores(p.pairs, embs)
            same = np.array([x.same for x in p.pairs])
            folds = np.array([x.fold for x in p.pairs])
            if len(set(folds.tolist())) < 2:
                # A subset of identities can fall in one protocol fold (351-400 are all in fold 10):
                # fall back to 10 interleaved folds over its pairs, and say so.
                folds = np.arange(len(folds)) % 10
                print(f"# CFP-{s}: identities {args.identities} lie in one protocol fold; using 10 interleaved folds of its pairs")
            m = verification_summary(scores, same, folds)
            m.update(pairs=len(p.pairs), skipped=p.skipped, pairs_with_missing_face=missing)
            res[s] = m
            far, tar, _ = roc(scores, same)
            curves[f"{name} CFP-{s}"] = (far, tar)
            with open(out / f"roc_{name}_{s}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["far", "tar"])
                w.writerows(zip(far.round(6), tar.round(6)))
            # Per-bucket accuracy of FP pairs at each fold's threshold, bucketed by the profile's estimated |yaw|.
            if s == "FP":
                from pifr.eval.metrics import kfold_accuracy

                kf = kfold_accuracy(scores, same, folds)
                correct = (scores >= np.array(kf.thresholds)[folds]) == same
                bk = np.array([bucket_of(yaws[str(x.b)]) for x in p.pairs])
                for b in sorted(set(bk)):
                    sel = bk == b
                    rows.append({"embedder": name, "view": "FP verification", "bucket": b, "n": int(sel.sum()),
                                 "value": float(correct[sel].mean())})
        results[name] = res
        if not gallery:  # a pair subset: no rank-1
            continue
        g_ok = [im for im in gallery if embs[str(im.path)] is not None]
        G = np.stack([embs[str(im.path)] for im in g_ok])
        gid = [im.identity for im in g_ok]
        P, pid, pb = [], [], []
        for im in probes:
            e = embs[str(im.path)]
            P.append(e if e is not None else np.zeros(G.shape[1], np.float32))  # a missing face never matches
            pid.append(im.identity)
            pb.append(bucket_of(yaws[str(im.path)]))
        P = np.stack(P)
        res["rank1_profile_to_frontal"] = rank1(P, pid, G, gid)
        res["rank1_probes"] = len(P)
        pb = np.array(pb)
        for b in sorted(set(pb)):
            sel = pb == b
            rows.append({"embedder": name, "view": "rank-1", "bucket": b, "n": int(sel.sum()),
                         "value": rank1(P[sel], np.array(pid)[sel], G, gid)})
    plot_roc(curves, out / "roc.png", "CFP verification ROC")
    write_table(summary_table(results), out, "cfp", "CFP verification and rank-1 (± : sd over the folds)", SUMMARY_FORMAT)
    write_table(bucket_table(rows), out, "yaw_buckets", "Per estimated-|yaw| bucket (profile image)")
    rec.update(results=results, buckets=rows, seconds=round(time.time() - t0, 1), detector=args.detector)
    save_record(out, rec, "cfp")
    print(f"\nwrote {out}/roc.png, roc_*.csv, cfp.csv/.md, yaw_buckets.csv/.md, cfp.json")


#: Markdown float formats of :func:`summary_table`'s columns (the rest: one decimal).
SUMMARY_FORMAT = {"CFP-FF acc %": ".2f", "± FF %": ".2f", "FF EER %": ".2f", "CFP-FP acc %": ".2f", "± FP %": ".2f",
                  "FP EER %": ".2f", "FP AUC": ".4f"}


def summary_table(results: dict) -> "pd.DataFrame":
    """One row per embedder: FF and FP accuracy (mean and sd over the folds), EER, FP AUC and
    TAR at FAR 1 %, rank-1 profile→frontal and its probes (blank for a pair subset); rates in %."""
    import pandas as pd

    out = []
    for name, r in results.items():
        ff, fp = r["FF"], r["FP"]
        out.append({"embedder": name, "CFP-FF acc %": 100 * ff["accuracy"], "± FF %": 100 * ff["accuracy_std"],
                    "FF EER %": 100 * ff["eer"], "CFP-FP acc %": 100 * fp["accuracy"], "± FP %": 100 * fp["accuracy_std"],
                    "FP EER %": 100 * fp["eer"], "FP AUC": fp["auc"], "FP TAR@FAR=1% %": 100 * fp["tar_at_far_1e-2"],
                    "rank-1 profile→frontal %": 100 * r["rank1_profile_to_frontal"] if "rank1_probes" in r else None,
                    "rank-1 probes": r.get("rank1_probes")})
    return pd.DataFrame(out).astype({"rank-1 probes": "Int64"}) if out else pd.DataFrame(out)


def bucket_table(rows: list) -> "pd.DataFrame":
    """The per-|yaw|-bucket rows (fractions) as a table in %."""
    import pandas as pd

    return pd.DataFrame([{"embedder": r["embedder"], "view": r["view"], "|yaw| bucket": r["bucket"], "n": r["n"],
                          "value %": 100 * r["value"]} for r in rows])


if __name__ == "__main__":
    main()
