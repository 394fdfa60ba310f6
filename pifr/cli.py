"""Command line: ``pifr verify A B``, ``pifr detect IMG...``, ``pifr yaw IMG...``, ``pifr embed IMG... -o F``,
``pifr frontalize IN -o OUT``, ``pifr models``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

import numpy as np

from .errors import PifrError


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verification import verify

    r = verify(args.a, args.b, embedder=args.embedder, threshold=args.threshold, detector=args.detector)
    if args.json:
        print(json.dumps(r.to_dict()))
    else:
        verdict = "SAME person" if r.same else "DIFFERENT people"
        ya, yb = (f"{y:+.0f}°" if y is not None else "?" for y in r.yaw)
        print(f"{verdict}: cosine {r.score:.3f} vs threshold {r.threshold:.3f} ({r.embedder}); "
              f"yaw {ya} / {yb}; {r.seconds * 1000:.0f} ms")
    return 0 if r.same else 1 if args.exit_code else 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from .detection import detect

    bad = 0
    for path in args.images:
        try:
            faces = detect(path, detector=args.detector)
            print(json.dumps({"image": path, "faces": [f.to_dict() for f in faces]}))
        except PifrError as e:
            bad += 1
            print(json.dumps({"image": path, "error": f"{type(e).__name__}: {e}"}))
    return 2 if bad else 0


def _cmd_yaw(args: argparse.Namespace) -> int:
    from .pose import estimate_yaw

    bad = 0
    for path in args.images:
        try:
            print(f"{path}\t{estimate_yaw(path, method=args.method):+.1f}")
        except PifrError as e:
            bad += 1
            print(f"{path}\terror: {type(e).__name__}: {e}")
    return 2 if bad else 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from .embedders import embed_many

    res = embed_many(args.images, embedder=args.embedder, detector=args.detector, progress=len(args.images) > 1)
    ok = [r for r in res if r.ok]
    for r in res:
        if not r.ok:
            print(f"{args.images[r.index]}: {type(r.error).__name__}: {r.error}", file=sys.stderr)
    if ok:
        np.savez(args.output, embeddings=np.stack([r.embedding for r in ok]),
                 paths=np.array([args.images[r.index] for r in ok]))
        print(f"wrote {len(ok)} embeddings to {args.output}")
    return 0 if len(ok) == len(res) else 2


def _cmd_frontalize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from PIL import Image

    from .frontalization import frontalize

    src, dst = Path(args.input), Path(args.output)
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp"}
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in exts) if src.is_dir() else [src]
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    bad = 0
    step = max(1, args.batch_size)
    with tqdm(total=len(files), desc="frontalize", unit="img", disable=len(files) < 2) as bar:
        for k in range(0, len(files), step):
            chunk = files[k:k + step]
            for f, r in zip(chunk, frontalize(list(chunk), weights=args.weights, batch_size=step)):
                if isinstance(r, Exception):
                    bad += 1
                    print(f"{f}: {type(r).__name__}: {r}", file=sys.stderr)
                    continue
                out = dst / (f.relative_to(src).with_suffix(".png")) if src.is_dir() else dst
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(r.image).save(out)
            bar.update(len(chunk))
    print(f"frontalized {len(files) - bad} of {len(files)} images into {dst}")
    return 2 if bad else 0


def _open_gallery(path: str, create: bool = False, embedder: Optional[str] = None):
    from pathlib import Path

    from .gallery import Gallery

    if Path(path).is_file():
        return Gallery.load(path)
    if create:
        return Gallery(embedder)
    from .errors import GalleryError

    raise GalleryError(f"{path}: no such gallery file")


def _cmd_enroll(args: argparse.Namespace) -> int:
    g = _open_gallery(args.gallery, create=True, embedder=args.embedder)
    rep = g.enroll(args.id, args.images)
    g.save(args.gallery)
    for i, why in rep.failures:
        print(f"{args.images[i]}: not enrolled: {why}", file=sys.stderr)
    for i in rep.duplicates:
        print(f"{args.images[i]}: already enrolled (same image)", file=sys.stderr)
    print(f"{args.id}: {rep.added} template(s) added; gallery has {len(g)} identities, {g.templates} templates")
    return 0 if rep.added else 2


def _cmd_identify(args: argparse.Namespace) -> int:
    g = _open_gallery(args.gallery)
    bad = 0
    for path in args.images:
        try:
            ms = g.identify(path, k=args.k)
            print(json.dumps({"image": path, "matches": [m.to_dict() for m in ms], "threshold": round(g.threshold, 5)}))
        except PifrError as e:
            bad += 1
            print(json.dumps({"image": path, "error": f"{type(e).__name__}: {e}"}))
    return 2 if bad else 0


def _cmd_gallery(args: argparse.Namespace) -> int:
    g = _open_gallery(args.gallery)
    if args.action == "list":
        counts = {}
        for name in g._labels:  # noqa: SLF001 - a read-only summary
            counts[name] = counts.get(name, 0) + 1
        print(f"# {args.gallery}: embedder {g.embedder}, threshold {g.threshold:.4f}"
              + (f" (calibrated for FAR {g.calibrated_far:g})" if g.calibrated_far else ""))
        for name in sorted(counts):
            print(f"{name}\t{counts[name]}")
        return 0
    for name in args.names:
        print(f"{name}: removed {g.remove(name)} template(s)")
    g.save(args.gallery)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .detection import list_detectors
    from .embedders import list_embedders

    print("embedders:")
    for e in list_embedders():
        state = "ready" if e.available else "missing weights"
        # A registered ONNX model reports dim 0 (unknown until loaded) and NaN (no threshold measured).
        thr = ("none" if e.threshold != e.threshold else f"{e.threshold:.4f}") + ("" if e.calibrated else " (uncalibrated)")
        print(f"  {e.name:18s} dim {e.dim or '?':>4}  template {e.template:12s} threshold {thr:20s} {state}")
        if e.reason and args.verbose:
            print(f"      {e.reason}")
    print("detectors:", ", ".join(list_detectors()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pifr", description="Pose-invariant face recognition.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    v = sub.add_parser("verify", help="are two photos the same person?")
    v.add_argument("a")
    v.add_argument("b")
    v.add_argument("--embedder", default=None)
    v.add_argument("--detector", default=None)
    v.add_argument("--threshold", type=float, default=None)
    v.add_argument("--json", action="store_true", help="print the full result as JSON")
    v.add_argument("--exit-code", action="store_true", help="exit 1 when the faces differ")
    v.set_defaults(func=_cmd_verify)

    d = sub.add_parser("detect", help="faces, landmarks and yaw (JSON lines)")
    d.add_argument("images", nargs="+")
    d.add_argument("--detector", default="retinaface")
    d.set_defaults(func=_cmd_detect)

    y = sub.add_parser("yaw", help="estimated yaw in degrees (+ = face turned to the image's right)")
    y.add_argument("images", nargs="+")
    y.add_argument("--method", default="3ddfa", choices=["3ddfa", "landmarks"])
    y.set_defaults(func=_cmd_yaw)

    e = sub.add_parser("embed", help="write embeddings of the largest face of each image to an .npz")
    e.add_argument("images", nargs="+")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--embedder", default="dlib_resnet")
    e.add_argument("--detector", default=None)
    e.set_defaults(func=_cmd_embed)

    f = sub.add_parser("frontalize", help="write the frontal view of each face (file or folder)")
    f.add_argument("input")
    f.add_argument("-o", "--output", required=True)
    f.add_argument("--weights", default=None, help="generator.safetensors (default: the installed frontalizer)")
    f.add_argument("--batch-size", type=int, default=32, help="faces per generator forward pass (default 32)")
    f.set_defaults(func=_cmd_frontalize)

    en = sub.add_parser("enroll", help="add a person's photos to a gallery file (created if absent)")
    en.add_argument("--gallery", required=True)
    en.add_argument("--id", required=True)
    en.add_argument("--embedder", default=None)
    en.add_argument("images", nargs="+")
    en.set_defaults(func=_cmd_enroll)

    idf = sub.add_parser("identify", help="who is in each image? (JSON lines)")
    idf.add_argument("--gallery", required=True)
    idf.add_argument("-k", type=int, default=1)
    idf.add_argument("images", nargs="+")
    idf.set_defaults(func=_cmd_identify)

    ga = sub.add_parser("gallery", help="list or remove enrolled identities")
    gsub = ga.add_subparsers(dest="action", required=True)
    gl = gsub.add_parser("list", help="identities and their template counts")
    gl.add_argument("--gallery", required=True)
    gl.set_defaults(func=_cmd_gallery, names=[])
    gr = gsub.add_parser("remove", help="remove identities")
    gr.add_argument("--gallery", required=True)
    gr.add_argument("names", nargs="+")
    gr.set_defaults(func=_cmd_gallery)

    m = sub.add_parser("models", help="registered embedders and detectors, and whether their weights are here")
    m.set_defaults(func=_cmd_models)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except PifrError as e:
        print(f"pifr: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
