"""Build a small Multi-PIE-shaped tree from real faces, so the Multi-PIE harnesses run end to end
without the licensed data. Every file is a real photo or a render of one; manifest.csv says which.

Test subjects are CFP identities (default 381–400): camera 05_1 illumination 07 = CFP frontal 01
(the gallery image), 05_1 illumination 00 = frontal 02, ±90° cameras (11_0, 24_0) = CFP profiles
(mirrored so each faces its camera's way), ±15…±75° cameras = frontal 03 rendered at that yaw with
the 3D head when ``--model3d`` is available (otherwise those cameras are left empty). The protocol's
training subjects are filled with one frontal each (CFP 1–200, never probed) so that subject
numbering puts the test subjects where the protocol expects them.

    python benchmarks/multipie_fixture.py --out /tmp/mpie_fixture [--setting 1] [--model3d PATH]
"""
from __future__ import annotations

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401

import csv
from pathlib import Path

import numpy as np
from benchmarks._harness import parser, shared_root
from PIL import Image

import pifr
from pifr.eval.datasets import cfp_images
from pifr.eval.multipie import MULTIPIE_CAMERA_YAW

N_TRAIN = {1: 150, 2: 200}


def write(root: Path, subj: int, session: int, cam: str, ill: int, img: np.ndarray, what: str, rows: list) -> None:
    d = root / f"session{session:02d}" / "multiview" / f"{subj:03d}" / "01" / cam
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{subj:03d}_{session:02d}_01_{cam.replace('_', '')}_{ill:02d}.png"
    Image.fromarray(img).save(p)
    rows.append({"file": str(p.relative_to(root)), "subject": subj, "camera": cam, "yaw": MULTIPIE_CAMERA_YAW[cam],
                 "illumination": ill, "is": what})


def build(out: Path, cfp: Path, setting: int, test_ids: range, model3d: str | None) -> Path:
    rows: list = []
    fillers = [im for im in cfp_images(cfp, range(1, 201), "frontal") if im.index == 1][: N_TRAIN[setting]]
    for k, im in enumerate(fillers, start=1):
        write(out, k, 1, "05_1", 7, pifr.load_image(im.path), f"training filler: {im.path.name} of CFP {im.identity}", rows)
    ref = None
    if model3d:
        from pifr.geometry import landmarks68, load_reference, render_texture, texture_from_photo

        ref = load_reference(model3d)
    for k, ident in enumerate(test_ids, start=N_TRAIN[setting] + 1):
        ims = cfp_images(cfp, range(ident, ident + 1))
        fr = [im for im in ims if im.pose == "frontal"]
        pr = [im for im in ims if im.pose == "profile"]
        write(out, k, 1, "05_1", 7, pifr.load_image(fr[0].path), f"CFP {ident} frontal/{fr[0].path.name}", rows)
        write(out, k, 1, "05_1", 0, pifr.load_image(fr[1].path), f"CFP {ident} frontal/{fr[1].path.name}", rows)
        for cam, p in (("11_0", pr[0]), ("24_0", pr[1])):
            img = pifr.load_image(p.path)
            faces = pifr.detect(img)
            want = MULTIPIE_CAMERA_YAW[cam]
            flip = bool(faces and faces[0].yaw is not None and np.sign(faces[0].yaw) != np.sign(want))
            if flip:
                img = np.ascontiguousarray(img[:, ::-1])
            write(out, k, 1, cam, 7, img, f"CFP {ident} profile/{p.path.name}" + (" mirrored" if flip else ""), rows)
        if ref is not None:
            src = pifr.load_image(fr[2].path)
            face = pifr.detect(src)[0]
            tex, _, _ = texture_from_photo(src, landmarks68(src, face), ref)
            for cam, yaw in MULTIPIE_CAMERA_YAW.items():
                if abs(yaw) in (15, 30, 45, 60, 75):
                    write(out, k, 1, cam, 7, render_texture(tex, ref, yaw).image, f"CFP {ident} frontal/{fr[2].path.name} rendered at {yaw:+d}", rows)
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def main() -> None:
    ap = parser(__doc__, "/tmp/mpie_fixture", embedders=False)
    ap.add_argument("--setting", type=int, default=1, choices=[1, 2])
    ap.add_argument("--identities", default="381-400")
    ap.add_argument("--model3d", default=None)
    args = ap.parse_args()
    a, _, b = args.identities.partition("-")
    cfp = shared_root(args.shared) / "data" / "cfp"
    out = build(Path(args.out), cfp, args.setting, range(int(a), int(b) + 1), args.model3d)
    print(f"wrote a Multi-PIE-shaped tree (setting {args.setting}) to {out}; see {out}/manifest.csv")


if __name__ == "__main__":
    main()
