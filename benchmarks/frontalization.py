"""Frontalization as a recognition front end, chosen on the CFP tuning identities 351–400.

For each embedder: raw (no frontalization), classical 3D (Hassner et al. 2015; skip with --no-3d),
TP-GAN (with --generator or --installed) on every face, and the pose-aware rule on a grid —
faces with |yaw| > T get normalise((1 − w)·raw + w·frontalized), w = 1 being "frontalized only".
Reported on CFP 351–400: profile→frontal rank-1 (gallery: frontal 01 of each identity), FP
verification (protocol pairs within 351–400, 10 interleaved folds) with EER and TAR@FAR=1 %, FF
accuracy (near-frontal faces must not lose), and the mean identity cosine of each profile (raw,
frontalized or fused) to the same person's true frontals. The rule with the best rank-1 + FP
accuracy is printed as chosen, then reported on CMU Face Images (left/right → straight), a
set nothing is tuned on. Also the 3D renderer's round trip (--round-trip-faces).

    python benchmarks/frontalization.py --generator runs/x/generator.safetensors --no-3d --round-trip-faces 0
    python benchmarks/frontalization.py --installed --no-3d --round-trip-faces 0
    python benchmarks/frontalization.py --model3d ../shared/models/face-frontalization/model3Ddlib.mat
"""
from __future__ import annotations

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import json

from benchmarks._harness import cache_dir, embed_paths, parser, run_header, save_record, shared_root, weights_sha
from tqdm import tqdm

import pifr
from pifr.eval.datasets import cfp_identity, cfp_images, cfp_protocol, cmu_faces
from pifr.detection import locate_face
from pifr.embedders import get_embedder
from pifr.generator import get_frontalizer
from pifr.views import to_template
from pifr.eval.metrics import mcnemar, rank1_hits, verification_summary
from pifr.pooling import fuse_embeddings
from pifr.weights import sha256_file
from pifr.alignment import TPGAN_128, align_with_landmarks

IDS = range(351, 401)
ANGLES = (15, 30, 45, 60, 75, 90)


def tpgan_crops(paths, gen, detector):
    """TP-GAN frontal crops (TPGAN_128 template, uint8) by path string, ``None`` where no face; one
    generator pass per image, shared by every embedder. Faces are located as for the raw
    embeddings (``locate_face``), so both see the same face."""
    out = {}
    for p in tqdm(paths, desc="tpgan"):
        try:
            img, face = locate_face(p, detector=detector)
            c, lm = align_with_landmarks(img, face, TPGAN_128)
            out[str(p)] = gen.frontalize_crops(c[None], lm[None], [face.yaw])[0]
        except pifr.PifrError:
            out[str(p)] = None
    return out


def embed_tpgan(crops, emb):
    return {p: (None if c is None else emb.embed_crops(to_template(c, emb.template)[None])[0]) for p, c in crops.items()}


def embed_3d(paths, emb, model3d, detector):
    """Embedding of each image after classical 3D frontalization onto the embedder's template."""
    from pifr.geometry import frontalize_3d

    out = {}
    for p in tqdm(paths, desc=f"3d[{emb.name}]"):
        try:
            img, face = locate_face(p, detector=detector)
            out[str(p)] = emb.embed_crops(frontalize_3d(img, face=face, template=emb.template, model_path=model3d).image[None])[0]
        except pifr.PifrError:
            out[str(p)] = None
    return out


def policy(raw, front, yaws, yaw_threshold, weight):
    """Embedding lookup under the pose-aware rule: a face with |yaw| > ``yaw_threshold`` gets
    normalise((1 − weight)·raw + weight·frontalized) (weight 1: frontalized only); others stay raw.
    Where frontalization failed the raw embedding is kept."""
    def of(p):
        p = str(p)
        r, f = raw.get(p), front.get(p)
        if r is None or f is None or not abs(yaws.get(p, 0.0)) > yaw_threshold:
            return r
        return fuse_embeddings(r, f, weight)
    return of


