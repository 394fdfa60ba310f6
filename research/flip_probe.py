"""Research: the mirrored photo as a second view of a turned probe (test-time flip).

Two variants fixed before the run, for each embedder's "auto" rule (its yaw threshold):
``flip`` — a turned probe embedded as normalise(raw + raw of the mirrored photo), no render;
``rule+flip`` — the rule's fused embedding with its raw part replaced by that average.
CFP 351–400 (200 profiles, gallery frontal 01), LFW DevTrain turned faces (research/lfw_turned.py's
protocol) and CMU; exact McNemar against raw and against the rule in force.

    python -m research.flip_probe [--embedders dlib_resnet mobilefacenet]
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import embed_paths, parser, run_header, shared_root  # noqa: E402
from benchmarks.frontalization import cfp_hits, cmu_hits, tuning_protocol  # noqa: E402
from research.lfw_turned import devtrain_people, hits, protocol  # noqa: E402

import pifr  # noqa: E402
from pifr.detection import locate_face  # noqa: E402
from pifr.embedders import get_embedder  # noqa: E402
from pifr.eval.metrics import mcnemar  # noqa: E402
from pifr.face3d import fit_faces  # noqa: E402
from pifr.policy import shipped_rules  # noqa: E402
from pifr.pooling import fuse_embeddings, pool_views  # noqa: E402
AUTO_RULES = shipped_rules().by_embedder()  # the shipped rules, read only
from pifr.rotation import render_pose  # noqa: E402


def views(paths, emb, detector, select, view_yaws):
    """``{path: (mirrored-photo embedding, render embedding)}`` (None where no face / no fit)."""
    out = {}
    for p in tqdm(paths, desc=f"flip + render [{emb.name}]"):
        try:
            img, face = locate_face(p, detector=detector, select=select)
            # The templates are left-right symmetric to half a pixel: the mirrored aligned crop is the
            # mirrored photo aligned.
            flip = emb.embed_crops(np.ascontiguousarray(emb.align(img, face)[:, ::-1])[None])[0]
            fit = fit_faces(img, [face])[0]
            side = math.copysign(1.0, face.yaw or 1.0)
            rend = pool_views(emb.embed_crops(np.stack([render_pose(fit, img, side * a, template=emb.template).image
                                                        for a in view_yaws])))
            out[str(p)] = (flip, rend)
        except pifr.PifrError:
            out[str(p)] = (None, None)
    return out


def rules(raw, extra, yaws, rule):
    def of(kind):
        def f(p):
            p = str(p)
            r = raw.get(p)
            if r is None or not abs(yaws.get(p, 0.0)) > rule.yaw_threshold:
                return r
            flip, rend = extra.get(p, (None, None))
            if kind == "rule":
                return r if rend is None else fuse_embeddings(r, rend, rule.fusion_weight)
            rf = r if flip is None else fuse_embeddings(r, flip, 0.5)
            if kind == "flip":
                return rf
            return rf if rend is None else fuse_embeddings(rf, rend, rule.fusion_weight)
        return f
    return {k: of(k) for k in ("rule", "flip", "rule+flip")}


def report(name, h):
    base, cur = h["raw"], h["rule"]
    for k, v in h.items():
        m0, m1 = mcnemar(base, v), mcnemar(cur, v)
        print(f"| {name} | {k} | {100 * v.mean():.1f} | +{m0.gained} / −{m0.lost}, {m0.p_value:.4f} | +{m1.gained} / −{m1.lost}, {m1.p_value:.4f} |")


def main():
    ap = parser(__doc__, "results/flip_probe")
    args = ap.parse_args()
    root = shared_root(args.shared)
    print(run_header("flip_probe", f"{root}/data/cfp (351-400), {root}/data/lfw (DevTrain); report-only: CMU", {},
                     "tune (CFP 351-400, LFW DevTrain)"))
    _, _, _, gallery, probes, every, cmu, cmu_paths = tuning_protocol(root)
    lfw = root / "data" / "lfw"
    people = devtrain_people(lfw)
    lfw_every = [p for ps in people.values() for p in ps]
    print("| set | embedding | rank-1 % | vs raw | vs the rule in force |\n|---|---|---|---|---|")
    for name in args.embedders:
        emb, rule = get_embedder(name), AUTO_RULES[name]
        raw, yaws = embed_paths(every + cmu_paths, name, args.detector, with_yaw=True)
        turned = [str(im.path) for im in probes] + [str(p) for p in cmu_paths if abs(yaws.get(str(p), 0.0)) > rule.yaw_threshold]
        extra = views(turned, emb, args.detector, "largest", rule.view_yaws)
        r = rules(raw, extra, yaws, rule)
        report(f"{name} CFP", {"raw": cfp_hits(lambda p: raw[str(p)], gallery, probes), **{k: cfp_hits(f, gallery, probes) for k, f in r.items()}})
        report(f"{name} CMU", {"raw": cmu_hits(lambda p: raw[str(p)], cmu)[0], **{k: cmu_hits(f, cmu)[0] for k, f in r.items()}})
        lraw, lyaws = embed_paths(lfw_every, name, args.detector, select="center", with_yaw=True)
        lg, lp = protocol(people, lraw, lyaws, 30.0)
        lextra = views([p for p, _ in lp if abs(lyaws[p]) > rule.yaw_threshold], emb, args.detector, "center", rule.view_yaws)
        lr = rules(lraw, lextra, lyaws, rule)
        report(f"{name} LFW", {"raw": hits(lambda p: lraw.get(str(p)), lg, lp), **{k: hits(f, lg, lp) for k, f in lr.items()}})


if __name__ == "__main__":
    main()
