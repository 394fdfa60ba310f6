"""Command line: ``pifr verify A B``, ``pifr detect IMG...``, ``pifr yaw IMG...``, ``pifr embed IMG... -o F``,
``pifr frontalize IN -o OUT``, ``pifr rotate IN --yaw Y -o OUT``, ``pifr models``; galleries:
``pifr enroll``, ``pifr identify``, ``pifr gallery list|remove``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

import numpy as np

from .errors import PifrError
from .frontalization import FRONTALIZE_METHODS
from .policy import DEFAULT_FRONTALIZE, FRONTALIZE_MODES
from .rotation import ROTATE_METHODS


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verification import verify

    r = verify(args.a, args.b, embedder=args.embedder, threshold=args.threshold, detector=args.detector,
               frontalize=args.frontalize, frontalizer=args.frontalizer, yaw_threshold=args.yaw_threshold,
               fusion_weight=args.fusion_weight)
    if args.json:
        print(json.dumps(r.to_dict()))
    else:
        verdict = "SAME person" if r.same else "DIFFERENT people"
        ya, yb = (f"{y:+.0f}°{' (fused with its 3D view)' if f else ''}" if y is not None else "?"
                  for y, f in zip(r.yaw, r.frontalized))
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
    from .detection import estimate_yaw

    bad = 0
    for path in args.images:
        try:
            print(f"{path}\t{estimate_yaw(path, method=args.method):+.1f}")
        except PifrError as e:
            bad += 1
            print(f"{path}\terror: {type(e).__name__}: {e}")
    return 2 if bad else 0


def _writable_target(path: str, what: str) -> None:
    """Fail before the work, not after it, when ``path`` cannot be written."""
    import os
    from pathlib import Path

    from .errors import InvalidArgumentError

    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise InvalidArgumentError(f"{what} {p} is a folder; give a file name")
    if not parent.is_dir():
        raise InvalidArgumentError(f"{what} {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise InvalidArgumentError(f"{what} {p} is not writable")


def _cmd_embed(args: argparse.Namespace) -> int:
    from .pipeline import embed_many

    _writable_target(args.output, "output")
    out = args.output if args.output.endswith(".npz") else args.output + ".npz"  # np.savez adds the suffix
    _writable_target(out, "output")
    res = embed_many(args.images, embedder=args.embedder, detector=args.detector, frontalize=args.frontalize,
                     progress=len(args.images) > 1)
    ok = [r for r in res if r.ok]
    for r in res:
        if not r.ok:
            print(f"{args.images[r.index]}: {type(r.error).__name__}: {r.error}", file=sys.stderr)
    if ok:
        try:
            np.savez(out, embeddings=np.stack([r.embedding for r in ok]), paths=np.array([args.images[r.index] for r in ok]))
        except OSError as e:
            print(f"pifr: error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
            return 2
        print(f"wrote {len(ok)} embeddings to {out}")
    return 0 if len(ok) == len(res) else 2


def frontalize_plan(src: "Path", dst: "Path") -> "list":
    """``[(input, output), ...]`` for ``pifr frontalize``: every output is a distinct ``.png``
    that is not one of the inputs. A folder keeps its layout; two inputs that would meet in one
    name (``x.jpg`` and ``x.png``) each keep their suffix (``x.jpg.png``, ``x.png.png``); a file
    into an existing folder becomes ``folder/<stem>.png``.

    Raises InvalidArgumentError: an output would replace an input, or no images were found."""
    from collections import Counter
    from pathlib import Path

    from .errors import InvalidArgumentError

    exts = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp"}
    if src.is_dir():
        if dst.exists() and not dst.is_dir():
            raise InvalidArgumentError(f"{src} is a folder, so the output must be a folder; {dst} is a file")
        if dst.resolve() == src.resolve():  # outputs among the photos they came from: refuse, even where names differ
            raise InvalidArgumentError(f"the output folder is the input folder {src}: refusing to overwrite input images "
                                       "or mix outputs with them; choose another output")
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in exts and p.is_file())
        if not files:
            raise InvalidArgumentError(f"{src}: no images ({', '.join(sorted(exts))})")
        rel = [f.relative_to(src) for f in files]
        base = Counter(r.with_suffix(".png") for r in rel)
        outs = [dst / (r.with_suffix(".png") if base[r.with_suffix(".png")] == 1 else r.with_name(r.name + ".png"))
                for r in rel]
    else:
        files = [src]
        outs = [dst / (src.stem + ".png") if dst.is_dir() else dst]
    inputs = {Path(f).resolve() for f in files}
    clash = [str(o) for o in outs if o.resolve() in inputs]
    if clash:
        raise InvalidArgumentError(f"refusing to overwrite input image(s) {clash[:3]}; choose another output")
    if len({o.resolve() for o in outs}) != len(outs):  # x.jpg.png beside a real x.jpg.png input's x.jpg.png
        raise InvalidArgumentError(f"{src}: two inputs would be written to one output; rename them")
    return list(zip(files, outs))


def _images_to_images(args: argparse.Namespace, desc: str, step: int, make) -> "tuple[int, int, Path]":
    """Shared by ``pifr frontalize`` and ``pifr rotate``: plan the outputs (:func:`frontalize_plan`),
    run ``make(list of input paths)`` — one result (with ``.image``) or exception per input —
    ``step`` inputs at a time, write each image as PNG, report failures on stderr.
    Returns ``(written, total, output)``."""
    from pathlib import Path

    from PIL import Image
    from tqdm import tqdm

    from .errors import InvalidImageError

    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise InvalidImageError(f"{src}: no such file or folder")
    plan = frontalize_plan(src, dst)
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
    bad = 0
    with tqdm(total=len(plan), desc=desc, unit="img", disable=len(plan) < 2) as bar:
        for k in range(0, len(plan), step):
            chunk = plan[k:k + step]
            for (f, out), r in zip(chunk, make([f for f, _ in chunk])):
                if isinstance(r, Exception):
                    bad += 1
                    print(f"{f}: {type(r).__name__}: {r}", file=sys.stderr)
                    continue
                try:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(r.image).save(out, format="PNG")
                except OSError as e:
                    bad += 1
                    print(f"{f}: cannot write {out}: {e.strerror or e}", file=sys.stderr)
            bar.update(len(chunk))
    return len(plan) - bad, len(plan), dst


def _cmd_frontalize(args: argparse.Namespace) -> int:
    from .frontalization import frontalize

    step = max(1, args.batch_size)
    method = None if args.method == "auto" else args.method
    done, total, dst = _images_to_images(args, "frontalize", step, lambda files: frontalize(
        files, method=method, weights=args.weights, batch_size=step))
    print(f"frontalized {done} of {total} images into {dst}")
    return 0 if done == total else 2


def _cmd_rotate(args: argparse.Namespace) -> int:
    from .rotation import rotate

    step = max(1, args.batch_size)
    done, total, dst = _images_to_images(args, f"rotate to {args.yaw:+g}°", step, lambda files: rotate(
        files, yaw=args.yaw, pitch=args.pitch, method=args.method, weights=args.weights, batch_size=step))
    print(f"rotated {done} of {total} images to yaw {args.yaw:+g}°, pitch {args.pitch:+g}° into {dst}")
    return 0 if done == total else 2


def _open_gallery(path: str):
    from .gallery import Gallery

    return Gallery.load(path)


def _cmd_enroll(args: argparse.Namespace) -> int:
    from .gallery import Gallery

    # Load, enroll and save under the gallery's file lock: concurrent enrolls take turns.
    with Gallery.edit(args.gallery, create=True, embedder=args.embedder) as g:
        rep = g.enroll(args.id, args.images)
        n_ids, n_templates = len(g), g.templates
    for i, why in rep.failures:
        print(f"{args.images[i]}: not enrolled: {why}", file=sys.stderr)
    for i in rep.duplicates:
        print(f"{args.images[i]}: already enrolled (same image)", file=sys.stderr)
    print(f"{args.id}: {rep.added} template(s) added; gallery has {n_ids} identities, {n_templates} templates")
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
    if args.action == "list":
        g = _open_gallery(args.gallery)
        counts = g.template_counts()
        src = g.threshold_source
        what = {"default": f"default operating point, FAR {g.far_per_probe:g} per probe",
                "calibrated": f"calibrated for FAR {g.calibrated_far:g}" if g.calibrated_far else "calibrated",
                "fixed": "fixed", "embedder": "the embedder's 1:1 threshold"}[src]
        stale = g.stale_templates
        print(f"# {args.gallery}: embedder {g.embedder}, threshold {g.threshold:.4f} ({what})")
        if stale:
            print(f"# {sum(stale.values())} template(s) were fused from a view this pifr makes otherwise "
                  "(a re-tuned rule or new weights): remove those identities and enroll their photos again")
        for name in sorted(counts):
            print(f"{name}\t{counts[name]}" + (f"\t{stale[name]} stale" if name in stale else ""))
        return 0
    from .gallery import Gallery

    missing = []
    with Gallery.edit(args.gallery) as g:
        known = set(g.identities)
        for name in dict.fromkeys(args.names):
            if name in known:
                print(f"{name}: removed {g.remove(name)} template(s)")
            else:
                missing.append(name)
    for name in missing:
        print(f"{name}: not enrolled (nothing removed)", file=sys.stderr)
    return 2 if missing else 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .detection import list_detectors
    from .embedders import list_embedders

    print("embedders:")
    for e in list_embedders():
        bad_sum = e.reason.startswith("WeightsChecksumError")
        state = "ready" if e.available else "CHECKSUM FAILED" if bad_sum else "missing weights"
        # A registered ONNX model reports dim 0 (unknown until loaded) and NaN (no threshold measured).
        thr = ("none" if e.threshold != e.threshold else f"{e.threshold:.4f}") + ("" if e.calibrated else " (uncalibrated)")
        print(f"  {e.name:18s} dim {e.dim or '?':>4}  template {e.template:12s} threshold {thr:20s} {state}")
        if e.reason and (args.verbose or bad_sum):
            print(f"      {e.reason}")
    print("detectors:", ", ".join(list_detectors()))
    from .licences import default_components, open_embedders

    print("licences of the default pipeline (weights/manifest.json; each model card in docs/model-cards):")
    parts = default_components()
    for c in parts:
        t = c.spec.terms
        print(f"  {c.role:58s} {c.spec.name:20s} weights {t.get('weights', '?'):14s} training data {t.get('training_data', '?')}")
        if args.verbose:
            print(f"      {c.spec.licence}")
    bad = [c.spec.name for c in parts if c.research_only]
    if bad:
        print(f"  research-only parts: {', '.join(bad)}. Without them: frontalize=\"never\" (no yaw, no 3D views) with "
              f"embedder {' or '.join(open_embedders())}; pifr.rotate / pifr.frontalize have no such configuration.")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .service.server import run

    return run(args)


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
    v.add_argument("--frontalize", default=DEFAULT_FRONTALIZE, choices=FRONTALIZE_MODES,
                   help=f"pose policy (default {DEFAULT_FRONTALIZE}: a face turned beyond the embedder's measured yaw "
                        "threshold is fused with its 3D render (frontal, or part-turned renders where the embedder's rule says); never: raw; always: frontal views only, needs --threshold)")
    v.add_argument("--frontalizer", default=None,
                   help="where frontal views come from: 3d (default), refined (the 3D render through the installed "
                        "refiner), refined:REFINER.safetensors, or a TP-GAN generator.safetensors")
    v.add_argument("--yaw-threshold", type=float, default=None,
                   help="|yaw| in degrees above which auto frontalizes (default: the embedder's measured rule)")
    v.add_argument("--fusion-weight", type=float, default=None,
                   help="weight of the frontal view's embedding under auto, 0-1 (default: the embedder's measured rule)")
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
    e.add_argument("--embedder", default=None, help="embedder name (default: the library's default)")
    e.add_argument("--detector", default=None)
    e.add_argument("--frontalize", default=DEFAULT_FRONTALIZE, choices=FRONTALIZE_MODES,
                   help=f"pose policy, as pifr.embed (default {DEFAULT_FRONTALIZE})")
    e.set_defaults(func=_cmd_embed)

    f = sub.add_parser("frontalize", help="write the frontal view of each face (file or folder)")
    f.add_argument("input")
    f.add_argument("-o", "--output", required=True)
    f.add_argument("--method", default="auto", choices=("auto",) + FRONTALIZE_METHODS,
                   help="3d (the 3D render, works out of the box), refined (the 3D render through a learned refiner), "
                        "tpgan (a learned generator) or hassner (classical, Hassner et al. 2015); default auto: tpgan "
                        "when --weights is given or a generator is installed, else refined when a refiner is installed, else 3d")
    f.add_argument("--weights", default=None,
                   help="tpgan: generator.safetensors (default: the installed frontalizer); refined: refiner.safetensors "
                        "(default: the installed refiner); hassner: model3Ddlib.mat")
    f.add_argument("--batch-size", type=int, default=32, help="faces per generator forward pass (default 32)")
    f.set_defaults(func=_cmd_frontalize)

    ro = sub.add_parser("rotate", help="write each face seen from another yaw/pitch (3D fit and render, refined when "
                                       "a refiner is installed; file or folder)")
    ro.add_argument("input")
    ro.add_argument("--yaw", type=float, required=True, help="target yaw in degrees, -90..90 (+: turned towards the image's right)")
    ro.add_argument("--pitch", type=float, default=0.0, help="target pitch in degrees, -60..60 (+: looking up)")
    ro.add_argument("-o", "--output", required=True)
    ro.add_argument("--method", default="auto", choices=ROTATE_METHODS,
                    help="3d (the 3D render), refined (the render through a learned refiner); default auto: refined "
                         "when --weights is given or a refiner is installed, else 3d")
    ro.add_argument("--weights", default=None, help="refined: refiner.safetensors (default: the installed refiner)")
    ro.add_argument("--batch-size", type=int, default=16, help="faces per refiner forward pass (default 16)")
    ro.set_defaults(func=_cmd_rotate)

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

    from .service.server import add_arguments as _serve_arguments  # stdlib only: FastAPI loads in _cmd_serve

    sv = sub.add_parser("serve", help="HTTP access-control service on a gallery (docs/service.md; needs pifr[serve])")
    _serve_arguments(sv)
    sv.set_defaults(func=_cmd_serve)

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
