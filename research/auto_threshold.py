"""Research: does the "auto" rule move impostor scores? On CFP 351-400 (tuning split), every
cross-identity frontal x profile pair (500 x 200), raw against the rule (profile fused with its
frontal 3D render): FAR at the embedder's threshold, and the threshold shift that restores raw's
FAR there (quantile matching), with TAR before and after.

    python -m research.auto_threshold [EMBEDDER ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import embed_paths, shared_root  # noqa: E402
from benchmarks.rotation import IDS, embed_renders, fits_of  # noqa: E402

from pifr.embedders import get_embedder  # noqa: E402
from pifr.eval.datasets import cfp_images  # noqa: E402
from pifr.policy import shipped_rules  # noqa: E402
from pifr.pooling import fuse_embeddings  # noqa: E402
AUTO_RULES = shipped_rules().by_embedder()  # the shipped rules, read only


def main():
    cfp = shared_root() / "data" / "cfp"
    fr = cfp_images(cfp, IDS, "frontal")
    pr = cfp_images(cfp, IDS, "profile")
    fits = fits_of([im.path for im in pr], "retinaface")
    print("split: CFP 351-400 (tuning); all frontal x profile pairs")
    only = sys.argv[1:]  # embedder names, or all with a rule
    for name, rule in AUTO_RULES.items():
        if only and name not in only:
            continue
        t, w = rule.yaw_threshold, rule.fusion_weight
        emb = get_embedder(name)
        raw, yaws = embed_paths([im.path for im in fr + pr], name, "retinaface", with_yaw=True)
        ren = embed_renders(fits, emb, rule.view_yaws, yaws)  # the rule's view, on each face's own side
        F = [(im.identity, raw[str(im.path)]) for im in fr if raw[str(im.path)] is not None]
        P = [(im.identity, raw[str(im.path)], ren[str(im.path)], abs(yaws[str(im.path)])) for im in pr
             if raw[str(im.path)] is not None]
        fid = np.array([i for i, _ in F]); fe = np.stack([e for _, e in F])
        pid = np.array([i for i, *_ in P])
        pe_raw = np.stack([e for _, e, _, _ in P])
        pe_rule = np.stack([fuse_embeddings(e, r, w) if (r is not None and y > t) else e for _, e, r, y in P])
        same = fid[:, None] == pid[None]
        s_raw, s_rule = fe @ pe_raw.T, fe @ pe_rule.T
        thr = emb.threshold
        far_raw, far_rule = (s_raw[~same] >= thr).mean(), (s_rule[~same] >= thr).mean()
        # Threshold for the rule with raw's FAR at the default threshold.
        imp = np.sort(s_rule[~same])
        k = int(np.ceil((1 - far_raw) * len(imp)))
        thr_rule = float(imp[min(k, len(imp) - 1)])
        print(f"\n{name} rule |yaw|>{t:g} w={w:g} view at ±{'/'.join(f'{a:g}' for a in rule.view_yaws)}°: {int((~same).sum())} impostor / {int(same.sum())} genuine pairs")
        print(f"  at the default threshold {thr:.4f}: raw FAR {100 * far_raw:.2f} % TAR {100 * (s_raw[same] >= thr).mean():.1f} % | "
              f"rule FAR {100 * far_rule:.2f} % TAR {100 * (s_rule[same] >= thr).mean():.1f} %")
        print(f"  rule at {thr_rule:.4f} (shift {thr_rule - thr:+.4f}, raw's FAR): FAR {100 * (s_rule[~same] >= thr_rule).mean():.2f} % "
              f"TAR {100 * (s_rule[same] >= thr_rule).mean():.1f} %")
        # Only pairs whose profile was fused move: the shift there alone.
        moved = np.array([r is not None and y > t for _, _, r, y in P])
        imp_m = np.sort(s_rule[:, moved][~same[:, moved]])
        far_m = (s_raw[:, moved][~same[:, moved]] >= thr).mean()
        k = int(np.ceil((1 - far_m) * len(imp_m)))
        thr_m = float(imp_m[min(k, len(imp_m) - 1)])
        print(f"  fused profiles only ({int(moved.sum())}): raw FAR {100 * far_m:.2f} % -> rule {100 * (imp_m >= thr).mean():.2f} % at the default; "
              f"shift {thr_m - thr:+.4f} restores it: TAR raw {100 * (s_raw[:, moved][same[:, moved]] >= thr).mean():.1f} % -> "
              f"rule {100 * (s_rule[:, moved][same[:, moved]] >= thr_m).mean():.1f} %")
        imp_r = np.sort(s_raw[:, moved][~same[:, moved]])
        for far in (1e-2, 1e-3, 1e-4):
            q = lambda a: float(a[min(int(np.ceil((1 - far) * len(a))), len(a) - 1)])  # noqa: E731
            print(f"  FAR {far:g} over fused profiles: raw threshold {q(imp_r):.4f}, rule {q(imp_m):.4f} (shift {q(imp_m) - q(imp_r):+.4f})")


if __name__ == "__main__":
    main()
