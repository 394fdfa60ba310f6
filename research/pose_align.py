"""Research: align a turned face at the scale of a frontal one (no render).

:func:`pifr.align` fits a least-squares similarity from the face's 5 points to the template's
frontal layout; on a profile the 5 points are squeezed sideways, so the fit zooms and shifts the
face differently at every yaw. The alternative asked here: the 3D fit's 5 landmarks, turned to
the face's own yaw and pitch, placed in the template with the similarity that places them when
frontal — so a turned head keeps a frontal head's scale and centre — and the photo warped onto
them. Raw embeddings only; CFP 351–400 profiles against frontal 01 (standard alignment), rank-1,
exact McNemar against the standard alignment; CMU report only.

    python -m research.pose_align [--embedders dlib_resnet mobilefacenet]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import embed_paths, parser, run_header, shared_root  # noqa: E402
from benchmarks.frontalization import cfp_hits, cmu_hits, tuning_protocol  # noqa: E402
from benchmarks.rotation import fits_of  # noqa: E402

from pifr.alignment import estimate_transform, similarity_transform, transform_points  # noqa: E402
from pifr.embedders import get_embedder  # noqa: E402
from pifr.eval.metrics import mcnemar  # noqa: E402
from pifr.face3d import landmarks5_from_68  # noqa: E402
from pifr.rotation import view_rotation  # noqa: E402


def pose_aligned(img, fit, template):
    """``(S, S, 3)`` crop of ``img``: the fit's 5 points onto where a frontal-scaled head turned to
    the fit's pose puts them."""
    import cv2

    x5 = landmarks5_from_68(fit.landmarks3d)  # (5, 3) model units
    m0 = estimate_transform(landmarks5_from_68((fit.landmarks3d @ view_rotation(0.0, 0.0).T)[:, :2]), template)
    turned = (x5 @ view_rotation(fit.yaw, fit.pitch).T)[:, :2]
    target = transform_points(turned, m0)
    photo5 = landmarks5_from_68(fit.landmarks68())
    m = similarity_transform(photo5, target)
    return cv2.warpAffine(img, m, (template.size, template.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def main():
    ap = parser(__doc__, "results/pose_align")
    args = ap.parse_args()
    root = shared_root(args.shared)
    print(run_header("pose_align", f"{root}/data/cfp (351-400); report-only: CMU", {}, "tune (CFP 351-400)"))
    pairs, ff_pairs, frontals, gallery, probes, every, cmu, cmu_paths = tuning_protocol(root)
    probe_paths = [im.path for im in probes] + [p for p in cmu_paths if "straight" not in str(p)]
    fits = fits_of(probe_paths, args.detector)
    for name in args.embedders:
        emb = get_embedder(name)
        raw = embed_paths(every + cmu_paths, name, args.detector)
        alt = dict(raw)
        for p, v in tqdm(fits.items(), desc=f"pose-aligned [{name}]"):
            if v is not None:
                img, _, fit = v
                alt[p] = emb.embed_crops(pose_aligned(img, fit, emb.template)[None])[0]
        h0 = cfp_hits(lambda p: raw[str(p)], gallery, probes)
        h1 = cfp_hits(lambda p: alt[str(p)], gallery, probes)
        m = mcnemar(h0, h1)
        c0, _ = cmu_hits(lambda p: raw[str(p)], cmu)
        c1, _ = cmu_hits(lambda p: alt[str(p)], cmu)
        mc = mcnemar(c0, c1)
        print(f"{name}: CFP profiles rank-1 {100 * h0.mean():.1f} → {100 * h1.mean():.1f} % (+{m.gained} / −{m.lost}, "
              f"p {m.p_value:.4f}); CMU {100 * c0.mean():.1f} → {100 * c1.mean():.1f} % (+{mc.gained} / −{mc.lost})")


if __name__ == "__main__":
    main()
