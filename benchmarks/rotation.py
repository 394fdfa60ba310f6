"""3D face rotation (pifr.rotate / frontalize(method="3d")): fit, pose, recognition, speed.

Recognition, on CFP 351–400 (the tuning split: the "auto" rule is chosen here) and CMU Face
Images (report only): for each embedder, raw; the frontal render of every face alone; and the
pose-aware rule on a grid — a face with |yaw| > T is embedded as normalise((1 − w)·raw + w·render),
with the render placed directly in the embedder's own template. Figures: profile→frontal rank-1
(gallery frontal 01), FP verification (10 folds), EER, TAR@FAR 1 %, FF accuracy, rank-1 by |yaw|,
the grid's rule most reliably better than raw (lowest exact McNemar p, probe by probe) and the same
on CMU; the library's "auto" rule (``AUTO_RULES``: its views, e.g. turned renders pooled, which the
grid of frontal renders does not hold) with the same figures; FAR and TAR of the FP pairs at the
embedder's default threshold (does fusion move impostors?).

Pose: pifr.estimate_yaw of rotate(frontal, Y) against Y, and of rotate(profile, 0).
Fit: the fitted 68 landmarks against CFP's manual fiducials (--fit; see fit_error below).
Speed: fit + render per face (median, one thread and the default).
Each result table is printed and written to --out as rotation_*.csv (every digit) and .md.

    python benchmarks/rotation.py                      # everything, ~10 min on 2 cores
    python benchmarks/rotation.py --skip-recognition   # pose + speed only
"""
from __future__ import annotations

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401

import math

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks._harness import cache_dir, embed_paths, parser, run_header, save_record, shared_root, weights_sha, write_table
from benchmarks.frontalization import IDS, cfp_hits, cmu_hits, cmu_summary, evaluate, policy, tuning_protocol
from tqdm import tqdm

import pifr
from pifr.eval.datasets import cfp_fiducials, cfp_images, cfp_landmarks68, cmu_faces
from pifr.detection import locate_face
from pifr.embedders import get_embedder
from pifr.face3d import fit_faces
from pifr.policy import shipped_rules
from pifr.pooling import pool_views
AUTO_RULES = shipped_rules().by_embedder()  # the shipped rules, read only
from pifr.eval.metrics import mcnemar
from pifr.rotation import render_pose, render_poses

YAW_BINS = ((0, 55), (55, 70), (70, 91))
FIT_BINS = ((0, 30), (30, 60), (60, 75), (75, 91))


def fits_of(paths, detector, select="largest"):
    """``{path: (photo, face, fit) or None}`` for every path (None where no face or no fit);
    ``select``: which face, as :func:`pifr.detection.locate_face` picks it (LFW labels the centre one)."""
    out = {}
    for p in tqdm(paths, desc="3d fit"):
        try:
            img, face = locate_face(p, detector=detector, select=select)
            out[str(p)] = (img, face, fit_faces(img, [face], names=[str(p)])[0])
        except pifr.PifrError:
            out[str(p)] = None
    return out


def embed_renders(fits, emb, yaw=0.0, yaws=None):
    """Embedding of each face's render at ``yaw`` degrees, placed in the embedder's own template;
    with ``yaws`` ({path: the face's yaw}), at ``yaw`` on each face's own side. ``yaw`` may be a
    sequence of angles (an :class:`pifr.policy.AutoRule`'s ``view_yaws``): the renders at
    each, pooled as "auto" pools them (:func:`pifr.pooling.pool_views`)."""
    angles = tuple(yaw) if isinstance(yaw, (tuple, list)) else (yaw,)
    out = {}
    for p, v in tqdm(fits.items(), desc=f"render[{emb.name}]"):
        if v is None:
            out[p] = None
            continue
        img, _, fit = v
        side = 1.0 if yaws is None else math.copysign(1.0, yaws.get(p, 0.0) or 1.0)
        crops = np.stack([r.image for r in render_poses(fit, img, [side * a for a in angles], template=emb.template)])
        out[p] = pool_views(emb.embed_crops(crops))
    return out


def at_threshold(emb_of, pairs, thr):
    """(FAR, TAR) of the FP protocol pairs at a fixed cosine threshold (a missing face never matches)."""
    s = np.array([-1.0 if emb_of(x.a) is None or emb_of(x.b) is None else float(emb_of(x.a) @ emb_of(x.b)) for x in pairs])
    same = np.array([x.same for x in pairs])
    return float((s[~same] >= thr).mean()), float((s[same] >= thr).mean())


