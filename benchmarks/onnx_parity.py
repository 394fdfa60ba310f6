"""Parity of a registered ONNX embedder with a built-in one on the same real aligned faces:
cosine between the two embeddings of each face, and the embedding time per crop of each (crops
already aligned; batch 1 and one batch of all).

    PIFR_EMBEDDERS=embedders.json python benchmarks/onnx_parity.py --embedder mobilefacenet_onnx \\
        --reference mobilefacenet [--images 200]

Faces: the shipped examples/images and the first ``--images`` images of LFW pairsDevTrain (tuning
split), detected with RetinaFace and aligned to the embedder's template.
"""
from __future__ import annotations

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401

import argparse
import time
from pathlib import Path

import numpy as np
from benchmarks._harness import ROOT, run_header, save_record, shared_root, weights_sha

import pifr
from pifr.eval.datasets import lfw_pairs
from pifr.detection import locate_face
from pifr.embedders import get_embedder


def per_crop_ms(emb, crops: np.ndarray, batch: bool, repeats: int = 3) -> float:
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        if batch:
            emb.embed_crops(crops)
        else:
            for c in crops:
                emb.embed_crops(c[None])
        best = min(best, time.perf_counter() - t)
    return 1000 * best / len(crops)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--embedder", required=True, help="a registered ONNX embedder")
    ap.add_argument("--reference", default="mobilefacenet", help="the built-in embedder it should equal")
    ap.add_argument("--images", type=int, default=200, help="LFW pairsDevTrain images to add to the examples")
    ap.add_argument("--out", default="results/onnx_parity")
    args = ap.parse_args()
    lfw = shared_root(args.shared) / "data" / "lfw"
    paths = sorted((ROOT / "examples" / "images").glob("*.png"))
    seen = set()
    for p in lfw_pairs(lfw, "pairsDevTrain.txt"):
        for x in (p.a, p.b):
            if len(seen) < args.images and x not in seen:
                seen.add(x)
                paths.append(Path(x))
    rec = run_header("onnx_parity", f"examples/images + first {len(seen)} images of {lfw}/pairsDevTrain.txt",
                     weights_sha([args.embedder, args.reference]), "tune (LFW pairsDevTrain images; no decision made)")
    emb, ref = get_embedder(args.embedder), get_embedder(args.reference)
    if emb.template != ref.template:
        raise SystemExit(f"{args.embedder} and {args.reference} use different templates")
    crops = []
    for p in paths:
        try:
            img, face = locate_face(p, select="center")
        except pifr.PifrError:
            continue
        crops.append(emb.align(img, face))
    crops = np.stack(crops)
    cos = (emb.embed_crops(crops) * ref.embed_crops(crops)).sum(1)
    res = {"faces": len(crops), "cos_min": float(cos.min()), "cos_median": float(np.median(cos)),
           "batch": emb.batch if getattr(emb, "batch", None) else "dynamic"}
    for k, e in ((args.embedder, emb), (args.reference, ref)):
        res[f"{k}_ms_per_crop_single"] = per_crop_ms(e, crops[:50], batch=False)
        res[f"{k}_ms_per_crop_batch"] = per_crop_ms(e, crops, batch=True)
    print(f"\n{len(crops)} faces: cosine {args.embedder} vs {args.reference}: min {cos.min():.7f} "
          f"(1 - min = {1 - cos.min():.1e}), median {np.median(cos):.7f}")
    print(f"\n| embedder | ms per crop, one at a time | ms per crop, all at once |\n|---|---|---|")
    for k in (args.embedder, args.reference):
        print(f"| {k} | {res[f'{k}_ms_per_crop_single']:.2f} | {res[f'{k}_ms_per_crop_batch']:.2f} |")
    rec["results"] = res
    save_record(Path(args.out), rec, "onnx_parity")


if __name__ == "__main__":
    main()
