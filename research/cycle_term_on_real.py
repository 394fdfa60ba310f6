"""Diagnostic: does the cycle term (``terms.cycle_loss``, once a training term) tell, on *real* profiles, the
person's own frontal from another person's, or from a copy of the profile?

On renders cropped by the reference head's own landmarks it scores the true frontal below a
copy (tests/test_geometry.py). On a real profile, and on a render cropped as real profiles are,
the flow comes from RetinaFace's 5 points, the yaw and a head that is not the face's. For every profile of a pack (mirrored to face
right, as in training) this scores, with the training term's own code: a frontal photo of the same
person, a frontal photo of another identity of the pack (the next one in order), the profile
itself (a copy) and the profile with its mirror image over it (the "ghost"). A term that leads a
generator to the person's frontal must at least score the person's frontal below the others'.
No frontal here is pixel-aligned with its profile (CFP: other photos), so all scores carry that
misfit alike.

    python -m research.cycle_term_on_real packs/cfp_val.npz --identities 351-400 [--model3d model3Ddlib.mat]

Prints each candidate's mean term by yaw band and how often the own frontal scores below another
person's (paired, per profile).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pifr.train.data import Pack, PairDataset, identity_range
from research.terms import cycle_loss  # research/terms.py: the term left training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pack")
    ap.add_argument("--identities", default="351-400")
    ap.add_argument("--model3d", default=None, help="model3Ddlib.mat (default: the registry's search path)")
    ap.add_argument("--space", default="pooled", choices=["pooled", "gradient"])
    args = ap.parse_args()
    ds = PairDataset(Pack.load(Path(args.pack)), identity_range(args.identities), max_targets_per_input=1,
                     flows=True, model_path=args.model3d)
    items = [ds[k] for k in range(len(ds))]
    # Another identity's frontal for each profile: the first pair of the next identity in order.
    first = {}
    for it in items:
        first.setdefault(it["identity"], it["target"])
    ids = sorted(first)
    other = {a: first[ids[(i + 1) % len(ids)]] for i, a in enumerate(ids)}
    rows = []
    for it in items:
        x, f, v = it["input"][None], it["flow"][None], it["flow_valid"][None]
        if float(v.sum()) == 0:
            continue
        cands = {"own frontal": it["target"][None], "other's frontal": other[it["identity"]][None],
                 "copy": x, "ghost": 0.5 * (x + x.flip(3))}
        rows.append((it["yaw"], {k: float(cycle_loss(c, x, f, v, space=args.space)) for k, c in cands.items()}))
    names = list(rows[0][1])
    print(f"{args.pack}: {len(rows)} profiles of identities {args.identities}; cycle term ({args.space}), mean by |yaw| band")
    print(f"{'|yaw|':>10} {'n':>4} " + " ".join(f"{n:>16}" for n in names))
    for lo, hi in ((0, 45), (45, 60), (60, 75), (75, 91)):
        sel = [r for y, r in rows if lo <= y < hi]
        if sel:
            print(f"{lo:>4}-{hi:<5} {len(sel):>4} " + " ".join(f"{np.mean([r[n] for r in sel]):>16.4f}" for n in names))
    own = np.array([r["own frontal"] for _, r in rows])
    oth = np.array([r["other's frontal"] for _, r in rows])
    cp = np.array([r["copy"] for _, r in rows])
    print(f"own frontal below other's: {np.mean(own < oth):.3f} of profiles; below the copy: {np.mean(own < cp):.3f}")


if __name__ == "__main__":
    main()