def evaluate(emb_of, raw_of, cfp_frontals, pairs, ff_pairs, gallery, probes):
    def score(a, b):
        ea, eb = emb_of(a), emb_of(b)  # once each: under a fusion rule every call fuses again
        return -1.0 if ea is None or eb is None else float(ea @ eb)

    def scores(ps):
        return np.array([score(x.a, x.b) for x in ps]), np.array([x.same for x in ps]), np.arange(len(ps)) % 10
    s, y, folds = scores(pairs)
    G, gids, P, found = gallery_and_probes(emb_of, gallery, probes)
    fr_by_id = {}
    for im in cfp_frontals:
        fr_by_id.setdefault(im.identity, []).append(raw_of(im.path))
    idcos = np.mean([np.mean([float(P[i] @ f) for f in fr_by_id[im.identity] if f is not None])
                     for i, im in enumerate(probes) if found[i]])
    r = {"rank1": float(np.mean(rank1_hits(P, [im.identity for im in probes], G, gids) & found)),
         "probes_without_embedding": int((~found).sum()),
         **fp_figures(s, y, folds), "profile_to_true_frontal_cos": float(idcos)}
    if ff_pairs:
        s, y, folds = scores(ff_pairs)
        r["ff_accuracy"] = verification_summary(s, y, folds)["accuracy"]
    return r


def fp_figures(scores, same, folds):
    """The FP verification figures this benchmark reports (10-fold accuracy, EER, TAR at FAR 1 %),
    under the keys its records and tables use."""
    m = verification_summary(scores, same, folds)
    return {"fp_accuracy": m["accuracy"], "fp_eer": m["eer"], "fp_tar_at_far_1e-2": m["tar_at_far_1e-2"]}


def gallery_and_probes(emb_of, gallery, probes):
    """``(G, gallery_ids, P, found)``: embedding matrices of the gallery images that have one and
    of every probe, and per probe whether it has one. A probe without an embedding (no face found)
    is a zero row and must count as a miss (``found`` False), never as whichever identity a tie
    picks."""
    gal = [(im.identity, emb_of(im.path)) for im in gallery]
    gal = [(i, e) for i, e in gal if e is not None]
    G = np.stack([e for _, e in gal])
    embs = [emb_of(im.path) for im in probes]  # once each: under a fusion rule every call fuses
    found = np.array([e is not None for e in embs], bool)
    P = np.stack([e if e is not None else np.zeros(G.shape[1], np.float32) for e in embs])
    return G, [i for i, _ in gal], P, found


def cfp_hits(emb_of, gallery, probes):
    """Per CFP profile probe: identified at rank 1 (gallery: frontal 01 of each identity); a probe
    without an embedding is a miss."""
    G, gids, P, found = gallery_and_probes(emb_of, gallery, probes)
    return rank1_hits(P, [im.identity for im in probes], G, gids) & found


def cmu_summary(hits_and_people):
    """``(rank-1, probes, people)`` from :func:`cmu_hits`'s output."""
    hits, people = hits_and_people
    return float(np.mean(hits)), len(hits), people


def cmu_protocol(cmu, has_face):
    """CMU Face Images as a left/right → straight identification set: ``(gallery, probes)``, the
    gallery mapping each person to their first eyes-open straight photo for which ``has_face(path)``
    holds, the probes their eyes-open left and right photos (people with a gallery photo only)."""
    gal = {}
    for im in cmu:
        if im.pose == "straight" and im.eyes == "open" and im.person not in gal and has_face(im.path):
            gal[im.person] = im.path
    probes = [im for im in cmu if im.pose in ("left", "right") and im.eyes == "open" and im.person in gal]
    return gal, probes


def cmu_hits(emb_of, cmu):
    """Per CMU left/right probe: identified at rank 1; and the number of gallery people."""
    gal, probes = cmu_protocol(cmu, lambda p: emb_of(p) is not None)
    names = sorted(gal)
    G = np.stack([emb_of(gal[n]) for n in names])
    embs = [emb_of(im.path) for im in probes]
    hits = [e is not None and names[int(np.argmax(G @ e))] == im.person for im, e in zip(probes, embs)]
    return np.array(hits, bool), len(names)


