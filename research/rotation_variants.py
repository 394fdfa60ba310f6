"""Research: variants of the untrained 3D frontal render for recognition, on CFP 351-400 (tuning
split) — which render settings and fusion rules help, probe by probe against raw (exact McNemar).

    python -m research.rotation_variants [--variants base nomirror flip]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import embed_paths, shared_root  # noqa: E402
from benchmarks.frontalization import cfp_hits, policy  # noqa: E402
from benchmarks.rotation import IDS, fits_of  # noqa: E402

import pifr.rotation as rot  # noqa: E402
from pifr.eval.datasets import cfp_images  # noqa: E402
from pifr.embedders import get_embedder  # noqa: E402
from pifr.eval.metrics import mcnemar  # noqa: E402


def renders(fits, emb, variant):
    out = {}
    for p, v in fits.items():
        if v is None:
            out[p] = None
            continue
        img, _, fit = v
        r = rot.render_pose(fit, img, 0.0, template=emb.template, mirror_fill=variant != "nomirror")
        x = r.image[None]
        if variant == "flip":
            e = emb.embed_crops(np.concatenate([x, x[:, :, ::-1]]))
            e = e.sum(0)
            out[p] = e / np.linalg.norm(e)
        else:
            out[p] = emb.embed_crops(x)[0]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["base", "nomirror", "flip"])
    ap.add_argument("--embedders", nargs="+", default=["dlib_resnet", "mobilefacenet"])
    args = ap.parse_args()
    cfp = shared_root() / "data" / "cfp"
    gallery = [im for im in cfp_images(cfp, IDS, "frontal") if im.index == 1]
    probes = cfp_images(cfp, IDS, "profile")
    paths = [im.path for im in gallery + probes]
    fits = fits_of(paths, "retinaface")
    print("split: CFP 351-400 (tuning); gallery frontal 01, 200 profile probes")
    for name in args.embedders:
        emb = get_embedder(name)
        raw, yaws = embed_paths(paths, name, "retinaface", with_yaw=True)
        base = cfp_hits(lambda p: raw[str(p)], gallery, probes)
        print(f"\n{name}: raw rank-1 {100 * base.mean():.1f}")
        for v in args.variants:
            front = renders(fits, emb, v)
            line = [f"{v:9s} alone {100 * cfp_hits(policy(raw, front, yaws, -1, 1.0), gallery, probes).mean():.1f}"]
            for t in (30.0, 45.0):
                for w in (0.25, 0.5, 0.75):
                    h = cfp_hits(policy(raw, front, yaws, t, w), gallery, probes)
                    c = mcnemar(base, h)
                    line.append(f">{t:g} w{w:g}: {100 * h.mean():.1f} (+{c.gained}/-{c.lost} p={c.p_value:.3f})")
            print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
