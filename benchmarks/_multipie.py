"""Multi-PIE harness core (Setting 1 and 2 as written in ../shared/docs/protocols.md).

Gallery: one image per test subject — camera 05_1, neutral recording 01, illumination 07 (frontal
flash), first session the subject has in the setting. Probes: every other neutral image of the
test subjects at the 13 yaw cameras and 20 illuminations of the setting's sessions. Rank-1 by
cosine, per yaw; ROC over all probe–gallery pairs.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from benchmarks._harness import append_runlog, device_description, embed_paths, parser, plot_roc, run_header, weights_sha

from pifr.eval.metrics import rank1, roc, tar_at_far
from pifr.eval.multipie import FRONTAL_CAMERA, multipie_split, scan_multipie

GALLERY_ILLUMINATION = 7
#: Published rank-1 (%), quoted from ../shared/docs/protocols.md (approximate, as recalled there).
PUBLISHED = {
    1: {"FF-GAN (quoted)": {15: 94.6, 30: 92.5, 45: 89.7, 60: 85.2, 75: 77.2, 90: 61.2}},
    2: {"Light-CNN (quoted)": {15: 98.59, 30: 97.38, 45: 92.13, 60: 62.09, 75: 24.18, 90: 5.51},
        "TP-GAN (quoted)": {15: 99.78, 30: 99.85, 45: 98.58, 60: 92.93, 75: 84.10, 90: 64.03},
        "CAPG-GAN (quoted)": {15: 99.82, 30: 99.56, 45: 97.33, 60: 90.63, 75: 83.05, 90: 66.05},
        "PIM (quoted)": {15: 99.80, 30: 99.40, 45: 98.30, 60: 97.70, 75: 91.20, 90: 75.00}},
}


def protocol(root: Path, setting: int):
    imgs = scan_multipie(root)
    split = multipie_split(imgs, setting)
    test = set(split.test_subjects)
    pool = [im for im in imgs if im.subject in test and im.session in split.sessions and im.recording == 1]
    gallery = {}
    for im in sorted(pool, key=lambda x: (x.session, str(x.path))):
        if im.camera == FRONTAL_CAMERA and im.illumination == GALLERY_ILLUMINATION and im.subject not in gallery:
            gallery[im.subject] = im
    probes = [im for im in pool if im.subject in gallery and im is not gallery[im.subject]]
    return split, list(gallery.values()), probes


def methods_available(embedders: List[str], generator: Optional[str], model3d: Optional[str]) -> Dict[str, str]:
    """method name → "" if runnable, else why it is skipped."""
    from pifr.embedders import list_embedders

    info = {e.name: e for e in list_embedders()}
    out = {}
    # The user-supplied baselines are always listed: run when their weights are present, else said skipped.
    for name in embedders + ["mobilefacenet_casia", "facenet_vggface2", "lightcnn29_v2"]:
        if name in out:
            continue
        ok = info[name].available
        out[f"{name} raw"] = "" if ok else f"skipped: {name} weights not present"
        if name in embedders or ok:
            out[f"{name} + TP-GAN"] = "" if (ok and generator) else "skipped: no TP-GAN generator given (--generator)" if ok else f"skipped: {name} weights not present"
            out[f"{name} + 3D"] = "" if (ok and model3d and Path(model3d).is_file()) else "skipped: model3Ddlib.mat not given (--model3d)" if ok else f"skipped: {name} weights not present"
    return out


def run(setting: int, argv: Optional[List[str]] = None) -> Path:
    ap = parser(f"Multi-PIE Setting {setting}: per-angle rank-1 and ROC (see benchmarks/_multipie.py)", f"results/multipie_s{setting}")
    ap.add_argument("--root", required=True, help="Multi-PIE root (session0S/multiview/...)")
    ap.add_argument("--generator", default=None, help="TP-GAN generator.safetensors")
    ap.add_argument("--model3d", default=None, help="model3Ddlib.mat for the classical 3D method")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    split, gallery, probes = protocol(Path(args.root), setting)
    if not gallery or not probes:
        raise SystemExit(f"{args.root}: no Setting {setting} test subjects with a 05_1/illumination-07 gallery image found")
    rec = run_header(f"multipie_setting{setting}", args.root, weights_sha(args.embedders),
                     f"report: Multi-PIE Setting {setting} test subjects ({len(split.test_subjects)} listed, {len(gallery)} with a gallery image)")
    print(f"# gallery: camera 05_1, recording 01, illumination {GALLERY_ILLUMINATION:02d}, first session — {len(gallery)} subjects; "
          f"probes: {len(probes)} images; sessions {list(split.sessions)}")
    avail = methods_available(args.embedders, args.generator, args.model3d)
    for m, why in avail.items():
        if why:
            print(f"# {m}: {why}")
    yaws = sorted({im.yaw for im in probes})
    table: Dict[str, Dict[int, float]] = {}
    curves, tars, cache = {}, {}, {}
    n_embedded = 0
    for m, why in avail.items():
        if why:
            continue
        name, _, kind = m.partition(" ")
        paths = [im.path for im in gallery + probes]
        if kind == "raw":
            embs = embed_paths(paths, name, args.detector)
        else:
            from benchmarks.frontalization import frontal_embeddings
            from pifr.embedders import get_embedder
            from pifr.generator import get_frontalizer

            gen = get_frontalizer(args.generator) if "TP-GAN" in kind else None
            raw = embed_paths([im.path for im in gallery], name, args.detector)  # gallery stays raw (frontal)
            fe, _ = frontal_embeddings([im.path for im in probes], "tpgan" if gen else "3d", get_embedder(name), args.model3d, gen)
            embs = {**raw, **fe}
        n_embedded += len(paths)
        cache[m] = embs
        G = np.stack([embs[str(g.path)] if embs[str(g.path)] is not None else np.zeros(128, np.float32) for g in gallery])
        gid = [g.subject for g in gallery]
        P = np.stack([embs[str(p.path)] if embs[str(p.path)] is not None else np.zeros(G.shape[1], np.float32) for p in probes])
        pid = np.array([p.subject for p in probes])
        pyaw = np.array([p.yaw for p in probes])
        table[m] = {y: rank1(P[pyaw == y], pid[pyaw == y], G, gid) for y in yaws}
        sims = P @ G.T
        same = pid[:, None] == np.array(gid)[None, :]
        far, tar, _ = roc(sims.ravel(), same.ravel())
        curves[m] = (far, tar)
        tars[m] = {"1e-2": tar_at_far(sims.ravel(), same.ravel(), 1e-2)[0], "1e-3": tar_at_far(sims.ravel(), same.ravel(), 1e-3)[0]}
        with open(out / f"roc_{m.replace(' ', '_').replace('+', 'plus')}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["far", "tar"])
            w.writerows(zip(far.round(6), tar.round(6)))
    methods = list(table)
    with open(out / "rank1.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["yaw"] + methods)
        for y in yaws:
            w.writerow([y] + [round(100 * table[m][y], 2) for m in methods])
    pub = PUBLISHED[setting]
    print("\n| yaw | " + " | ".join(methods + list(pub)) + " |\n|" + "---|" * (1 + len(methods) + len(pub)))
    for y in yaws:
        cells = [f"{100 * table[m][y]:.1f}" for m in methods] + [f"{pub[k].get(abs(y), '-')}" for k in pub]
        print(f"| {y:+d} | " + " | ".join(cells) + " |")
    print("\n| method | TAR@FAR=1e-2 | TAR@FAR=1e-3 |\n|---|---|---|")
    for m in methods:
        print(f"| {m} | {100 * tars[m]['1e-2']:.1f} | {100 * tars[m]['1e-3']:.1f} |")
    plot_roc(curves, out / "roc.png", f"Multi-PIE Setting {setting} (this data), probe vs gallery")
    _plot_rank1(table, pub, yaws, out / "rank1.png", setting)
    secs = time.time() - t0
    per_img = secs / max(1, n_embedded)
    full = 100 * 13 * 20 if setting == 1 else 137 * 13 * 20 * 4
    print(f"\nseconds: {secs:.0f} ({1000 * per_img:.0f} ms per image incl. cache hits); projected full Setting {setting} "
          f"({full:,} probes × {len(methods)} methods) on {device_description()}: {per_img * full * max(1, len(methods)) / 3600:.1f} h uncached")
    rec.update(protocol={"setting": setting, "gallery_illumination": GALLERY_ILLUMINATION, "sessions": list(split.sessions),
                         "test_subjects": len(gallery), "probes": len(probes)},
               methods=avail, rank1={m: {str(y): v for y, v in t.items()} for m, t in table.items()}, tar=tars, seconds=round(secs, 1))
    append_runlog(out, rec)
    return out


def _plot_rank1(table, pub, yaws, path: Path, setting: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for m, t in table.items():
        ax.plot(yaws, [100 * t[y] for y in yaws], marker="o", label=m)
    for k, v in pub.items():
        xs = sorted([y for y in yaws if abs(y) in v and y != 0])
        ax.plot(xs, [v[abs(y)] for y in xs], linestyle="--", alpha=0.6, label=k)
    ax.set_xlabel("probe yaw (°)")
    ax.set_ylabel("rank-1 (%)")
    ax.set_ylim(0, 101)
    ax.set_title(f"Multi-PIE Setting {setting}: rank-1 by yaw")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
