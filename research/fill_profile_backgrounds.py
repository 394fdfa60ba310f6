"""Diagnostic: a copy of a pack whose non-frontal faces show only the 3D reference head's face
surface, everything else replaced by the blurred fill the rendered training inputs have
(:func:`pifr.geometry.fill_background`); frontals (the targets) unchanged. Scoring a generator on
it (``python -m pifr.train.validation --pack OUT ...``) tells how much of the gap between renders
and real profiles their backgrounds make.

    python -m research.fill_profile_backgrounds packs/cfp_val.npz packs/cfp_val_filled.npz [--model3d model3Ddlib.mat]

Writes OUT and OUT.png (six filled profiles turned more than 55°).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from pifr.geometry import fill_background, frontal_flow
from pifr.train.data import Pack, _jpeg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--model3d", default=None, help="model3Ddlib.mat (default: the registry's search path)")
    args = ap.parse_args()
    p = Pack.load(Path(args.src))
    blobs, shown = [], []
    for i in range(len(p)):
        img = p.image(i)
        if not p.frontal[i] and np.isfinite(p.yaw[i]):
            _, face_surface = frontal_flow(p.landmarks[i].astype(np.float64), float(p.yaw[i]), model_path=args.model3d)
            img = fill_background(img, face_surface)
            if len(shown) < 6 and abs(p.yaw[i]) > 55:
                shown.append(img)
        blobs.append(np.frombuffer(_jpeg(img), np.uint8))
    q = Pack.from_records(blobs, p.landmarks, p.yaw, p.identity, p.frontal, p.group, p.source,
                          {**p.manifest, "diagnostic": "non-frontal faces: reference-head face surface only, rest filled"})
    q.save(Path(args.dst))
    if shown:
        Image.fromarray(np.concatenate(shown, 1)).save(f"{args.dst}.png")
    print(f"{len(q)} images ({sum(~p.frontal)} filled) -> {args.dst}")


if __name__ == "__main__":
    main()
