"""Research: does a refiner earn its place? Three tests on CFP 351–400 profiles (the tuning split).

Protocol and decision, fixed before any trained TP-GAN refiner was scored (issue 44):

* Views: each profile is fitted in 3D and rendered frontal (0°) into the TP-GAN crop, as
  ``pifr.frontalize(method="3d")`` does; the refiner's output is that render refined
  (``method="refined"``). ``--profiles N``: N of the 200 profiles, spread evenly over the list.
* (a) identity kept: per profile, the cosine between the embedding of the refined view and of the
  person's real frontal photo (gallery frontal 01), against the same for the plain render; the
  refined view must be closer for more than half the profiles (exact sign test p reported), for
  every embedder in ``--embedders`` — the recipe's teacher (dlib_resnet) and one no refiner was
  trained against (``mobilefacenet_casia``, user-supplied).
* (b) looks like a photo: KID (:func:`pifr.eval.metrics.kernel_inception_distance`, ×1000) of the
  refined views and of the renders against the real frontal photos of CFP 351–400 (all 500,
  aligned into the same TP-GAN crop), on the features of a network available offline and never a
  teacher: ``--kid-net`` (default ``mobilefacenet_casia``; features: its last tapped feature map,
  averaged over space, concatenated with its embedding). The refined views' KID must be lower.
* (c) recognition: rank-1 of the profiles (gallery: frontal 01 of the 50 people) under each
  embedder's ``"auto"`` rule (``AUTO_RULES``: its views rendered and pooled, |yaw| > T, weight w)
  with the plain renders (the library's way: rendered straight into the embedder's template)
  against the same rule with each view refined (rendered in the TP-GAN crop, refined, moved to the
  template — as ``frontal_view("refined")`` does); refined must not be lower for any embedder.

Ship only if (a), (b) and (c) all hold. Also writes a grid: profile | render | refined | frontal.

    PIFR_WEIGHTS_DIR=../shared/models/mobilefacenet python -m research.refiner_gate \\
        --refiner results/run/refiner.safetensors --profiles 100 --grid results/gate_grid.jpg
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import cache_dir, embed_paths, parser, run_header, save_record, shared_root  # noqa: E402
from benchmarks.frontalization import cfp_hits, policy, tuning_protocol  # noqa: E402
from benchmarks.rotation import embed_renders, fits_of  # noqa: E402

from pifr.alignment import TPGAN_128  # noqa: E402
from pifr.eval.metrics import kernel_inception_distance, mcnemar  # noqa: E402
from pifr.policy import shipped_rules  # noqa: E402
from pifr.pooling import pool_views  # noqa: E402
from pifr.views import to_template  # noqa: E402
AUTO_RULES = shipped_rules().by_embedder()  # the shipped rules, read only


_FITS = {}


def fits(paths, detector):
    """:func:`rotation.fits_of`, each photo fitted once per run (the renders and the plain views share them)."""
    todo = [p for p in paths if p not in _FITS]
    if todo:
        _FITS.update(fits_of(todo, detector))
    return {p: _FITS[p] for p in paths}


def spread(items, n):
    """``n`` items spread evenly over ``items`` (all of them when ``n`` is 0 or larger)."""
    if not n or n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def renders_of(paths, yaws, rules, detector):
    """Per profile (in ``paths``): its renders in the TP-GAN crop at 0° and at each rule's view
    yaws on the face's side, and the profile itself aligned into that crop — ``{path: {"yaws",
    "image" (V, 128, 128, 3), "mask" (V, 128, 128), "landmarks" (V, 68, 2), "photo" (128, 128, 3)}}``,
    None-free (a profile without a fit is left out). Cached on disk: nothing here is trained."""
    from pifr.alignment import align
    from pifr.rotation import render_poses

    wanted = sorted({0.0} | {a for r in rules for a in r.view_yaws})
    key = hashlib.sha256(("\n".join(paths) + f"|{wanted}|{detector}").encode()).hexdigest()[:16]
    f = cache_dir() / f"refiner_gate_renders_{key}.npz"
    if f.is_file():
        with np.load(f, allow_pickle=False) as z:
            keep = [str(k) for k in z["paths"]]
            return {p: {"yaws": wanted, "image": z["image"][i], "mask": z["mask"][i], "landmarks": z["landmarks"][i],
                        "photo": z["photo"][i]} for i, p in enumerate(keep)}
    out = {}
    for p, v in fits(paths, detector).items():
        if v is None:
            continue
        img, face, fit = v
        side = math.copysign(1.0, yaws.get(p, 0.0) or 1.0)
        rs = render_poses(fit, img, [side * a for a in wanted], template=TPGAN_128)
        out[p] = {"yaws": wanted, "image": np.stack([r.image for r in rs]), "mask": np.stack([r.mask for r in rs]),
                  "landmarks": np.stack([r.landmarks for r in rs]), "photo": align(img, face, TPGAN_128)}
    keep = list(out)
    np.savez(f, paths=np.array(keep), **{k: np.stack([out[p][k] for p in keep]) for k in ("image", "mask", "landmarks", "photo")})
    return out


def plain_auto(keys, emb, rule, yaws, detector):
    """``{path: pooled embedding of the plain renders at ±rule.view_yaws}``, rendered straight into
    the embedder's template as the library does (cached on disk: nothing here is trained)."""
    key = hashlib.sha256(("\n".join(keys) + f"|{emb.name}|{rule.view_yaws}|{detector}").encode()).hexdigest()[:16]
    f = cache_dir() / f"refiner_gate_plain_{key}.npz"
    if f.is_file():
        with np.load(f, allow_pickle=False) as z:
            return dict(zip([str(k) for k in z["paths"]], z["emb"]))
    out = {p: e for p, e in embed_renders(fits(keys, detector), emb, rule.view_yaws, yaws).items() if e is not None}
    np.savez(f, paths=np.array(list(out)), emb=np.stack(list(out.values())))
    return out