def by_yaw(emb_of, gallery, probes, yaws):
    hits = cfp_hits(emb_of, gallery, probes)
    y = np.array([abs(yaws.get(str(im.path), np.nan)) for im in probes])
    return {f"{lo}-{hi}": (float(hits[(y >= lo) & (y < hi)].mean()) if ((y >= lo) & (y < hi)).any() else float("nan"),
                           int(((y >= lo) & (y < hi)).sum())) for lo, hi in YAW_BINS}


def pose_figures(cfp, detector, n):
    """estimate_yaw of renders at requested yaws (CFP 351–400 frontals) and of frontal renders of profiles."""
    frontals = [im for im in cfp_images(cfp, IDS, "frontal") if im.index == 1][:n]
    profiles = [im for im in cfp_images(cfp, IDS, "profile") if im.index == 1][:n]
    targets = (-90, -75, -60, -45, -30, -15, 15, 30, 45, 60, 75, 90)
    err = {t: [] for t in targets}
    pad = lambda a: np.ascontiguousarray(np.pad(a, ((48, 48), (48, 48), (0, 0))))  # noqa: E731 - room for the detector
    for im in tqdm(frontals, desc="pose: frontals"):
        img, face = locate_face(im.path, detector=detector)
        fit = fit_faces(img, [face])[0]
        for t in targets:
            try:
                err[t].append(pifr.estimate_yaw(pad(render_pose(fit, img, t).image)) - t)
            except pifr.PifrError:
                pass
    back = []
    for im in tqdm(profiles, desc="pose: profiles"):
        try:
            img, face = locate_face(im.path, detector=detector)
            fit = fit_faces(img, [face])[0]
            back.append((face.yaw, pifr.estimate_yaw(pad(render_pose(fit, img, 0.0).image))))
        except pifr.PifrError:
            pass
    return ({t: {"n": len(v), "bias": float(np.mean(v)), "sd": float(np.std(v))} for t, v in err.items() if v},
            {"n": len(back), "mean_abs_yaw_in": float(np.mean([abs(a) for a, _ in back])),
             "mean_abs_yaw_out": float(np.mean([abs(b) for _, b in back])),
             "share_within_10": float(np.mean([abs(b) <= 10 for _, b in back]))})


def fit_error(pts68, fid):
    """Mean error of ``pts68`` ``(68, 2)`` at the points CFP marks (``(30, 2)`` ``fid``; see
    :func:`pifr.eval.datasets.cfp_landmarks68`), over sqrt(w·h) of the fiducials' box."""
    t = cfp_landmarks68(fid)
    ok = np.isfinite(t[:, 0])
    wh = fid.max(0) - fid.min(0)
    return float(np.linalg.norm(pts68[ok] - t[ok], axis=1).mean() / np.sqrt(wh[0] * wh[1]))


def fit_figures(cfp, detector, ids):
    """Landmark error of the 3D fit and of dlib's 68-point predictor against CFP's manual points,
    by the 3D fit's |yaw| (frontal 01 and profile 01 of each identity)."""
    from pifr.face3d import fit_faces
    from pifr.geometry import landmarks68

    rows = []
    for im in tqdm([im for im in cfp_images(cfp, ids) if im.index in (1, 2)], desc="fit vs CFP fiducials"):
        try:
            img, face = locate_face(im.path, detector=detector)
            fit = fit_faces(img, [face])[0]
        except pifr.PifrError:
            continue
        fid = cfp_fiducials(im.path)
        rows.append((abs(fit.yaw), fit_error(fit.landmarks68(), fid), fit_error(landmarks68(img, face), fid)))
    out = {}
    for lo, hi in FIT_BINS:
        r = [x for x in rows if lo <= x[0] < hi]
        if r:
            out[f"{lo}-{hi}"] = {"n": len(r), "fit3d": float(np.mean([x[1] for x in r])), "dlib68": float(np.mean([x[2] for x in r])),
                                 "fit3d_median": float(np.median([x[1] for x in r])), "dlib68_median": float(np.median([x[2] for x in r]))}
    return out


def speed(cfp, detector, n):
    """Median ms per face: the 3D fit (network + mesh) and one render at 0° into the TP-GAN crop."""
    ims = cfp_images(cfp, IDS, "profile")[:n]
    t_fit, t_render = [], []
    for im in ims:
        try:
            img, face = locate_face(im.path, detector=detector)
            t = time.perf_counter()
            fit = fit_faces(img, [face])[0]
        except pifr.PifrError:
            continue
        t_fit.append(time.perf_counter() - t)
        t = time.perf_counter()
        render_pose(fit, img, 0.0)
        t_render.append(time.perf_counter() - t)
    return {"fit_ms": 1000 * float(np.median(t_fit)), "render_ms": 1000 * float(np.median(t_render)), "faces": len(t_fit)}


