"""Yaw estimation against coarse real labels: CMU Face Images (straight / left / right) and CFP
(frontal / profile), for the 3DDFA_V2 regressor and the landmark-geometry fallback.

Reports per-label mean ± std of the estimate, the sign accuracy on turned faces, and how well
|yaw| separates near-frontal (< 30°) from strongly turned (> 60°) faces (CFP frontal vs profile).

    python benchmarks/yaw.py
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401
from benchmarks._harness import cache_dir, run_header, save_record, shared_root
from tqdm import tqdm

import pifr
from pifr.eval.datasets import cfp_images, cmu_faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--cfp-identities", default="351-400")
    ap.add_argument("--out", default="results/yaw")
    args = ap.parse_args()
    root = shared_root(args.shared)
    rec = run_header("yaw", f"{root}/data/cmu_faces, {root}/data/cfp", {}, f"report (CMU all; CFP {args.cfp_identities})")
    labelled = []
    cmu = cmu_faces(root / "data" / "cmu_faces" / "cmu_faces_full_and_half.tar.gz", cache_dir() / "cmu_faces")
    for im in cmu:
        if im.pose in ("straight", "left", "right"):
            labelled.append((f"CMU {im.pose}", pifr.load_image(im.path)))
    a, _, b = args.cfp_identities.partition("-")
    for im in cfp_images(root / "data" / "cfp", range(int(a), int(b) + 1)):
        labelled.append((f"CFP {im.pose}", pifr.load_image(im.path)))
    est = {"3ddfa": {}, "landmarks": {}}
    missed = {}
    for label, img in tqdm(labelled, desc="yaw"):
        faces = pifr.detect(img, yaw=False)
        if not faces:
            missed[label] = missed.get(label, 0) + 1
            continue
        for m in est:
            est[m].setdefault(label, []).append(pifr.estimate_yaw(img, faces[0], method=m))
    res = {}
    print("\n| method | label | n | mean yaw ° | std ° | sign correct % |\n|---|---|---|---|---|---|")
    for m, by in est.items():
        res[m] = {}
        for label, ys in sorted(by.items()):
            y = np.array(ys)
            sign = {"CMU left": np.mean(y > 0), "CMU right": np.mean(y < 0)}.get(label, float("nan"))
            res[m][label] = {"n": len(y), "mean": float(y.mean()), "std": float(y.std()), "sign_correct": float(sign)}
            print(f"| {m} | {label} | {len(y)} | {y.mean():+.1f} | {y.std():.1f} | {'' if np.isnan(sign) else f'{100 * sign:.1f}'} |")
        fr, pr = np.abs(by["CFP frontal"]), np.abs(by["CFP profile"])
        res[m]["separation"] = {
            "cfp_frontal_below_30": float(np.mean(fr < 30)), "cfp_profile_above_60": float(np.mean(pr > 60)),
            "cfp_profile_above_45": float(np.mean(pr > 45)),
        }
        s = res[m]["separation"]
        print(f"| {m} | CFP frontal with |yaw| < 30° | {len(fr)} | {100 * s['cfp_frontal_below_30']:.1f} % | | |")
        print(f"| {m} | CFP profile with |yaw| > 60° (> 45°) | {len(pr)} | {100 * s['cfp_profile_above_60']:.1f} % ({100 * s['cfp_profile_above_45']:.1f} %) | | |")
    print(f"\nno face detected: {missed}")
    rec.update(results=res, missed=missed)
    save_record(Path(args.out), rec, "yaw")


if __name__ == "__main__":
    main()
