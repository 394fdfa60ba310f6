"""Detection rate of each detector on CFP frontals and profiles (identities 001-400), with time per image.

    python benchmarks/detection.py [--detectors retinaface mtcnn] [--limit N]
"""
from __future__ import annotations

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401

import argparse
import time
from pathlib import Path

from benchmarks._harness import save_record, run_header, shared_root
from tqdm import tqdm

import pifr
from pifr.eval.datasets import cfp_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--detectors", nargs="+", default=["retinaface", "mtcnn"])
    ap.add_argument("--limit", type=int, default=0, help="images per pose (0 = all)")
    ap.add_argument("--out", default="results/detection")
    args = ap.parse_args()
    cfp = shared_root(args.shared) / "data" / "cfp"
    rec = run_header("detection", str(cfp), {}, "report (CFP 001-400; detection only)")
    res = {}
    print("\n| detector | frontal found | profile found | ms / image |\n|---|---|---|---|")
    for det in args.detectors:
        pifr.detect(next(iter(cfp_images(cfp, range(1, 2)))).path, detector=det, yaw=False)  # warm-up
        r = {}
        t = time.perf_counter()
        n_all = 0
        for pose in ("frontal", "profile"):
            ims = cfp_images(cfp, pose=pose)
            if args.limit:
                ims = ims[: args.limit]
            found = sum(bool(pifr.detect(im.path, detector=det, yaw=False)) for im in tqdm(ims, desc=f"{det} {pose}"))
            r[pose] = {"found": found, "total": len(ims), "rate": found / len(ims)}
            n_all += len(ims)
        r["ms_per_image"] = 1000 * (time.perf_counter() - t) / n_all
        res[det] = r
        print(f"| {det} | {r['frontal']['found']}/{r['frontal']['total']} ({100 * r['frontal']['rate']:.2f} %) | "
              f"{r['profile']['found']}/{r['profile']['total']} ({100 * r['profile']['rate']:.2f} %) | {r['ms_per_image']:.0f} |")
    rec["results"] = res
    save_record(Path(args.out), rec, "detection")


if __name__ == "__main__":
    main()