def tuning_protocol(root: Path):
    """The protocol every front end is scored on: ``(FP pairs, FF pairs, frontals, gallery, probes,
    every image, CMU images, CMU paths)`` — CFP 351–400's protocol pairs, all its frontals, gallery
    frontal 01 of each identity, its profiles as probes, and CMU Face Images' eyes-open
    straight/left/right photos (report only)."""
    cfp = root / "data" / "cfp"
    pairs = [x for x in cfp_protocol(cfp, "FP").pairs if cfp_identity(x.a) in IDS and cfp_identity(x.b) in IDS]
    ff_pairs = [x for x in cfp_protocol(cfp, "FF").pairs if cfp_identity(x.a) in IDS and cfp_identity(x.b) in IDS]
    frontals = cfp_images(cfp, IDS, "frontal")
    gallery = [im for im in frontals if im.index == 1]
    probes = cfp_images(cfp, IDS, "profile")
    every = [im.path for im in cfp_images(cfp, IDS)]
    cmu = cmu_faces(root / "data" / "cmu_faces" / "cmu_faces_full_and_half.tar.gz", cache_dir() / "cmu_faces")
    cmu_paths = [im.path for im in cmu if im.eyes == "open" and im.pose in ("straight", "left", "right")]
    return pairs, ff_pairs, frontals, gallery, probes, every, cmu, cmu_paths


