"""Match a profile against its gallery face turned to the profile's pose, instead of frontalizing it.

A diagnostic for the frontalizer work (issue 6), not yet a pifr feature. Frontalizing the probe
asks a network to invent the hidden half of a face; the other direction needs no invention: the
gallery's frontal photo already shows the whole face, and pifr's 3D renderer
(:func:`pifr.geometry.render_texture`, the reference head textured from the photo) can turn it to
the probe's estimated yaw. Pose synthesis of this kind was used by Masi et al. (ECCV 2016, "Do we
really need to collect millions of faces for effective face recognition?") to augment training
and gallery sets; here it only changes the comparison, with no training at all.

Score of a probe ``p`` against a frontal ``g`` when |yaw(p)| > T:
``(1 − w)·cos(p, g) + w·cos(p, render(g, bucket(yaw(p))))``, bucket = yaw rounded to 15° (15…90,
sign kept); other probes keep ``cos(p, g)``. A render in which the detector finds no face (most
at 90°) is aligned by the 5 points the renderer projected. ``--control-zero`` also scores the render at 0° (the same head and texture, not
turned): what the renderer's look alone does, without the pose match.

Chosen on CFP 351–400 (the tuning split; the frontalization benchmark's protocol: gallery frontal
01 of each identity, 200 profiles, 700 FP pairs in 10 interleaved folds) by rank-1 + FP accuracy,
then reported on CMU Face Images (left/right → one straight photo per person), which nothing is
tuned on, with McNemar's paired test against raw on both.

    python -m research.gallery_pose_synthesis [--embedders dlib_resnet mobilefacenet] [--control-zero]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import cache_dir, embed_paths, run_header, save_record, weights_sha  # noqa: E402
from benchmarks.frontalization import IDS, cmu_protocol, fp_figures  # noqa: E402

import pifr  # noqa: E402
from pifr.eval.datasets import cfp_identity, cfp_images, cfp_protocol, cmu_faces, shared_root  # noqa: E402
from pifr.embedders import get_embedder  # noqa: E402
from pifr.geometry import landmarks68, load_reference, render_texture, texture_from_photo, turned_view  # noqa: E402
from pifr.eval.metrics import mcnemar  # noqa: E402

STEP = 15


def bucket(yaw: float) -> int:
    """The render yaw for a probe of ``yaw`` degrees: rounded to 15°, magnitude 15…90, sign kept."""
    mag = int(min(90, max(STEP, STEP * round(abs(yaw) / STEP))))
    return mag if yaw >= 0 else -mag


class Renders:
    """Embeddings of frontal photos rendered at given yaws, for several embedders at once: each
    photo is textured once (dlib's 68 landmarks), each (photo, yaw) rendered once, the render's face
    detected as a real photo's would be."""

    def __init__(self, embedders, model3d: str, detector: str) -> None:
        self.embs = {n: get_embedder(n) for n in embedders}
        self.ref = load_reference(model3d)
        self.detector = detector
        self._views: Dict[int, tuple] = {}
        self.vec: Dict[Tuple[str, str, int], Optional[np.ndarray]] = {}
        self.failed_texture = 0
        self.no_face = 0

    def _view(self, yaw: int):
        if yaw not in self._views:
            self._views[yaw] = turned_view(self.ref, float(yaw))
        return self._views[yaw]

    def save(self, path: Path) -> None:
        keys = sorted(self.vec)
        dims = {n: e.dim for n, e in self.embs.items()}
        np.savez(path, keys=np.array(["|".join((n, p, str(y))) for n, p, y in keys]),
                 **{n: np.stack([self.vec[k] if self.vec[k] is not None else np.full(d, np.nan, np.float32)
                                 for k in keys if k[0] == n]) for n, d in dims.items()})

    def load(self, path: Path) -> None:
        z = np.load(path, allow_pickle=False)
        rows = {n: 0 for n in self.embs}
        for key in z["keys"]:
            n, p, y = str(key).split("|")
            v = z[n][rows[n]]
            rows[n] += 1
            self.vec[(n, p, int(y))] = None if np.isnan(v).any() else v

    def add(self, need: Dict[str, set]) -> None:
        """``need``: path → the yaws to render it at."""
        for path, yaws in tqdm(sorted(need.items()), desc="render", unit="photo"):
            try:
                img, face = pifr.detection.locate_face(path, detector=self.detector)
                tex, _, _ = texture_from_photo(img, landmarks68(img, face), self.ref)
            except pifr.PifrError:
                self.failed_texture += 1
                for n in self.embs:
                    for y in yaws:
                        self.vec[(n, path, y)] = None
                continue
            for y in sorted(yaws):
                r = render_texture(tex, self.ref, float(y), view=self._view(y))
                faces = pifr.detect(r.image, detector=self.detector)
                if faces:
                    face = faces[0]
                else:  # mostly at 90°: align by the points the renderer projected instead
                    lo, hi = r.landmarks.min(0), r.landmarks.max(0)
                    face = pifr.Face(np.concatenate([lo, hi]), 0.0, r.landmarks, float(y), "render")
                    self.no_face += 1
                for n, e in self.embs.items():
                    self.vec[(n, path, y)] = e.embed_crops(e.align(r.image, face)[None])[0]


class Cohort:
    """Gallery-side score normalisation (Z-norm) against profiles of people nothing is evaluated on
    (CFP 001–350, the training split): a gallery vector's scores against the cohort's profiles of
    the probe's yaw bucket give the mean and spread an impostor profile gets, so a render that
    looks like everyone (the one reference head, no hair) no longer outscores a photo."""

    MIN = 20

    def __init__(self, emb: Dict[str, Optional[np.ndarray]], yaws: Dict[str, float]) -> None:
        ok = [(v, yaws[p]) for p, v in emb.items() if v is not None and np.isfinite(yaws.get(p, np.nan))]
        self.E = np.stack([v for v, _ in ok])
        self.b = np.array([bucket(y) for _, y in ok])
        self._stats: Dict[tuple, Tuple[float, float]] = {}

    def rows(self, b: int) -> np.ndarray:
        m = self.b == b
        if m.sum() < self.MIN:
            m = np.sign(self.b) == np.sign(b)
        return self.E[m]

    def z(self, score: float, vec: np.ndarray, key: tuple, b: int) -> float:
        if (key, b) not in self._stats:
            c = self.rows(b) @ vec
            self._stats[(key, b)] = (float(c.mean()), float(c.std()) + 1e-6)
        mu, sd = self._stats[(key, b)]
        return (score - mu) / sd


def score_fn(raw, yaws, rend, name, T, w, fixed_yaw=None, cohort: Optional[Cohort] = None):
    """Score of (probe path, gallery path) under the rule; probes at or below ``T`` keep the raw
    score. With ``cohort`` every score (raw and render) is Z-normalised on the gallery side."""
    def s(p, g):
        rp, rg = raw.get(p), raw.get(g)
        if rp is None or rg is None:
            return -1e9
        y = yaws.get(p, float("nan"))
        b = bucket(y) if np.isfinite(y) else 0
        base = float(rp @ rg)
        if cohort is not None:
            base = cohort.z(base, rg, ("raw", g), b)
        if not abs(y) > T:
            return base
        yb = b if fixed_yaw is None else fixed_yaw
        v = rend.get((name, g, yb))
        if v is None:
            return base
        r = float(rp @ v)
        if cohort is not None:
            r = cohort.z(r, v, ("render", g, yb), b)
        return (1 - w) * base + w * r
    return s


def cfp_eval(s, pairs, gallery, probes):
    """rank-1 (per-probe hits), FP accuracy / EER / TAR@FAR=1 % under the score function."""
    gids = [im.identity for im in gallery]
    hits = []
    for im in probes:
        sc = [s(str(im.path), str(g.path)) for g in gallery]
        hits.append(gids[int(np.argmax(sc))] == im.identity and max(sc) > -1e9)
    # FP pairs: a is the frontal, b the profile (the protocol's order); score the profile as probe.
    sc = np.array([s(str(x.b), str(x.a)) for x in pairs])
    y = np.array([x.same for x in pairs])
    folds = np.arange(len(pairs)) % 10
    return np.array(hits, bool), {"rank1": float(np.mean(hits)), **fp_figures(sc, y, folds)}


def cmu_eval(s, gal, probes):
    """Per probe of :func:`frontalization.cmu_protocol`'s set: identified at rank 1 under ``s``."""
    names = sorted(gal)
    hits = []
    for im in probes:
        sc = [s(str(im.path), str(gal[n])) for n in names]
        hits.append(names[int(np.argmax(sc))] == im.person and max(sc) > -1e9)
    return np.array(hits, bool), len(names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--embedders", nargs="+", default=["dlib_resnet", "mobilefacenet"])
    ap.add_argument("--detector", default="retinaface")
    ap.add_argument("--model3d", default=None)
    ap.add_argument("--policy-yaw", type=float, nargs="+", default=[30.0, 45.0, 60.0])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--control-zero", action="store_true", help="also score the unturned (0°) render")
    ap.add_argument("--znorm", action="store_true",
                    help="also score with gallery-side Z-norm against CFP 001-350 profiles (a cohort of the training split)")
    ap.add_argument("--render-cache", default=None, help="npz of render embeddings to reuse and extend")
    ap.add_argument("--out", default="results/gallery_pose_synthesis")
    args = ap.parse_args()
    root = shared_root(args.shared)
    cfp = root / "data" / "cfp"
    model3d = args.model3d or str(root / "models" / "face-frontalization" / "model3Ddlib.mat")
    rec = run_header("gallery_pose_synthesis", f"{cfp}; report-only: {root}/data/cmu_faces", weights_sha(args.embedders),
                     "tune (CFP 351-400: rule chosen here); report (CMU Face Images, never tuned on); nothing trained")
    t0 = time.time()
    pairs = [x for x in cfp_protocol(cfp, "FP").pairs if cfp_identity(x.a) in IDS and cfp_identity(x.b) in IDS]
    frontals = cfp_images(cfp, IDS, "frontal")
    gallery = [im for im in frontals if im.index == 1]
    probes = cfp_images(cfp, IDS, "profile")
    cmu = cmu_faces(root / "data" / "cmu_faces" / "cmu_faces_full_and_half.tar.gz", cache_dir() / "cmu_faces")
    cmu_paths = [im.path for im in cmu if im.eyes == "open" and im.pose in ("straight", "left", "right")]
    every = [im.path for im in cfp_images(cfp, IDS)] + cmu_paths
    raws, yaws = {}, {}
    for n in args.embedders:
        raws[n], yaws[n] = embed_paths(every, n, args.detector, with_yaw=True)
    yaw = yaws[args.embedders[0]]  # the same detector and face for every embedder
    # Which frontal must be rendered at which yaws: the gallery at every probe's bucket, a pair's
    # frontal at its profile's, CMU's straight photos at their probes'.
    need: Dict[str, set] = {}
    extra = {0} if args.control_zero else set()
    for im in probes:
        y = yaw.get(str(im.path), float("nan"))
        if np.isfinite(y):
            for g in gallery:
                need.setdefault(str(g.path), set(extra)).add(bucket(y))
    for x in pairs:
        y = yaw.get(str(x.b), float("nan"))
        if np.isfinite(y):
            need.setdefault(str(x.a), set(extra)).add(bucket(y))
    # Faces are found (or not) by the detector, so every embedder has the same CMU set.
    cmu_gal, cmu_probes = cmu_protocol(cmu, lambda p: raws[args.embedders[0]].get(str(p)) is not None)
    for im in cmu_probes:
        y = yaw.get(str(im.path), float("nan"))
        if np.isfinite(y):
            need.setdefault(str(cmu_gal[im.person]), set(extra)).add(bucket(y))
    rend = Renders(args.embedders, model3d, args.detector)
    cache = Path(args.render_cache) if args.render_cache else None
    if cache and cache.is_file():
        rend.load(cache)
    todo = {p: {y for y in ys if rend.vec.get((args.embedders[0], p, y)) is None} for p, ys in need.items()}
    rend.add({p: ys for p, ys in todo.items() if ys})
    if cache:
        rend.save(cache)
    cohorts = {}
    if args.znorm:
        cohort_paths = [im.path for im in cfp_images(cfp, range(1, 351), "profile")]
        for n in args.embedders:
            e, y = embed_paths(cohort_paths, n, args.detector, with_yaw=True)
            cohorts[n] = Cohort(e, y)
    n_renders = sum(len(v) for v in need.values())
    made = sum(len(v) for v in todo.values())
    print(f"{n_renders} renders of {len(need)} frontal photos ({made} made now, the rest from the cache); of those made, "
          f"texture failed for {rend.failed_texture} photos and the detector missed {rend.no_face} renders "
          f"(aligned by their projected points); {time.time() - t0:.0f} s so far")
    res, chosen, cmu_res, paired = {}, {}, {}, {}
    for n in args.embedders:
        r = {}
        raw_s = score_fn(raws[n], yaw, rend.vec, n, 1e9, 0.0)
        raw_hits, r["raw"] = cfp_eval(raw_s, pairs, gallery, probes)
        rules = {}
        for zn in ([None, cohorts[n]] if args.znorm else [None]):
            tag = "z-norm, " if zn is not None else ""
            if zn is not None:
                r["z-norm raw"] = cfp_eval(score_fn(raws[n], yaw, rend.vec, n, 1e9, 0.0, cohort=zn), pairs, gallery, probes)[1]
            for T in args.policy_yaw:
                for w in args.weights:
                    k = f"{tag}turned gallery |yaw|>{T:g} w={w:g}"
                    rules[k] = score_fn(raws[n], yaw, rend.vec, n, T, w, cohort=zn)
                    r[k] = cfp_eval(rules[k], pairs, gallery, probes)[1]
                    if args.control_zero:
                        r[f"{tag}0° render |yaw|>{T:g} w={w:g}"] = cfp_eval(
                            score_fn(raws[n], yaw, rend.vec, n, T, w, fixed_yaw=0, cohort=zn), pairs, gallery, probes)[1]
        key = max(rules, key=lambda k: r[k]["rank1"] + r[k]["fp_accuracy"])
        T, w = (float(v) for v in key.split("|yaw|>")[1].split(" w="))
        chosen[n] = {"rule": key, "yaw_threshold": T, "weight": w, "znorm": key.startswith("z-norm")}
        # Against raw, probe by probe, on CFP and on CMU: the chosen rule, and Z-norm alone (a
        # control: how much of a z-normed rule's change is the normalisation's, not the renders').
        report = {f"chosen: {key}": rules[key]}
        if args.znorm:
            report["z-norm raw"] = score_fn(raws[n], yaw, rend.vec, n, 1e9, 0.0, cohort=cohorts[n])
        cmu_raw, people = cmu_eval(raw_s, cmu_gal, cmu_probes)
        cmu_res[n] = {"raw": float(cmu_raw.mean()), "probes": len(cmu_raw), "people": people}
        paired[n] = {}
        for k, f in report.items():
            hits, _ = cfp_eval(f, pairs, gallery, probes)
            cmu_hits_k, _ = cmu_eval(f, cmu_gal, cmu_probes)
            cmu_res[n][k] = float(cmu_hits_k.mean())
            paired[n][k] = {"cfp": asdict(mcnemar(raw_hits, hits)), "cmu": asdict(mcnemar(cmu_raw, cmu_hits_k))}
        res[n] = r
    print("\nCFP 351-400 (tuning split)\n\n| embedder | rule | rank-1 % | FP acc % | FP EER % | TAR@FAR=1% |\n|---|---|---|---|---|---|")
    for n, r in res.items():
        for k, v in r.items():
            print(f"| {n} | {k} | {100 * v['rank1']:.1f} | {100 * v['fp_accuracy']:.2f} | {100 * v['fp_eer']:.2f} | "
                  f"{100 * v['fp_tar_at_far_1e-2']:.1f} |")
    print("\nChosen on CFP 351-400 (and Z-norm alone), then CMU (report only); McNemar against raw\n\n"
          "| embedder | rule | CFP gained / lost (p) | CMU rank-1 % raw → rule | CMU gained / lost (p) |\n|---|---|---|---|---|")
    for n in args.embedders:
        for k, pr in paired[n].items():
            c, m = pr["cfp"], pr["cmu"]
            print(f"| {n} | {k} | +{c['gained']}/−{c['lost']} ({c['p_value']:.3f}) | "
                  f"{100 * cmu_res[n]['raw']:.1f} → {100 * cmu_res[n][k]:.1f} | +{m['gained']}/−{m['lost']} ({m['p_value']:.3f}) |")
    rec.update(results=res, chosen=chosen, cmu=cmu_res, paired=paired, renders=n_renders, renders_made_this_run=made,
               texture_failed=rend.failed_texture, renders_without_face=rend.no_face, seconds=time.time() - t0)
    save_record(Path(args.out), rec, "gallery_pose_synthesis")


if __name__ == "__main__":
    main()
