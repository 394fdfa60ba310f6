"""LFW 10-fold verification accuracy for each real embedder (pairs.txt; threshold from the other 9 folds).

    python benchmarks/lfw.py [--shared ../shared] [--embedders dlib_resnet mobilefacenet] [--detector retinaface] [--out results/lfw]

Writes the result table as lfw.csv and lfw.md and the run record (lfw.json, runs.jsonl) to --out.
"""
from __future__ import annotations

import time
from pathlib import Path

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401
from benchmarks._harness import parser, save_record, embed_paths, pair_scores, run_header, shared_root, weights_sha, write_table

from pifr.eval.datasets import lfw_pairs
from pifr.embedders import list_embedders
from pifr.errors import UnknownModelError
from pifr.eval.metrics import verification_summary
from pifr.weights import get_spec

import numpy as np


def published(name: str) -> str:
    """The LFW accuracy its publishers report, from the weights manifest (``reported.lfw_accuracy``);
    read from the registry, so a run whose embeddings are all cached loads no network for it."""
    weights = {e.name: e.weights for e in list_embedders()}[name]
    try:
        return str(get_spec(weights).reported.get("lfw_accuracy", "-"))
    except UnknownModelError:  # a model registered by path ($PIFR_EMBEDDERS) has no manifest entry
        return "-"


def dlib_chip_embeddings(paths, detector):
    """dlib_resnet on dlib.get_face_chip(…, 150, 0.25) from dlib's 5-point predictor run on pifr's box."""
    import dlib
    import face_recognition_models as frm
    from tqdm import tqdm

    import pifr
    from pifr.detection import pick_face
    from pifr.embedders import get_embedder

    sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    emb = get_embedder("dlib_resnet")
    out = {}
    for p in tqdm(paths, desc="dlib chip"):
        img = pifr.load_image(p)
        faces = pifr.detect(img, detector=detector, yaw=False)
        if not faces:
            out[p] = None
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in pick_face(faces, img.shape, "center").bbox)
        chip = dlib.get_face_chip(img, sp(img, dlib.rectangle(x1, y1, x2, y2)), size=150, padding=0.25)
        out[p] = emb.embed_crops(chip[None])[0]
    return out


def table_row(name: str, m: dict, missing: int, published_accuracy: str) -> dict:
    """One row of the result table (rates in %)."""
    return {"embedder": name, "accuracy %": 100 * m["accuracy"], "± %": 100 * m["accuracy_std"], "EER %": 100 * m["eer"],
            "AUC": m["auc"], "TAR@FAR=1e-3 %": 100 * m["tar_at_far_1e-3"], "faces missing": missing,
            "published": published_accuracy}


def main() -> None:
    ap = parser(__doc__, "results/lfw")
    ap.add_argument("--pairs", default="pairs.txt", help="pairs.txt (report) or pairsDevTrain.txt (tune)")
    ap.add_argument("--dlib-chip", action="store_true",
                    help="also run dlib_resnet on dlib's own 5-point chip (dlib shape predictor on the same boxes), "
                         "to measure what the alignment template costs")
    args = ap.parse_args()
    lfw = shared_root(args.shared) / "data" / "lfw"
    pairs = lfw_pairs(lfw, args.pairs)
    split = "report (LFW pairs.txt, 10 folds)" if args.pairs == "pairs.txt" else f"tune ({args.pairs})"
    rec = run_header("lfw", str(lfw), weights_sha(args.embedders), split)
    rec.update(detector=args.detector, pairs=len(pairs))
    t0 = time.time()
    results, rows = {}, []
    for name in args.embedders:
        embs = embed_paths([p.a for p in pairs] + [p.b for p in pairs], name, args.detector, select="center")
        scores, missing = pair_scores(pairs, embs)
        same = np.array([p.same for p in pairs])
        folds = np.array([p.fold for p in pairs])
        m = verification_summary(scores, same, folds)
        m["pairs_with_missing_face"] = missing
        results[name] = m
        rows.append(table_row(name, m, missing, published(name)))
    if args.dlib_chip:
        embs = dlib_chip_embeddings(sorted({str(x) for p in pairs for x in (p.a, p.b)}), args.detector)
        scores, missing = pair_scores(pairs, embs)
        m = verification_summary(scores, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
        results["dlib_resnet[dlib 5-pt chip]"] = m
        rows.append(table_row("dlib_resnet, dlib's 5-point chip", m, missing, published("dlib_resnet")))
    write_table(rows, Path(args.out), "lfw", f"LFW {args.pairs}, 10 folds (± : sd over the folds; published: quoted)",
                {"accuracy %": ".2f", "± %": ".2f", "EER %": ".2f", "AUC": ".4f"})
    rec.update(results=results, seconds=round(time.time() - t0, 1))
    save_record(Path(args.out), rec, "lfw")


if __name__ == "__main__":
    main()