def views_of(renders, refiner):
    """``{path: {"render": {yaw: crop}, "refined": {yaw: crop}}}``: each render and its refined image."""
    out = {}
    for p, r in renders.items():
        refined = refiner.refine(r["image"], r["mask"], r["landmarks"])
        out[p] = {"render": dict(zip(r["yaws"], r["image"])), "refined": dict(zip(r["yaws"], refined))}
    return out


def kid_features(crops, net_name, batch=64):
    """``(N, d)`` features of TP-GAN crops (uint8 ``(N, 128, 128, 3)``) by ``net_name``: its last
    tapped feature map averaged over space, then its embedding."""
    import torch

    from pifr.train.validation import identity_network

    net = identity_network(net_name)
    feats = []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            x = torch.from_numpy(np.ascontiguousarray(crops[i:i + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
            out = net(x)
            maps = [k for k in out if k != "embedding" and out[k].ndim == 4]
            last = out[sorted(maps)[-1]].float().mean((2, 3))
            feats.append(torch.cat([last, out["embedding"].float()], 1).numpy())
    return np.concatenate(feats)


def real_frontal_crops(frontals, detector):
    """The real frontal photos aligned into the TP-GAN crop (cached on disk by path list)."""
    from pifr.alignment import align
    from pifr.detection import locate_face
    from pifr.errors import PifrError

    key = hashlib.sha256("\n".join(str(im.path) for im in frontals).encode()).hexdigest()[:16]
    f = cache_dir() / f"refiner_gate_frontals_{detector}_{key}.npy"
    if f.is_file():
        return np.load(f)
    crops = []
    for im in frontals:
        try:
            img, face = locate_face(im.path, detector=detector)
        except PifrError:
            continue
        crops.append(align(img, face, TPGAN_128))
    arr = np.stack(crops)
    np.save(f, arr)
    return arr


def sign_test(render_cos, refined_cos):
    """(share of faces where the refined view is closer, exact two-sided p over the non-ties)."""
    a, b = np.asarray(render_cos), np.asarray(refined_cos)
    m = mcnemar(a > b, b > a)  # "gained" = refined closer; ties count for neither
    return float(np.mean(b > a)), m


def save_grid(path, probes, renders, views, gallery_crops, n=8):
    from PIL import Image

    rows = []
    for p in spread([p for p in probes if p in views], n):
        pid = Path(p).parts[-3]
        rows.append(np.concatenate([renders[p]["photo"], views[p]["render"][0.0], views[p]["refined"][0.0],
                                    gallery_crops.get(pid, np.zeros((128, 128, 3), np.uint8))], 1))
    if rows:
        Image.fromarray(np.concatenate(rows, 0)).save(path, quality=90)


def main():
    ap = parser(__doc__, "results/refiner_gate")
    ap.add_argument("--refiner", required=True, help="refiner weights (a training run's refiner.safetensors)")
    ap.add_argument("--profiles", type=int, default=0, help="profiles of CFP 351-400 to score (0 = all 200)")
    ap.add_argument("--kid-net", default="mobilefacenet_casia")
    ap.add_argument("--grid", default=None, help="write profile | render | refined | frontal rows here (JPEG)")
    ap.add_argument("--threads", type=int, default=1)
    ap.set_defaults(embedders=["dlib_resnet", "mobilefacenet_casia"])
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import pifr.weights
    from pifr.embedders import get_embedder
    from pifr.refinement import get_refiner

    t0 = time.time()
    root = shared_root(args.shared)
    refiner = get_refiner(args.refiner)
    rec = run_header("refiner_gate", f"{root}/data/cfp (351-400 profiles, gallery frontal 01, all 500 frontals for KID)",
                     {"refiner": pifr.weights.sha256_file(refiner.path)}, "tune (CFP 351-400)")
    _, _, frontals, gallery, probes_all, _, _, _ = tuning_protocol(root)
    probes = spread(probes_all, args.profiles)
    paths = [str(im.path) for im in probes]
    _, yaws = embed_paths([im.path for im in probes], args.embedders[0], args.detector, with_yaw=True)
    rules = [AUTO_RULES[e] for e in args.embedders if e in AUTO_RULES]
    renders = renders_of(paths, yaws, rules, args.detector)
    views = views_of(renders, refiner)
    print(f"{len(views)} of {len(paths)} profiles fitted and rendered ({time.time() - t0:.0f} s)")

    res = {"profiles": len(paths), "rendered": len(views), "a_identity": {}, "c_auto": {}}
    for name in args.embedders:
        emb = get_embedder(name)
        raw, eyaws = embed_paths([im.path for im in gallery] + [im.path for im in probes], name, args.detector, with_yaw=True)
        front = {im.identity: raw[str(im.path)] for im in gallery if raw.get(str(im.path)) is not None}
        keys = [p for p in paths if p in views and next(im.identity for im in probes if str(im.path) == p) in front]
        ident = {str(im.path): im.identity for im in probes}

        def embed(which, yaw, ks=keys):
            return dict(zip(ks, emb.embed_crops(np.stack([to_template(views[p][which][yaw], emb.template) for p in ks]))))

        e_render, e_ref = embed("render", 0.0), embed("refined", 0.0)
        c_render = np.array([float(e_render[p] @ front[ident[p]]) for p in keys])
        c_ref = np.array([float(e_ref[p] @ front[ident[p]]) for p in keys])
        share, m = sign_test(c_render, c_ref)
        res["a_identity"][name] = {"faces": len(keys), "refined_closer": share, "closer": m.gained, "farther": m.lost,
                                   "p": m.p_value, "mean_cos_render": float(c_render.mean()), "mean_cos_refined": float(c_ref.mean()),
                                   "holds": share > 0.5}
        print(f"(a) {name}: refined view closer to the real frontal for {m.gained} of {len(keys)} profiles "
              f"({100 * share:.1f} %; farther {m.lost}, p {m.p_value:.4f}); mean cosine render {c_render.mean():.4f} "
              f"→ refined {c_ref.mean():.4f}")
        rule = AUTO_RULES.get(name)
        if rule is None:
            continue
        plain = plain_auto(keys, emb, rule, eyaws, args.detector)
        per_view = {a: embed("refined", a) for a in rule.view_yaws}
        refined_pool = {p: pool_views(np.stack([per_view[a][p] for a in rule.view_yaws])) for p in keys}
        sub = [im for im in probes if str(im.path) in keys]
        h_plain = cfp_hits(policy(raw, plain, eyaws, rule.yaw_threshold, rule.fusion_weight), gallery, sub)
        h_ref = cfp_hits(policy(raw, refined_pool, eyaws, rule.yaw_threshold, rule.fusion_weight), gallery, sub)
        h_raw = cfp_hits(lambda p: raw.get(str(p)), gallery, sub)
        mc = mcnemar(h_plain, h_ref)
        res["c_auto"][name] = {"probes": len(sub), "raw": float(h_raw.mean()), "auto_render": float(h_plain.mean()),
                               "auto_refined": float(h_ref.mean()), "gained": mc.gained, "lost": mc.lost, "p": mc.p_value,
                               "holds": bool(h_ref.sum() >= h_plain.sum())}
        print(f"(c) {name}: rank-1 raw {100 * h_raw.mean():.1f} %, auto with renders {100 * h_plain.mean():.1f} %, "
              f"with refined views {100 * h_ref.mean():.1f} % (+{mc.gained} / −{mc.lost}, p {mc.p_value:.4f}; {len(sub)} profiles)")

    real = real_frontal_crops(frontals, args.detector)
    keys = [p for p in paths if p in views]
    f_real = kid_features(real, args.kid_net)
    kid = {}
    for which in ("render", "refined"):
        f = kid_features(np.stack([views[p][which][0.0] for p in keys]), args.kid_net)
        m, s = kernel_inception_distance(f_real, f, subsets=100, subset_size=100, seed=0)
        kid[which] = {"kid_x1000": 1000 * m, "std_x1000": 1000 * s}
    res["b_kid"] = {"net": args.kid_net, "features": "last tapped feature map averaged over space + embedding",
                    "real_frontals": int(len(real)), "views": len(keys), **kid,
                    "holds": kid["refined"]["kid_x1000"] < kid["render"]["kid_x1000"]}
    print(f"(b) KID×1000 to {len(real)} real CFP 351-400 frontals ({args.kid_net} features, {len(keys)} views): "
          f"render {kid['render']['kid_x1000']:.2f} ± {kid['render']['std_x1000']:.2f}, "
          f"refined {kid['refined']['kid_x1000']:.2f} ± {kid['refined']['std_x1000']:.2f}")
    ok = (all(v["holds"] for v in res["a_identity"].values()) and res["b_kid"]["holds"]
          and all(v["holds"] for v in res["c_auto"].values()))
    res["ship"] = ok
    print("decision:", "SHIP — it wins (a), (b) and (c)" if ok else "DO NOT SHIP — " + ", ".join(
        k for k, good in (("(a)", all(v["holds"] for v in res["a_identity"].values())), ("(b)", res["b_kid"]["holds"]),
                          ("(c)", all(v["holds"] for v in res["c_auto"].values()))) if not good) + " fail")
    if args.grid:
        from pifr.alignment import align
        from pifr.detection import locate_face

        gcrops = {}
        for im in gallery:
            try:
                img, face = locate_face(im.path, detector=args.detector)
                gcrops[Path(im.path).parts[-3]] = align(img, face, TPGAN_128)
            except pifr.PifrError:
                pass
        save_grid(args.grid, paths, renders, views, gcrops)
    rec.update(results=res, refiner_file=str(refiner.path), refiner_meta_step=refiner.meta.get("step") if refiner.meta else None,
               seconds=round(time.time() - t0, 1))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    save_record(Path(args.out), rec, "refiner_gate")


if __name__ == "__main__":
    import pifr

    main()