def grid(cfp, cmu_dir, detector, out, n_cfp=6, n_cmu=2):
    """A picture: per row input | render at 0° | at −60° | at +60° | visibility | rotate-and-render
    input (turned 40° away and back) | the photo in the same crop. Real CFP 351–400 profiles and
    frontals and CMU left/right photos."""
    import cv2

    from pifr.alignment import TPGAN_128, align
    from pifr.rotation import rotate_and_render

    ims = [im.path for im in cfp_images(cfp, range(351, 351 + n_cfp), "profile") if im.index == 1]
    ims += [im.path for im in cfp_images(cfp, range(351 + n_cfp, 351 + n_cfp + 2), "frontal") if im.index == 1]
    cmu = cmu_faces(cmu_dir, cache_dir() / "cmu_faces")
    ims += [im.path for im in cmu if im.pose in ("left", "right") and im.eyes == "open" and im.expression == "neutral"][:n_cmu]
    rows = []
    for p in ims:
        try:
            img, face = locate_face(p, detector=detector)
            fit = fit_faces(img, [face])[0]
        except pifr.PifrError:
            continue
        cells = [align(img, face, TPGAN_128)]
        cells += [render_pose(fit, img, y).image for y in (0.0, -60.0, 60.0)]
        cells.append((render_pose(fit, img, 0.0).visibility * 255).astype(np.uint8)[..., None].repeat(3, 2))
        pair = rotate_and_render(fit, img, face, -40.0 if fit.yaw > 0 else 40.0)
        cells += [pair.input, pair.target]
        row = np.hstack(cells)
        cv2.putText(row, f"{abs(fit.yaw):.0f}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
        rows.append(row)
    head = np.zeros((16, rows[0].shape[1], 3), np.uint8)
    for k, t in enumerate(["input", "render 0", "render -60", "render +60", "seen in photo", "R&R input", "R&R target"]):
        cv2.putText(head, t, (3 + 128 * k, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack([head] + rows)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"\ngrid of {len(rows)} faces: {out}")


def main() -> None:
    ap = parser(__doc__, "results/rotation")
    ap.add_argument("--policy-yaw", type=float, nargs="+", default=[30.0, 45.0, 60.0])
    ap.add_argument("--fusion", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--pose-faces", type=int, default=50, help="CFP 351-400 faces for the pose figures (0: skip)")
    ap.add_argument("--speed-faces", type=int, default=30)
    ap.add_argument("--skip-recognition", action="store_true")
    ap.add_argument("--grid", default=None, help="write the picture of renders here (e.g. docs/img/rotation_grid.jpg)")
    ap.add_argument("--fit-ids", default="351-400", help="CFP identities for the landmark error (e.g. 351-400; '' to skip)")
    args = ap.parse_args()
    root = shared_root(args.shared)
    cfp = root / "data" / "cfp"
    rec = run_header("rotation", f"{cfp}; report-only: {root}/data/cmu_faces",
                     {**weights_sha(args.embedders), "face3d_bfm": pifr.weights.get_spec("face3d_bfm").sha256,
                      "tddfa_mb05": pifr.weights.get_spec("tddfa_mb05").sha256},
                     "tune (CFP 351-400: rule chosen here); report (CMU Face Images, never tuned on)")
    t0 = time.time()
    if args.grid:
        grid(cfp, root / "data" / "cmu_faces" / "cmu_faces_full_and_half.tar.gz", args.detector, args.grid)
    res, chosen, cmu_res, paired, yaw_bins = {}, {}, {}, {}, {}
    if not args.skip_recognition:
        pairs, ff_pairs, frontals, gallery, probes, every, cmu, cmu_paths = tuning_protocol(root)
        fits = fits_of(every + cmu_paths, args.detector)
        rec["fit_failures"] = sum(v is None for v in fits.values())
        for name in args.embedders:
            emb = get_embedder(name)
            raw, yaws = embed_paths(every + cmu_paths, name, args.detector, with_yaw=True)
            raw_of = lambda p: raw[str(p)]  # noqa: E731
            ev = lambda of: evaluate(of, raw_of, frontals, pairs, ff_pairs, gallery, probes)  # noqa: E731
            front = embed_renders(fits, emb)
            base_hits = cfp_hits(raw_of, gallery, probes)
            r = {"raw": ev(raw_of), "render (every face)": ev(policy(raw, front, yaws, -1.0, 1.0))}
            r["raw"]["far_tar_at_default"] = at_threshold(raw_of, pairs, emb.threshold)

            def scored(of):
                """A rule's figures, its probe-by-probe McNemar against raw and its FAR / TAR at the default threshold."""
                return {**ev(of), "mcnemar": asdict(mcnemar(base_hits, cfp_hits(of, gallery, probes))),
                        "far_tar_at_default": at_threshold(of, pairs, emb.threshold)}
            for t in args.policy_yaw:
                for w in args.fusion:
                    r[f"|yaw|>{t:g} w={w:g}"] = scored(policy(raw, front, yaws, t, w))
            # The rule most reliably better than raw: lowest exact McNemar p against raw, probe by probe
            # (ties: higher rank-1 + FP accuracy, then the higher yaw threshold, which renders fewer faces).
            key = min((k for k in r if k.startswith("|yaw|")),
                      key=lambda k: (r[k]["mcnemar"]["p_value"] if r[k]["mcnemar"]["gained"] > r[k]["mcnemar"]["lost"] else 2.0,
                                     -(r[k]["rank1"] + r[k]["fp_accuracy"]), -float(k.split(">")[1].split(" ")[0])))
            t, w = (float(v) for v in key.replace("|yaw|>", "").split(" w="))
            rule = policy(raw, front, yaws, t, w)
            chosen[name] = {"rule": key, "yaw_threshold": t, "weight": w}
            raw_cmu, rule_cmu = cmu_hits(raw_of, cmu), cmu_hits(rule, cmu)
            cmu_res[name] = {"raw": cmu_summary(raw_cmu), "render (every face)": cmu_summary(cmu_hits(policy(raw, front, yaws, -1.0, 1.0), cmu)),
                             f"chosen: {key}": cmu_summary(rule_cmu)}
            paired[name] = {"cfp": asdict(mcnemar(cfp_hits(raw_of, gallery, probes), cfp_hits(rule, gallery, probes))),
                            "cmu": asdict(mcnemar(raw_cmu[0], rule_cmu[0]))}
            yaw_bins[name] = {"raw": by_yaw(raw_of, gallery, probes, yaws),
                              "render": by_yaw(policy(raw, front, yaws, -1.0, 1.0), gallery, probes, yaws),
                              "chosen": by_yaw(rule, gallery, probes, yaws)}
            auto = AUTO_RULES.get(name)
            if auto is not None:  # the rule the library applies (chosen with research/ scripts too), scored the same way
                turned = {p: v for p, v in fits.items() if abs(yaws.get(p, 0.0)) > auto.yaw_threshold}
                of = policy(raw, embed_renders(turned, emb, auto.view_yaws, yaws), yaws, auto.yaw_threshold, auto.fusion_weight)
                k = "auto: " + "/".join(f"{a:g}" for a in auto.view_yaws) + f"° |yaw|>{auto.yaw_threshold:g} w={auto.fusion_weight:g}"
                r[k] = scored(of)
                auto_cmu = cmu_hits(of, cmu)
                cmu_res[name][k] = cmu_summary(auto_cmu)
                paired[name].update({"cfp, auto": r[k]["mcnemar"], "cmu, auto": asdict(mcnemar(raw_cmu[0], auto_cmu[0]))})
                yaw_bins[name]["auto"] = by_yaw(of, gallery, probes, yaws)
            res[name] = r
        out = Path(args.out)
        write_table(cfp_table(res), out, "rotation_cfp", "CFP 351-400 (tuning split; a profile without a face found "
                    "counts as a miss; gained / lost / p: exact McNemar against raw, probe by probe; FAR / TAR: FP pairs "
                    "at the embedder's threshold)", CFP_FORMAT)
        write_table(yaw_bin_table(yaw_bins), out, "rotation_yaw_bins", "Rank-1 % by the profile's |yaw| (probes per bin)")
        print("\nChosen on CFP 351-400 (lowest McNemar p against raw):", chosen)
        write_table(cmu_table(cmu_res), out, "rotation_cmu", "CMU Face Images (report only)")
        write_table(paired_table(paired), out, "rotation_mcnemar", "Chosen rule against raw, probe by probe (exact McNemar)",
                    {"p": ".4f"})
    fit_err = None
    if args.fit_ids:
        lo, hi = (int(v) for v in args.fit_ids.split("-"))
        fit_err = fit_figures(cfp, args.detector, range(lo, hi + 1))
        write_table(fit_table(fit_err), Path(args.out), "rotation_fit_error",
                    f"Landmark error against CFP's manual fiducials (CFP {args.fit_ids}, frontal and profile 01-02; mean "
                    "point error / sqrt(w*h) of the fiducials' box, %; 8 points: eye corners, nose bridge and tip, mouth "
                    "corner, lips, chin)")
    pose = back = None
    if args.pose_faces:
        pose, back = pose_figures(cfp, args.detector, args.pose_faces)
        write_table(pd_rows([{"Y °": t, "n": v["n"], "bias °": v["bias"], "sd °": v["sd"]} for t, v in pose.items()]),
                    Path(args.out), "rotation_pose", "estimate_yaw(rotate(frontal, Y)) − Y on CFP 351-400 frontals",
                    {"bias °": "+.1f"})
        print(f"\nrotate(profile, 0) on {back['n']} CFP 351-400 profiles: mean |yaw| {back['mean_abs_yaw_in']:.1f}° → "
              f"{back['mean_abs_yaw_out']:.1f}°; {100 * back['share_within_10']:.0f} % within ±10°")
    sp = speed(cfp, args.detector, args.speed_faces) if args.speed_faces else None
    if sp:
        print(f"\nSpeed ({sp['faces']} CFP profiles, median): fit {sp['fit_ms']:.0f} ms + render {sp['render_ms']:.0f} ms per face")
    rec.update(fit_error=fit_err, results=res, chosen=chosen, cmu=cmu_res, paired=paired, yaw_bins=yaw_bins, pose=pose, profile_to_frontal=back,
               speed=sp, seconds=round(time.time() - t0, 1))
    save_record(Path(args.out), rec, "rotation")


#: Markdown float formats of :func:`cfp_table`'s columns (the rest: one decimal).
CFP_FORMAT = {"p": ".3f", "FP acc %": ".2f", "FP EER %": ".2f", "FAR at threshold %": ".2f", "FF acc %": ".2f"}


def pd_rows(rows):
    """Dicts with the same keys, in column order, as a DataFrame."""
    import pandas as pd

    return pd.DataFrame(list(rows))


def cfp_table(res):
    """One row per embedder and method: rank-1, McNemar against raw (blank for raw and the plain
    render), FP accuracy, EER and TAR at FAR 1 %, FAR / TAR at the embedder's threshold, FF accuracy; rates in %."""
    rows = []
    for name, r in res.items():
        for m, v in r.items():
            mc, ft = v.get("mcnemar") or {}, v.get("far_tar_at_default")
            rows.append({"embedder": name, "method": m, "rank-1 %": 100 * v["rank1"], "gained": mc.get("gained"),
                         "lost": mc.get("lost"), "p": mc.get("p_value"), "FP acc %": 100 * v["fp_accuracy"],
                         "FP EER %": 100 * v["fp_eer"], "TAR@FAR=1% %": 100 * v["fp_tar_at_far_1e-2"],
                         "FAR at threshold %": 100 * ft[0] if ft else None, "TAR at threshold %": 100 * ft[1] if ft else None,
                         "FF acc %": 100 * v["ff_accuracy"]})
    return pd_rows(rows).astype({"gained": "Int64", "lost": "Int64"}) if rows else pd_rows(rows)


def yaw_bin_table(yaw_bins):
    """One row per embedder and method: rank-1 % and probes in each |yaw| bin of :data:`YAW_BINS`."""
    rows = []
    for name, r in yaw_bins.items():
        for m, v in r.items():
            row = {"embedder": name, "method": m}
            for b, (acc, n) in v.items():
                row.update({f"{b}° %": 100 * acc, f"{b}° n": n})
            rows.append(row)
    return pd_rows(rows)


def cmu_table(cmu_res):
    """One row per embedder and method on CMU: rank-1 %, probes, people."""
    return pd_rows({"embedder": name, "method": m, "rank-1 %": 100 * acc, "probes": n, "people": k}
                   for name, r in cmu_res.items() for m, (acc, n, k) in r.items())


def paired_table(paired):
    """The chosen (and library) rules against raw, probe by probe: gained, lost, exact McNemar p."""
    return pd_rows({"embedder": name, "set": where, "gained": c["gained"], "lost": c["lost"], "p": c["p_value"]}
                   for name, r in paired.items() for where, c in r.items())


def fit_table(fit_err):
    """Landmark error (%) of the 3D fit and of dlib's 68 points, by the fit's |yaw| bin."""
    return pd_rows({"3D fit |yaw|": f"{b}°", "n": v["n"], "3D fit mean %": 100 * v["fit3d"], "dlib 68 mean %": 100 * v["dlib68"],
                    "3D fit median %": 100 * v["fit3d_median"], "dlib 68 median %": 100 * v["dlib68_median"]}
                   for b, v in fit_err.items())


if __name__ == "__main__":
    main()
