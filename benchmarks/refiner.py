"""The render refiner as a recognition front end, against the untrained 3D render it refines.

On CFP 351–400 (the tuning split: rules are chosen here) and CMU Face Images (report only), per
embedder:

* raw; the untrained render under the embedder's ``"auto"`` rule (``AUTO_RULES``: its views —
  frontal, part-turned or several pooled —, the floor a refiner must beat; for an embedder without
  a rule, the grid's best frontal-render rule); the refined frontal render alone and under each
  rule of the grid —
  a face with |yaw| > T embedded as normalise((1 − w)·raw + w·refined);
* pose matching (Masi et al., ECCV 2016; Jung et al. 2025): each gallery frontal rendered at a
  few yaws at enrolment (untrained and refined); a probe with |yaw| > T is scored as
  (1 − w)·cos(raw, raw) + w·cos(probe, gallery template at the nearest yaw) — rank-1 and, with
  each FP pair's frontal rendered at its profile's template yaw, the FP figures;
* profile→frontal rank-1 (gallery frontal 01), FP verification, EER, TAR@FAR 1 %, FF accuracy,
  rank-1 by |yaw|, probe-by-probe gains/losses with exact McNemar p against raw and against the
  floor; open-set DIR of the profiles at the default gallery's threshold for 50 people
  (FAR 1 % per probe, + the rule's threshold shift) and the false accepts of CFP 001–050's
  profiles (strangers, report only);
* ``pifr.estimate_yaw`` of the refined frontal outputs; refiner speed per face.

    python benchmarks/refiner.py                            # the installed refiner
    python benchmarks/refiner.py --refiner runs/tpgan/best.safetensors --embedders dlib_resnet
    PIFR_WEIGHTS_DIR=../shared/models/mobilefacenet python benchmarks/refiner.py \\
        --embedders dlib_resnet mobilefacenet mobilefacenet_casia
"""
from __future__ import annotations

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks._harness import cache_dir, embed_paths, parser, run_header, save_record, shared_root, weights_sha
from benchmarks.frontalization import cfp_hits, cmu_hits, cmu_protocol, cmu_summary, evaluate, fp_figures, policy, tuning_protocol
from benchmarks.rotation import by_yaw, embed_renders, fits_of
from tqdm import tqdm

import pifr
import pifr.face3d
from pifr.alignment import TPGAN_128
from pifr.embedders import get_embedder
from pifr.eval.datasets import cfp_images
from pifr.eval.metrics import mcnemar
from pifr.policy import shipped_rules
from pifr.views import to_template
AUTO_RULES = shipped_rules().by_embedder()  # the shipped rules, read only
from pifr.gallery import default_operating_point
from pifr.rotation import render_pose

POSE_YAWS = (30.0, 45.0, 60.0, 75.0)
STRANGER_IDS = range(1, 51)


def refined_views(fits, refiner, yaw=0.0, desc="refine"):
    """``{path: (render (128,128,3) uint8, refined (128,128,3) uint8) or None}`` at ``yaw`` (TP-GAN crop)."""
    out = {p: None for p, v in fits.items() if v is None}
    todo = [(p, render_pose(v[2], v[0], yaw, template=TPGAN_128)) for p, v in fits.items() if v is not None]
    for i in tqdm(range(0, len(todo), 32), desc=desc):
        chunk = todo[i:i + 32]
        for (p, r), im in zip(chunk, refiner.refine_rotated([r for _, r in chunk])):
            out[p] = (r.image, im)
    return out


def embed_views(views, emb, which):
    """Embeddings of ``views`` (``which``: 0 render, 1 refined), re-cropped onto the embedder's template."""
    keys = [p for p, v in views.items() if v is not None]
    out = {p: None for p in views}
    for i in range(0, len(keys), 64):
        ks = keys[i:i + 64]
        crops = np.stack([to_template(views[p][which], emb.template) for p in ks])
        for p, e in zip(ks, emb.embed_crops(crops)):
            out[p] = e
    return out


def yaw_of(crop):
    """pifr.estimate_yaw of a 128 px crop, edge-padded by 48 px (the detector needs room), or None."""
    try:
        return pifr.estimate_yaw(np.ascontiguousarray(np.pad(crop, ((48, 48), (48, 48), (0, 0)), mode="edge")))
    except pifr.PifrError:
        return None


