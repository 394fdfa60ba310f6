"""Per-pair verification latency on this machine: pifr.verify() (decode + detect + yaw + align +
embed, both images) against a plain face_recognition-style dlib pipeline (HOG detector, 5-point
shape predictor, dlib's own ResNet) on the same LFW pairs, in the same run.

    python benchmarks/latency.py [--pairs 50] [--embedders dlib_resnet mobilefacenet] [--no-dlib] [--threads 1]
    python benchmarks/latency.py --data cfp-fp --no-dlib --embedders dlib_resnet   # auto vs never on profile pairs

The pipelines take turns on each pair (fair on a shared machine).
"""
from __future__ import annotations

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401

import argparse
import time
from pathlib import Path

import numpy as np
from benchmarks._harness import save_record, device_description, run_header, shared_root, weights_sha

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


def timeit(fns, pairs):
    """Milliseconds per pair for each named function. The functions take turns on each pair, so
    load from other processes on a shared machine falls on all of them alike."""
    out = {k: [] for k in fns}
    for p in pairs:
        for k, fn in fns.items():
            t = time.perf_counter()
            try:
                fn(p.a, p.b)
            except pifr.PifrError:
                pass
            out[k].append(time.perf_counter() - t)
    return {k: np.array(v) * 1000 for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--embedders", "--embedder", nargs="+", default=["dlib_resnet", "mobilefacenet"],
                    help="built-in names or models registered in $PIFR_EMBEDDERS")
    ap.add_argument("--threshold", type=float, default=None,
                    help="decision threshold for every embedder (needed for a registered model not yet calibrated)")
    ap.add_argument("--no-dlib", action="store_true", help="skip the dlib reference pipeline")
    ap.add_argument("--out", default="results/latency")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--policies", nargs="+", default=["auto", "never"], choices=["auto", "never"],
                    help="frontalize= policies to time pifr.verify under (auto: a turned face is fused with its 3D render)")
    ap.add_argument("--data", default="lfw", choices=["lfw", "cfp-fp"],
                    help="lfw: pairsDevTrain (mostly near-frontal); cfp-fp: CFP 351-400 frontal-profile protocol pairs "
                         "(every pair has a profile: the case the auto policy renders)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.data == "lfw":
        src = shared_root(args.shared) / "data" / "lfw"
        pairs = lfw_pairs(src, "pairsDevTrain.txt")[: args.pairs]
        what = f"{src} pairsDevTrain first {len(pairs)}"
    else:
        from pifr.eval.datasets import cfp_identity, cfp_protocol

        src = shared_root(args.shared) / "data" / "cfp"
        pairs = [x for x in cfp_protocol(src, "FP").pairs if cfp_identity(x.a) > 350 and cfp_identity(x.b) > 350][: args.pairs]
        what = f"{src} FP protocol pairs of CFP 351-400, first {len(pairs)}"
    rec = run_header("latency", what, weights_sha(args.embedders), "timing only")
    fns = {}
    for name in args.embedders:
        for pol in args.policies:
            fns[f"pifr.verify[{name}, {pol}]"] = (lambda n, q: lambda a, b: pifr.verify(
                a, b, embedder=n, threshold=args.threshold, frontalize=q))(name, pol)
    dlib_name = "dlib HOG + 5pt + ResNet (face_recognition-style)"
    if not args.no_dlib:
        fns[dlib_name] = dlib_pipeline()
    for fn in fns.values():
        fn(pairs[0].a, pairs[0].b)  # load models once, outside the timing
    res = timeit(fns, pairs)
    ref_name = dlib_name if dlib_name in res else next(iter(res))
    ref = np.median(res[ref_name])
    print(f"\nDevice: {device_description()}\n\n| pipeline | median ms / pair | p90 ms | ratio to {ref_name} "
          f"| median per-pair ratio |\n|---|---|---|---|---|")
    out = {}
    for k, v in res.items():
        paired = float(np.median(v / res[ref_name]))
        out[k] = {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)), "ratio": float(np.median(v) / ref),
                  "paired_ratio": paired, "reference": ref_name}
        print(f"| {k} | {np.median(v):.0f} | {np.percentile(v, 90):.0f} | {np.median(v) / ref:.2f} | {paired:.2f} |")
    rec["results"] = out
    save_record(Path(args.out), rec, "latency")


if __name__ == "__main__":
    main()
