"""Per-pair verification latency on this machine: pifr.verify() (decode + detect + yaw + align +
embed, both images) against a plain face_recognition-style dlib pipeline (HOG detector, 5-point
shape predictor, dlib's own ResNet) on the same LFW pairs, in the same run.

    python benchmarks/latency.py [--pairs 50] [--embedders dlib_resnet mobilefacenet] [--threads 1] [--no-baseline]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _harness import save_record, device_description, run_header, shared_root

import pifr
from pifr.eval.datasets import lfw_pairs


def dlib_pipeline():
    import dlib
    import face_recognition_models as frm

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def verify(a, b):
        vecs = []
        for p in (a, b):
            img = pifr.load_image(p)
            d = det(img, 1)
            if not d:
                return None
            vecs.append(np.array(rec.compute_face_descriptor(img, sp(img, d[0]))))
        return float(np.linalg.norm(vecs[0] - vecs[1]))

    return verify


def timeit(fn, pairs) -> np.ndarray:
    out = []
    for p in pairs:
        t = time.perf_counter()
        try:
            fn(p.a, p.b)
        except pifr.PifrError:
            pass
        out.append(time.perf_counter() - t)
    return np.array(out) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--embedders", nargs="+", default=["dlib_resnet", "mobilefacenet"])
    ap.add_argument("--out", default="results/latency")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the dlib pipeline")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    lfw = shared_root(args.shared) / "data" / "lfw"
    pairs = lfw_pairs(lfw, "pairsDevTrain.txt")[: args.pairs]
    rec = run_header("latency", f"{lfw} pairsDevTrain first {len(pairs)}", {}, "timing only")
    res = {}
    for name in args.embedders:
        pifr.verify(pairs[0].a, pairs[0].b, embedder=name)  # load models once, outside the timing
        ms = timeit(lambda a, b: pifr.verify(a, b, embedder=name), pairs)
        res[f"pifr.verify[{name}]"] = ms
    ref = np.nan
    if not args.no_baseline:
        base = dlib_pipeline()
        base(pairs[0].a, pairs[0].b)
        res["dlib HOG + 5pt + ResNet (face_recognition-style)"] = timeit(base, pairs)
        ref = np.median(res["dlib HOG + 5pt + ResNet (face_recognition-style)"])
    print(f"\nDevice: {device_description()}\n\n| pipeline | median ms / pair | p90 ms | ratio to dlib pipeline |\n|---|---|---|---|")
    out = {}
    for k, v in res.items():
        out[k] = {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90))}
        print(f"| {k} | {np.median(v):.0f} | {np.percentile(v, 90):.0f} | {np.median(v) / ref:.2f} |")
    rec["results"] = out
    save_record(Path(args.out), rec, "latency")


if __name__ == "__main__":
    main()