def pose_key(yaw):
    """The template yaw (signed, from :data:`POSE_YAWS`) nearest a probe's ``yaw``."""
    return float(np.sign(yaw) * min(POSE_YAWS, key=lambda t: abs(t - abs(yaw))))


def pose_match_hits(raw, templates, yaws, gallery, probes, yaw_threshold, weight):
    """Rank-1 hits of CFP profile probes under pose matching: a probe with |yaw| > T scores each
    gallery face as (1 − w)·raw·raw + w·raw·(its template at the yaw nearest the probe's)."""
    gids = [im.identity for im in gallery]
    graw = np.stack([raw[str(im.path)] for im in gallery])
    hits = []
    for im in probes:
        e = raw.get(str(im.path))
        if e is None:
            hits.append(False)
            continue
        s = graw @ e
        y = yaws.get(str(im.path), 0.0)
        if abs(y) > yaw_threshold:
            gt = np.stack([templates[pose_key(y)][str(g.path)] for g in gallery])
            s = (1 - weight) * s + weight * (gt @ e)
        hits.append(gids[int(np.argmax(s))] == im.identity)
    return np.array(hits, bool)


def frontal_and_profile(pair):
    """A CFP frontal–profile pair as ``(frontal path, profile path)``."""
    return (pair.a, pair.b) if Path(pair.a).parent.name == "frontal" else (pair.b, pair.a)


def pose_match_fp(raw, templates, yaws, pairs, yaw_threshold, weight):
    """FP verification figures under pose matching: a pair whose profile has |yaw| > T scores
    (1 − w)·cos(frontal, profile) + w·cos(the frontal's template at the profile's yaw, profile)."""
    scores = []
    for x in pairs:
        f, p = frontal_and_profile(x)
        ef, ep = raw.get(str(f)), raw.get(str(p))
        if ef is None or ep is None:
            scores.append(-1.0)
            continue
        s = float(ef @ ep)
        y = yaws.get(str(p), 0.0)
        t = templates[pose_key(y)].get(str(f)) if abs(y) > yaw_threshold else None
        scores.append(s if t is None else (1 - weight) * s + weight * float(t @ ep))
    return fp_figures(np.array(scores), np.array([x.same for x in pairs]), np.arange(len(pairs)) % 10)


def open_set(emb_of, gallery, probes, strangers, threshold):
    """(DIR, FAR per probe): share of ``probes`` whose best gallery match is themselves at or above
    ``threshold``, share of ``strangers`` whose best score reaches it."""
    G = np.stack([emb_of(im.path) for im in gallery])
    gids = [im.identity for im in gallery]

    def best(im):
        e = emb_of(im.path)
        if e is None:
            return None, -1.0
        s = G @ e
        k = int(np.argmax(s))
        return gids[k], float(s[k])

    dir_ = np.mean([(lambda b: b[0] == im.identity and b[1] >= threshold)(best(im)) for im in probes])
    far = np.mean([best(im)[1] >= threshold for im in strangers])
    return float(dir_), float(far)