def main() -> None:
    ap = parser(__doc__, "results/frontalization")
    ap.add_argument("--model3d", default=None)
    ap.add_argument("--generator", default=None, help="TP-GAN generator.safetensors (default: none; see --installed)")
    ap.add_argument("--installed", action="store_true", help="use the installed (shipped) frontalizer")
    ap.add_argument("--no-3d", action="store_true", help="skip classical 3D frontalization (slow: dlib 68 landmarks)")
    ap.add_argument("--policy-yaw", type=float, nargs="+", default=[30.0, 45.0, 60.0])
    ap.add_argument("--fusion", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0],
                    help="weights of the frontalized embedding in the pose-aware rule (1 = frontalized only)")
    ap.add_argument("--round-trip-faces", type=int, default=20, help="frontal faces for the renderer round trip (0: skip)")
    ap.add_argument("--skip-recognition", action="store_true", help="only the renderer round trip")
    args = ap.parse_args()
    root = shared_root(args.shared)
    cfp = root / "data" / "cfp"
    model3d = args.model3d or str(root / "models" / "face-frontalization" / "model3Ddlib.mat")
    gen = get_frontalizer(None if args.installed else args.generator) if (args.generator or args.installed) else None
    wsha = weights_sha(args.embedders)
    if gen is not None:
        wsha["generator"] = f"{gen.name} ({sha256_file(gen.path)})"
    rec = run_header("frontalization", f"{cfp}; report-only: {root}/data/cmu_faces", wsha,
                     "tune (CFP 351-400: rule chosen here); report (CMU Face Images, never tuned on)")
    pairs, ff_pairs, frontals, gallery, probes, every, cmu, cmu_paths = tuning_protocol(root)
    methods = ([] if args.no_3d else ["3d"]) + (["tpgan"] if gen else [])
    crops = tpgan_crops(every + cmu_paths, gen, args.detector) if gen else {}
    res, chosen, cmu_res, paired = {}, {}, {}, {}
    t0 = time.time()
    for name in ([] if args.skip_recognition else args.embedders):
        emb = get_embedder(name)
        raw, yaws = embed_paths(every + cmu_paths, name, args.detector, with_yaw=True)
        raw_of = lambda p: raw[str(p)]  # noqa: E731
        ev = lambda of: evaluate(of, raw_of, frontals, pairs, ff_pairs, gallery, probes)  # noqa: E731
        r = {"raw": ev(raw_of)}
        raw_cmu = cmu_hits(raw_of, cmu)
        cmu_res[name] = {"raw": cmu_summary(raw_cmu)}
        for m in methods:
            front = embed_tpgan(crops, emb) if m == "tpgan" else embed_3d(every, emb, model3d, args.detector)
            r[f"{m} (every face)"] = ev(policy(raw, front, yaws, -1.0, 1.0))
            for t in args.policy_yaw:
                for w in args.fusion:
                    r[f"{m} |yaw|>{t:g} w={w:g}"] = ev(policy(raw, front, yaws, t, w))
            if m == "tpgan":
                # The rule: best rank-1 + FP accuracy on these tuning identities.
                key = max((k for k in r if k.startswith("tpgan |yaw|")), key=lambda k: r[k]["rank1"] + r[k]["fp_accuracy"])
                t, w = (float(v) for v in key.replace("tpgan |yaw|>", "").split(" w="))
                chosen[name] = {"rule": key, "yaw_threshold": t, "weight": w}
                rule = policy(raw, front, yaws, t, w)
                rule_cmu = cmu_hits(rule, cmu)
                cmu_res[name]["tpgan (every face)"] = cmu_summary(cmu_hits(policy(raw, front, yaws, -1.0, 1.0), cmu))
                cmu_res[name][f"chosen: {key}"] = cmu_summary(rule_cmu)
                # Is the chosen rule's rank-1 change more than chance? Exact McNemar on the probes.
                paired[name] = {"cfp": asdict(mcnemar(cfp_hits(raw_of, gallery, probes), cfp_hits(rule, gallery, probes))),
                                "cmu": asdict(mcnemar(raw_cmu[0], rule_cmu[0]))}
        res[name] = r
    print("\nCFP 351-400 (tuning split; a profile without a face found counts as a miss)\n\n"
          "| embedder | method | rank-1 % | no face | FP acc % | FP EER % | TAR@FAR=1% | FF acc % | profile→true frontal cos |"
          "\n|---|---|---|---|---|---|---|---|---|")
    for name, r in res.items():
        for m, v in r.items():
            print(f"| {name} | {m} | {100 * v['rank1']:.1f} | {v['probes_without_embedding']} | {100 * v['fp_accuracy']:.2f} | "
                  f"{100 * v['fp_eer']:.2f} | {100 * v['fp_tar_at_far_1e-2']:.1f} | {100 * v['ff_accuracy']:.2f} | "
                  f"{v['profile_to_true_frontal_cos']:.3f} |")
    if chosen:
        print("\nChosen on CFP 351-400 (max rank-1 + FP accuracy):", json.dumps(chosen))
    if cmu_res:
        print("\nCMU Face Images (report only; left/right eyes-open → one straight photo per person)\n\n"
              "| embedder | method | rank-1 % | probes | people |\n|---|---|---|---|---|")
        for name, r in cmu_res.items():
            for m, (acc, n, k) in r.items():
                print(f"| {name} | {m} | {100 * acc:.1f} | {n} | {k} |")
    if paired:
        print("\nChosen rule against raw, probe by probe (exact McNemar: gained = only the rule right, lost = only raw right)\n\n"
              "| embedder | set | gained | lost | p |\n|---|---|---|---|---|")
        for name, r in paired.items():
            for where, c in r.items():
                print(f"| {name} | {where} | {c['gained']} | {c['lost']} | {c['p_value']:.3f} |")
    rec.update(results=res, chosen=chosen, cmu=cmu_res, paired=paired, generator=getattr(gen, "name", None))
    # Renderer round trip.
    from pifr.geometry import frontalize_3d, load_reference, render_texture, texture_from_photo, landmarks68

    emb = get_embedder("mobilefacenet")
    # Only the round trip needs the (user-supplied) 3D head: without it, --round-trip-faces 0 still saves the record.
    ref = load_reference(model3d) if args.round_trip_faces > 0 else None
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
        rec.update(seconds=round(time.time() - t0, 1))
        save_record(Path(args.out), rec, "frontalization")
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
    rec.update(round_trip=rts, render_ms_median=1000 * float(np.median(t_render)), seconds=round(time.time() - t0, 1))
    save_record(Path(args.out), rec, "frontalization")


if __name__ == "__main__":
    main()
