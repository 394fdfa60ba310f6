"""Frontalization as a recognition front end, on the CFP tuning identities 351–400.

For each embedder and method — raw (no frontalization), classical 3D (Hassner et al. 2015),
TP-GAN (when --generator is given) and the pose-aware policy (frontalize only |yaw| > T) —
reports profile→frontal rank-1 (gallery: frontal 01 of each identity), FP verification (700
protocol pairs, 10 interleaved folds) with EER and TAR@FAR=1 %, and the mean identity cosine of
each profile (raw or frontalized) to the same person's true frontals. Also the 3D renderer's
round trip: CFP 351–400 frontal 01 faces rendered at ±15…±90 and frontalized back, cosine to the
original, and 3DDFA's yaw estimate of each render.

    python benchmarks/frontalization.py --model3d ../shared/models/face-frontalization/model3Ddlib.mat [--generator runs/x/generator.safetensors]
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from _harness import append_runlog, parser, save_record, embed_paths, run_header, shared_root, weights_sha
from tqdm import tqdm

import pifr
from pifr.datasets import cfp_identity, cfp_images, cfp_protocol
from pifr.embedders import get_embedder
from pifr.frontalization import get_frontalizer, to_template
from pifr.metrics import eer, kfold_accuracy, rank1, tar_at_far
from pifr.alignment import TPGAN_128, align_with_landmarks

IDS = range(351, 401)
ANGLES = (15, 30, 45, 60, 75, 90)


def frontal_embeddings(paths, method, emb, model3d, gen):
    """Embedding of each image after frontalization by ``method`` (None where it failed), and its yaw."""
    from pifr.geometry import frontalize_3d

    out, yaws = {}, {}
    for p in tqdm(paths, desc=f"{method}[{emb.name}]"):
        try:
            img = pifr.load_image(p)
            face = pifr.detect(img)[0]
            yaws[str(p)] = face.yaw
            if method == "3d":
                crop = frontalize_3d(img, face=face, template=emb.template, model_path=model3d).image
            else:
                c, lm = align_with_landmarks(img, face, TPGAN_128)
                crop = to_template(gen.frontalize_crops(c[None], lm[None], [face.yaw])[0], emb.template)
            out[str(p)] = emb.embed_crops(crop[None])[0]
        except (pifr.PifrError, IndexError):
            out[str(p)] = None
    return out, yaws


def evaluate(emb_of, raw_of, cfp, pairs, gallery, probes):
    s = np.array([float(emb_of(x.a) @ emb_of(x.b)) if emb_of(x.a) is not None and emb_of(x.b) is not None else -1.0 for x in pairs])
    y = np.array([x.same for x in pairs])
    folds = np.arange(len(pairs)) % 10
    G = np.stack([emb_of(im.path) for im in gallery])
    P = np.stack([emb_of(im.path) if emb_of(im.path) is not None else np.zeros(G.shape[1], np.float32) for im in probes])
    fr_by_id = {}
    for im in cfp_images(cfp, IDS, "frontal"):
        fr_by_id.setdefault(im.identity, []).append(raw_of(im.path))
    idcos = np.mean([np.mean([float(P[i] @ f) for f in fr_by_id[im.identity] if f is not None]) for i, im in enumerate(probes)])
    return {"rank1": rank1(P, [im.identity for im in probes], G, [im.identity for im in gallery]),
            "fp_accuracy": kfold_accuracy(s, y, folds).mean, "fp_eer": eer(s, y), "fp_tar_at_far_1e-2": tar_at_far(s, y, 1e-2)[0],
            "profile_to_true_frontal_cos": float(idcos)}


def main() -> None:
    ap = parser(__doc__, "results/frontalization")
    ap.add_argument("--model3d", default=None)
    ap.add_argument("--generator", default=None)
    ap.add_argument("--policy-yaw", type=float, nargs="+", default=[30.0, 45.0, 60.0])
    ap.add_argument("--round-trip-faces", type=int, default=20, help="frontal faces for the renderer round trip (0: skip)")
    ap.add_argument("--skip-recognition", action="store_true", help="only the renderer round trip")
    args = ap.parse_args()
    root = shared_root(args.shared)
    cfp = root / "data" / "cfp"
    model3d = args.model3d or str(root / "models" / "face-frontalization" / "model3Ddlib.mat")
    rec = run_header("frontalization", str(cfp), weights_sha(args.embedders), "tune (CFP 351-400)")
    proto = cfp_protocol(cfp, "FP")
    pairs = [x for x in proto.pairs if cfp_identity(x.a) in IDS and cfp_identity(x.b) in IDS]
    gallery = [im for im in cfp_images(cfp, IDS, "frontal") if im.index == 1]
    probes = cfp_images(cfp, IDS, "profile")
    gen = get_frontalizer(args.generator) if args.generator else None
    methods = ["3d"] + (["tpgan"] if gen else [])
    res = {}
    t0 = time.time()
    for name in ([] if args.skip_recognition else args.embedders):
        emb = get_embedder(name)
        raw, yaws = embed_paths([im.path for im in cfp_images(cfp, IDS)], name, args.detector, with_yaw=True)
        raw_of = lambda p: raw[str(p)]  # noqa: E731
        r = {"raw": evaluate(raw_of, raw_of, cfp, pairs, gallery, probes)}
        for m in methods:
            fe, _ = frontal_embeddings([im.path for im in probes], m, emb, model3d, gen)
            always = lambda p, fe=fe: fe.get(str(p), raw[str(p)]) if fe.get(str(p)) is not None or str(p) not in fe else None  # noqa: E731
            r[m] = evaluate(always, raw_of, cfp, pairs, gallery, probes)
            for t in args.policy_yaw:
                pol = lambda p, fe=fe, t=t: (fe[str(p)] if str(p) in fe and abs(yaws[str(p)]) > t and fe[str(p)] is not None else raw[str(p)])  # noqa: E731
                r[f"{m} if |yaw|>{t:g}"] = evaluate(pol, raw_of, cfp, pairs, gallery, probes)
        res[name] = r
    print("\n| embedder | method | rank-1 % | FP acc % | FP EER % | TAR@FAR=1% | profile→true frontal cos |\n|---|---|---|---|---|---|---|")
    for name, r in res.items():
        for m, v in r.items():
            print(f"| {name} | {m} | {100 * v['rank1']:.1f} | {100 * v['fp_accuracy']:.2f} | {100 * v['fp_eer']:.2f} | "
                  f"{100 * v['fp_tar_at_far_1e-2']:.1f} | {v['profile_to_true_frontal_cos']:.3f} |")
    # Renderer round trip.
    from pifr.geometry import frontalize_3d, load_reference, render_texture, texture_from_photo, landmarks68

    emb = get_embedder("mobilefacenet")
    ref = load_reference(model3d)
    rt = {a: {"render_cos": [], "back_cos": [], "yaw_est": []} for a in ANGLES}
    t_render = []
    for im in tqdm(gallery[: args.round_trip_faces], desc="round trip"):
        img = pifr.load_image(im.path)
        face = pifr.detect(img)[0]
        orig = emb.embed_crops(emb.align(img, face)[None])[0]
        tex, _, _ = texture_from_photo(img, landmarks68(img, face), ref)
        for a in ANGLES:
            for sgn in (1, -1):
                t = time.perf_counter()
                rnd = render_texture(tex, ref, sgn * a)
                t_render.append(time.perf_counter() - t)
                f = pifr.detect(rnd.image)
                if not f:
                    continue
                rt[a]["yaw_est"].append(f[0].yaw * sgn - a)  # magnitude error; sign errors show as < -a
                rt[a]["render_cos"].append(float(emb.embed_crops(emb.align(rnd.image, f[0])[None])[0] @ orig))
                back = frontalize_3d(rnd.image, face=f[0], template=emb.template, model_path=model3d).image
                rt[a]["back_cos"].append(float(emb.embed_crops(back[None])[0] @ orig))
    if not t_render:
        rec.update(results=res, seconds=round(time.time() - t0, 1), generator=args.generator)
        append_runlog(Path(args.out), rec)
        return
    print(f"\nRound trip (mobilefacenet cosine to the original; threshold {emb.threshold:.3f}); render {1000 * np.median(t_render):.0f} ms median:\n")
    print("| |yaw| | n | raw render cos | frontalized back cos | 3DDFA |yaw| error (mean ± sd) | sign correct |\n|---|---|---|---|---|---|")
    rts = {}
    for a, v in rt.items():
        e = np.array(v["yaw_est"])
        rts[a] = {"n": len(e), "render_cos": float(np.mean(v["render_cos"])), "back_cos": float(np.mean(v["back_cos"])),
                  "yaw_err_mean": float(e.mean()), "yaw_err_sd": float(e.std())}
        rts[a]["sign_correct"] = float(np.mean(e > -a))
        print(f"| {a} | {len(e)} | {rts[a]['render_cos']:.3f} | {rts[a]['back_cos']:.3f} | {e.mean():+.1f} ± {e.std():.1f} | "
              f"{100 * rts[a]['sign_correct']:.0f} % |")
    rec.update(results=res, round_trip=rts, render_ms_median=1000 * float(np.median(t_render)), seconds=round(time.time() - t0, 1),
               generator=args.generator)
    save_record(Path(args.out), rec, "frontalization")


if __name__ == "__main__":
    main()