def speed(refiner, paths, detector, n=20):
    """Milliseconds per face (medians over ``n`` photos, after a warm-up): the network alone and in
    a batch of 32 renders; fit + render + network for a found face; the whole pifr.frontalize call."""
    import torch

    from pifr.detection import locate_face

    found = []
    for p in paths:
        try:
            found.append((p, *locate_face(p, detector=detector)))
        except pifr.PifrError:
            continue
        if len(found) == n:
            break
    e2e, net, full = [], [], []
    renders = []
    for k, (p, img, face) in enumerate(found[:3] + found):
        t0 = time.perf_counter()
        fit = pifr.face3d.fit_faces(img, [face])[0]
        r_ = render_pose(fit, img, 0.0)
        t1 = time.perf_counter()
        refiner.refine(r_.image[None], r_.mask[None], r_.landmarks[None])
        t2 = time.perf_counter()
        pifr.frontalize(p, method="refined", weights=str(refiner.path))
        t3 = time.perf_counter()
        if k >= 3:  # the first three warm up
            e2e.append(t2 - t0)
            net.append(t2 - t1)
            full.append(t3 - t2)
            renders.append(r_)
    reps = (renders * 32)[:32]
    t = time.perf_counter()
    refiner.refine(np.stack([r.image for r in reps]), np.stack([r.mask for r in reps]), np.stack([r.landmarks for r in reps]))
    batch = (time.perf_counter() - t) / len(reps)
    ms = lambda v: round(1000 * float(np.median(v)), 1)  # noqa: E731
    sp = {"faces": len(found), "torch_threads": torch.get_num_threads(), "network_one": ms(net), "network_batch32": round(1000 * batch, 1),
          "fit_render_network": ms(e2e), "frontalize_call": ms(full)}
    print(f"\nSpeed (median of {sp['faces']} CFP profiles, torch threads {sp['torch_threads']}): network {sp['network_one']} ms "
          f"alone, {sp['network_batch32']} ms per face in a batch of 32; fit + render + network {sp['fit_render_network']} ms; "
          f"pifr.frontalize (with detection and yaw) {sp['frontalize_call']} ms per face")
    return sp


