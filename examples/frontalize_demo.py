"""Before/after grid, one row per photo: input | frontal 3D render | the render refined by the
learned refiner | the same person's true frontal photo (aligned), when one is given.

    python examples/frontalize_demo.py -o frontalize_demo.png                  # the example photos
    python examples/frontalize_demo.py --weights refiner.safetensors -o grid.png
    python examples/frontalize_demo.py turned.jpg=frontal.jpg other.jpg -o grid.png

``PHOTO=FRONTAL`` pairs a photo with a frontal photo of the same person (the last column); by
default the example images are used and each ``<name>_turned.png`` is paired with
``<name>_frontal.png``. The refined column uses the installed refiner, or ``--weights`` when that
is a refiner file; without either it is left out (and the log says so). A TP-GAN
``generator.safetensors`` given as ``--weights`` adds a generator column instead, as before.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

import pifr
from pifr.alignment import TPGAN_128
from pifr.refinement import refiner_available

HERE = Path(__file__).resolve().parent
log = logging.getLogger("frontalize_demo")


def default_items() -> List[Tuple[str, Optional[str]]]:
    """The example photos; ``x_turned.png`` with ``x_frontal.png`` as its true frontal."""
    out = []
    for p in sorted((HERE / "images").glob("*.png")):
        frontal = p.with_name(p.name.replace("_turned", "_frontal"))
        out.append((str(p), str(frontal) if "_turned" in p.name and frontal.is_file() else None))
    return out


def is_refiner_file(path: str) -> bool:
    """Whether ``path`` is a refiner weights file (its safetensors metadata says so)."""
    from safetensors import safe_open

    from pifr.models.refiner import FILE_FORMAT

    try:
        with safe_open(path, "pt") as f:
            return (f.metadata() or {}).get("format") == FILE_FORMAT
    except Exception:  # noqa: BLE001 - not readable as safetensors: certainly not a refiner file
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="*", help="PHOTO or PHOTO=FRONTAL (default: the example images)")
    ap.add_argument("--weights", default=None,
                    help="a refiner .safetensors (the refined column) or a TP-GAN generator.safetensors (an extra column)")
    ap.add_argument("-o", "--output", default="frontalize_demo.png")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    items = [tuple(a.split("=", 1)) if "=" in a else (a, None) for a in args.images] or default_items()

    refiner_weights = generator = None
    if args.weights and is_refiner_file(args.weights):
        refiner_weights = args.weights
    elif args.weights:
        generator = args.weights
    use_refiner = refiner_weights is not None or refiner_available()
    if not use_refiner:
        log.info("no refiner installed and no refiner file given (--weights): the refined column is left out")

    rows = []
    for path, frontal in items:
        try:
            r = pifr.frontalize(path, method="3d")
            cols = [np.asarray(Image.fromarray(pifr.load_image(path)).resize((128, 128))), r.image]
            if use_refiner:
                cols.append(pifr.frontalize(path, method="refined", weights=refiner_weights, face=r.face).image)
            if generator:
                cols.append(pifr.frontalize(path, method="tpgan", weights=generator, face=r.face).image)
            if frontal:
                arr = pifr.load_image(frontal)
                cols.append(pifr.align(arr, pifr.detect(arr)[0], TPGAN_128))
        except pifr.PifrError as e:
            log.info("%s: skipped (%s: %s)", path, type(e).__name__, e)
            continue
        rows.append(cols)
        log.info("%s: yaw %+.0f°", path, r.yaw)
    if not rows:
        raise SystemExit("no face could be frontalized")
    width = max(len(c) for c in rows)
    blank = np.zeros((128, 128, 3), np.uint8)  # rows without a true frontal
    Image.fromarray(np.concatenate([np.concatenate(c + [blank] * (width - len(c)), 1) for c in rows], 0)).save(args.output)
    names = ["input", "3D render"] + (["refined"] if use_refiner else []) + (["generator"] if generator else [])
    if any(f for _, f in items):
        names.append("true frontal (if given)")
    log.info("wrote %s (columns: %s)", args.output, " | ".join(names))


if __name__ == "__main__":
    main()
