"""Before/after grid: each input photo, its aligned TP-GAN crop, its frontal 3D render and, with
``--weights``, a TP-GAN generator's output.

    python examples/frontalize_demo.py -o frontalize_demo.png [IMAGES...]
    python examples/frontalize_demo.py --weights runs/tpgan/generator.safetensors -o frontalize_demo.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import pifr
from pifr.alignment import TPGAN_128

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="*", default=[str(p) for p in sorted((HERE / "images").glob("*.png"))])
    ap.add_argument("--weights", default=None, help="also a TP-GAN generator.safetensors' output")
    ap.add_argument("-o", "--output", default="frontalize_demo.png")
    args = ap.parse_args()
    rows = []
    for path in args.images:
        try:
            r = pifr.frontalize(path, method="3d")
            extra = [pifr.frontalize(path, method="tpgan", weights=args.weights, face=r.face).image] if args.weights else []
        except pifr.PifrError as e:
            print(f"{path}: skipped ({type(e).__name__}: {e})")
            continue
        img = pifr.load_image(path)
        aligned = pifr.align(img, r.face, TPGAN_128)
        orig = np.asarray(Image.fromarray(img).resize((128, 128)))
        rows.append(np.concatenate([orig, aligned, r.image] + extra, 1))
        print(f"{path}: yaw {r.yaw:+.0f}°")
    if not rows:
        raise SystemExit("no face could be frontalized")
    Image.fromarray(np.concatenate(rows, 0)).save(args.output)
    print(f"wrote {args.output} (columns: input | aligned crop | 3D render" + (" | generator)" if args.weights else ")"))


if __name__ == "__main__":
    main()