def main() -> None:
    ap = parser(__doc__, "results/refiner")
    ap.add_argument("--refiner", default=None, help="refiner weights (default: the installed one)")
    ap.add_argument("--policy-yaw", type=float, nargs="+", default=[30.0, 45.0, 60.0])
    ap.add_argument("--fusion", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--no-pose-matching", action="store_true")
    ap.add_argument("--speed-only", action="store_true", help="only the speed figures (20 CFP 351-400 profiles)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from pifr.refinement import get_refiner

    root = shared_root(args.shared)
    refiner = get_refiner(args.refiner)
    ref_sha = pifr.weights.sha256_file(refiner.path)
    rec = run_header("refiner", f"{root}/data/cfp (351-400; strangers 001-050 profiles); report-only: {root}/data/cmu_faces",
                     {**weights_sha(args.embedders), "refiner": ref_sha}, "tune (CFP 351-400: rules chosen here); "
                     "report (CMU Face Images; CFP 001-050 profiles as strangers)")
    t0 = time.time()
    if args.speed_only:
        from pifr.eval.datasets import cfp_images as _imgs

        rec.update(speed_ms=speed(refiner, [im.path for im in _imgs(root / "data" / "cfp", range(351, 401), "profile")], args.detector))
        save_record(Path(args.out), rec, "refiner")
        return
    pairs, ff_pairs, frontals, gallery, probes, every, cmu, cmu_paths = tuning_protocol(root)
    strangers = cfp_images(root / "data" / "cfp", STRANGER_IDS, "profile")
    fits = fits_of(every + cmu_paths + [im.path for im in strangers], args.detector)
    views = refined_views(fits, refiner)
    pose_views = {}
    if not args.no_pose_matching:
        gal_fits = {str(im.path): fits.get(str(im.path)) for im in gallery}
        cmu_gal, _ = cmu_protocol(cmu, lambda p: fits.get(str(p)) is not None)
        gal_fits.update({str(p): fits[str(p)] for p in cmu_gal.values()})
        # FP pairs need each frontal only at its profile's template yaw (by the detector's yaw, as the rule sees it).
        _, det_yaws = embed_paths(every, args.embedders[0], args.detector, with_yaw=True)
        fp_need = {}
        for x in pairs:
            f, p = frontal_and_profile(x)
            if fits.get(str(f)) is not None and str(p) in det_yaws:
                fp_need.setdefault(pose_key(det_yaws[str(p)]), {})[str(f)] = fits[str(f)]
        for y in POSE_YAWS:
            for s in (-1.0, 1.0):
                pose_views[s * y] = refined_views({**gal_fits, **fp_need.get(s * y, {})}, refiner, s * y, desc=f"frontals at {s * y:+g}°")
    # Frontal outputs should read frontal (pifr.estimate_yaw; a face it cannot find counts against).
    prof = {str(im.path) for im in probes}
    yaw_out = {}
    for which, label in ((0, "render"), (1, "refined")):
        est = [yaw_of(v[which]) for p, v in views.items() if v is not None and p in prof]
        found = np.array([e for e in est if e is not None], float)
        yaw_out[label] = {"n": len(est), "found": int(len(found)), "mean_abs": float(np.abs(found).mean()),
                          "within_10": float((np.abs(found) <= 10).sum() / max(len(est), 1))}
        print(f"\npifr.estimate_yaw of the {label} frontal views of {len(est)} CFP 351-400 profiles: face found in "
              f"{len(found)}, mean |yaw| {yaw_out[label]['mean_abs']:.1f}°, {100 * yaw_out[label]['within_10']:.0f} % within ±10°")

    res, cmu_res, bins, dirs, chosen = {}, {}, {}, {}, {}
    for name in args.embedders:
        emb = get_embedder(name)
        raw, yaws = embed_paths(every + cmu_paths + [im.path for im in strangers], name, args.detector, with_yaw=True)
        raw_of = lambda p: raw[str(p)]  # noqa: E731
        # The floor as the library computes it: the render placed straight in the embedder's template.
        rule = AUTO_RULES.get(name)
        render = embed_renders(fits, emb, rule.view_yaws, yaws) if rule else embed_renders(fits, emb)
        refined = embed_views(views, emb, 1)
        raw_hits = cfp_hits(raw_of, gallery, probes)
        if rule:
            floor_t, floor_w = rule.yaw_threshold, rule.fusion_weight  # its view: the renders at ±rule.view_yaws, pooled
        else:  # an embedder without a rule (e.g. one never trained against): the best render rule of the grid
            floor_t, floor_w = max(((t, w) for t in args.policy_yaw for w in args.fusion),
                                   key=lambda tw: cfp_hits(policy(raw, render, yaws, *tw), gallery, probes).mean())
        floor = policy(raw, render, yaws, floor_t, floor_w)
        floor_hits = cfp_hits(floor, gallery, probes)
        floor_label = (f"floor: render{' at ±' + '/'.join(f'{a:g}' for a in rule.view_yaws) + '°' if rule and rule.view_yaws != (0.0,) else ''} |yaw|>{floor_t:g} w={floor_w:g}"
                       + ("" if rule else " (best of grid)"))
        ev = lambda of: evaluate(of, raw_of, frontals, pairs, ff_pairs, gallery, probes)  # noqa: E731

        def paired(hits):
            return {"vs_raw": asdict(mcnemar(raw_hits, hits)), "vs_floor": asdict(mcnemar(floor_hits, hits))}

        r = {"raw": ev(raw_of), floor_label: {**ev(floor), **paired(floor_hits)},
             "refined (every face)": {**ev(policy(raw, refined, yaws, -1.0, 1.0)),
                                      **paired(cfp_hits(policy(raw, refined, yaws, -1.0, 1.0), gallery, probes))}}
        rules = {}
        for t in args.policy_yaw:
            for w in args.fusion:
                of = policy(raw, refined, yaws, t, w)
                rules[f"refined |yaw|>{t:g} w={w:g}"] = of
                r[f"refined |yaw|>{t:g} w={w:g}"] = {**ev(of), **paired(cfp_hits(of, gallery, probes))}
        if pose_views:
            for which, label in ((0, "render"), (1, "refined")):
                templates = {y: embed_views(v, emb, which) for y, v in pose_views.items()}
                for t in (30.0, 45.0, 60.0):
                    for w in (0.25, 0.5):
                        h = pose_match_hits(raw, templates, yaws, gallery, probes, t, w)
                        r[f"pose-match {label} |yaw|>{t:g} w={w:g}"] = {"rank1": float(h.mean()), **paired(h),
                                                                        **pose_match_fp(raw, templates, yaws, pairs, t, w)}
        # Best refined rule: lowest McNemar p against the floor among those that gain on it.
        cands = [k for k in r if k.startswith("refined |yaw|")]
        best = min(cands, key=lambda k: (r[k]["vs_floor"]["p_value"] if r[k]["vs_floor"]["gained"] > r[k]["vs_floor"]["lost"] else 2.0,
                                         -r[k]["rank1"]))
        chosen[name] = best
        best_of = rules[best]
        bins[name] = {"raw": by_yaw(raw_of, gallery, probes, yaws), "floor": by_yaw(floor, gallery, probes, yaws),
                      best: by_yaw(best_of, gallery, probes, yaws)}
        raw_cmu, floor_cmu, best_cmu = cmu_hits(raw_of, cmu), cmu_hits(floor, cmu), cmu_hits(best_of, cmu)
        cmu_res[name] = {"raw": cmu_summary(raw_cmu), "floor": cmu_summary(floor_cmu), best: cmu_summary(best_cmu),
                         "refined (every face)": cmu_summary(cmu_hits(policy(raw, refined, yaws, -1.0, 1.0), cmu)),
                         "best vs floor": asdict(mcnemar(floor_cmu[0], best_cmu[0]))}
        op = default_operating_point(name, len(gallery))
        if op is not None:
            shift = rule.threshold_shift if rule else 0.0
            dirs[name] = {"threshold": op.threshold, "raw": open_set(raw_of, gallery, probes, strangers, op.threshold),
                          "floor": open_set(floor, gallery, probes, strangers, op.threshold + shift),
                          best: open_set(best_of, gallery, probes, strangers, op.threshold + shift)}
        res[name] = r

    print("\nCFP 351-400 (tuning split; 200 profile probes, gallery frontal 01)\n\n| embedder | method | rank-1 % | vs raw +/−, p "
          "| vs floor +/−, p | FP acc % | FP EER % | TAR@FAR=1% | FF acc % |\n|---|---|---|---|---|---|---|---|---|")
    for name, r in res.items():
        for m, v in r.items():
            mc = lambda k: f"+{v[k]['gained']} / −{v[k]['lost']}, {v[k]['p_value']:.3f}" if k in v else ""  # noqa: E731
            f = lambda k, s=100: f"{s * v[k]:.2f}" if k in v else ""  # noqa: E731
            print(f"| {name} | {m} | {100 * v['rank1']:.1f} | {mc('vs_raw')} | {mc('vs_floor')} | {f('fp_accuracy')} | "
                  f"{f('fp_eer')} | {f('fp_tar_at_far_1e-2')} | {f('ff_accuracy')} |")
    print("\nBest refined rule (lowest McNemar p against the floor):", chosen)
    print("\nRank-1 % by |yaw| (probes)\n")
    for name, b in bins.items():
        for m, v in b.items():
            print(f"| {name} | {m} | " + " | ".join(f"{k}°: {100 * a:.1f} ({n})" for k, (a, n) in v.items()) + " |")
    print("\nCMU Face Images (report only)\n\n| embedder | method | rank-1 % | probes | people |\n|---|---|---|---|---|")
    for name, c in cmu_res.items():
        for m, v in c.items():
            if m == "best vs floor":
                print(f"| {name} | {m}: +{v['gained']} / −{v['lost']}, p {v['p_value']:.3f} | | | |")
            else:
                print(f"| {name} | {m} | {100 * v[0]:.1f} | {v[1]} | {v[2]} |")
    print(f"\nOpen set, gallery of the {len(gallery)} people (one frontal each): DIR of their {len(probes)} profiles and "
          f"FAR per probe of {len(strangers)} stranger profiles (CFP {STRANGER_IDS.start:03d}-{STRANGER_IDS.stop - 1:03d}), "
          "at the default gallery threshold for FAR 1 % per probe (+ the rule's shift for fused probes)\n\n"
          "| embedder | method | DIR % | FAR % |\n|---|---|---|---|")
    for name, d in dirs.items():
        print(f"| {name} | threshold | {d['threshold']:.4f} | |")
        for m, v in d.items():
            if m != "threshold":
                print(f"| {name} | {m} | {100 * v[0]:.1f} | {100 * v[1]:.2f} |")
    sp = speed(refiner, [im.path for im in probes], args.detector)
    rec.update(results=res, chosen=chosen, yaw_bins=bins, cmu=cmu_res, open_set=dirs, yaw_of_outputs=yaw_out,
               speed_ms=sp, refiner_file=str(refiner.path),
               seconds=round(time.time() - t0, 1))
    save_record(Path(args.out), rec, "refiner")


if __name__ == "__main__":
    main()
