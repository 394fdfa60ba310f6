"""Calibrate each embedder's verification threshold on the tuning split only.

Threshold = the cosine threshold of best accuracy on the named tuning data (``--data``):

* ``lfw`` (default): LFW ``pairsDevTrain.txt`` (1,100 same + 1,100 different pairs; the official
  development split);
* ``cfp``: CFP frontal–frontal protocol pairs of identities 351–400 (the tuning identities);
* both: one threshold over the pooled pairs (each set's accuracy at it is reported too).

For a model registered with ``pifr.register_embedder`` or in ``$PIFR_EMBEDDERS`` the threshold is
stored with its registration: written into the ``$PIFR_EMBEDDERS`` file it came from, or printed as
the ``register_embedder`` line to use. Built-in embedders' thresholds live in pifr/embedders.py.

    python benchmarks/calibrate.py [--embedders dlib_resnet mobilefacenet] [--data lfw cfp]
    PIFR_EMBEDDERS=models/embedders.json python benchmarks/calibrate.py --embedder w600k_r50
"""
from __future__ import annotations

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401

import json
from pathlib import Path

import numpy as np
from benchmarks._harness import parser, append_runlog, embed_paths, git_commit, pair_scores, run_header, shared_root, weights_sha

from pifr import onnx_registry
from pifr.eval.datasets import cfp_identity, cfp_protocol, lfw_pairs
from pifr.eval.metrics import best_threshold

TUNING_CFP = range(351, 401)


def tuning_sets(root: Path, data):
    """``{name: (pairs, face selection, description)}`` for the requested tuning data."""
    sets = {}
    if "lfw" in data:
        lfw = root / "data" / "lfw"
        sets["lfw"] = (lfw_pairs(lfw, "pairsDevTrain.txt"), "center", f"LFW pairsDevTrain ({lfw})")
    if "cfp" in data:
        cfp = root / "data" / "cfp"
        p = cfp_protocol(cfp, "FF").pairs
        kept = [x for x in p if cfp_identity(x.a) in TUNING_CFP and cfp_identity(x.b) in TUNING_CFP]
        sets["cfp"] = (kept, "largest", f"CFP frontal-frontal pairs of identities 351-400 ({cfp})")
    return sets


def main() -> None:
    ap = parser(__doc__, "results/calibrate")
    ap.add_argument("--data", nargs="+", choices=["lfw", "cfp"], default=["lfw"],
                    help="tuning pairs: LFW pairsDevTrain and/or CFP 351-400 frontal-frontal")
    args = ap.parse_args()
    sets = tuning_sets(shared_root(args.shared), args.data)
    desc = " + ".join(d for _, _, d in sets.values())
    split = "tune (" + " + ".join({"lfw": "LFW pairsDevTrain", "cfp": "CFP identities 351-400, FF"}[k] for k in sets) + ")"
    rec = run_header("calibrate", desc, weights_sha(args.embedders), split)
    registered = onnx_registry.registered()
    out = {}
    print(f"\n| embedder | threshold (cosine) | accuracy % at it ({', '.join(sets)}) | FAR at threshold % | pairs |")
    print("|---|---|---|---|---|")
    for name in args.embedders:
        scores, same, per = [], [], {}
        for key, (pairs, select, _) in sets.items():
            embs = embed_paths([p.a for p in pairs] + [p.b for p in pairs], name, args.detector, select=select)
            s, missing = pair_scores(pairs, embs)
            scores.append(s)
            same.append(np.array([p.same for p in pairs]))
            per[key] = {"pairs": len(pairs), "missing": missing}
        thr, acc = best_threshold(np.concatenate(scores), np.concatenate(same))
        for key, s, y in zip(sets, scores, same):
            per[key]["accuracy"] = float(np.mean((s >= thr) == y))
        allsame = np.concatenate(same)
        far = float(np.mean(np.concatenate(scores)[~allsame] >= thr))
        out[name] = {"threshold": round(thr, 4), "accuracy": acc, "far": far, "sets": per}
        accs = ", ".join(f"{100 * per[k]['accuracy']:.2f}" for k in sets)
        print(f"| {name} | {thr:.4f} | {accs} | {100 * far:.2f} | {len(allsame)} |")
        if name in registered:
            source = (f"benchmarks/calibrate.py --data {' '.join(sets)}: best-accuracy cosine threshold on {split}, "
                      f"accuracy {100 * acc:.2f} %, {len(allsame)} pairs, commit {git_commit()}, {rec['time']}")
            written = onnx_registry.set_threshold(name, thr, source)
            if written:
                print(f"#   stored threshold {thr:.4f} for {name} in {written}")
            else:
                print(f"#   {name} was registered in code; record its threshold there:\n#   "
                      + onnx_registry.registration_line(registered[name], thr))
            out[name]["stored_in"] = str(written) if written else None
    rec["results"] = out
    append_runlog(Path(args.out), rec)
    (Path(args.out) / "thresholds.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
