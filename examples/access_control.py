"""Access control end to end: enroll people from folders, then decide for every face in a video
(or a folder of frames) who it is — or that it is nobody known — at a chosen false-accept rate.

    python examples/access_control.py --enroll people/ --frames door.mp4 --far 1e-3 --log decisions.csv
    python examples/access_control.py --gallery staff.gallery --frames frames_dir/

``people/`` holds one sub-folder of photos per person (the folder name is the identity).
Without ``--impostors``, the threshold is the gallery's default operating point (FAR 1 % per probe
for its size, from the impostor tables pifr ships); with a folder of labelled people (sub-folder
per person, not the enrolled ones) it is calibrated to ``--far`` per probe on them.

``--frontalize {auto,never,always}`` sets the pose policy of a new gallery (default: the
:class:`pifr.Gallery` default, ``auto``): how enrolled photos and every face in the frames become
templates (``auto`` fuses in the frontal view of turned faces and raises the threshold by the
rule's measured shift, ``always`` keeps the frontal view's embedding alone). A loaded
gallery keeps the policy it was saved with. ``--frontalizer`` picks where the frontal view comes
from (as :func:`pifr.views.parse_view`): ``3d`` (the 3D render), ``refined`` (that
render through the registered refiner), ``refined:<refiner.safetensors>``, or a TP-GAN
``generator.safetensors`` path; default: the 3D render (or a registered generator). The run
prints the policy and frontal view it used. Every face in a frame is checked, not only the largest.

A door sees a person in several frames, so faces are grouped into tracks — a face joins the track
whose last box it overlaps (IoU ≥ ``--iou``) and whose last face looks like it (raw cosine at or
above the embedder's 1:1 threshold), within ``--gap`` frames — and each track is decided once, when
it ends: its best ``--track-faces`` faces (largest, most frontal) pooled into one probe
(:meth:`pifr.Gallery.identify` with ``(image, face)`` pairs), at the gallery's threshold plus the
shift measured for pooled probes. The log has one row per track with the frames it used.

    python examples/access_control.py --enroll people/ --frames door.mp4 --frontalize never
    python examples/access_control.py --enroll people/ --frames door.mp4 --frontalizer refined
"""
from __future__ import annotations

import argparse
import csv
import time
from collections import Counter
from pathlib import Path

import numpy as np

import pifr
from pifr.policy import DEFAULT_FRONTALIZE, FRONTALIZE_MODES
from pifr.views import get_view_source

EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".pgm"}


def frames(source: Path, every: int):
    """(frame_id, RGB image) from a video file or a folder of images."""
    import cv2

    if source.is_dir():
        for p in sorted(f for f in source.rglob("*") if f.suffix.lower() in EXTS):
            try:
                yield str(p), pifr.load_image(p)
            except pifr.PifrError as e:
                print(f"{p}: skipped ({e})")
        return
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise SystemExit(f"{source}: cannot open video")
    i = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if i % every == 0:
            yield f"frame{i:06d}", pifr.load_image(bgr, bgr=True)
        i += 1
    cap.release()


def iou(a, b) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Tracker:
    """Greedy box-overlap tracking with an appearance check: ``update`` takes one frame's faces and
    their raw embeddings and returns the tracks that ended (unseen for more than ``gap`` frames);
    ``flush`` returns the rest. A track keeps at most ``keep`` faces: the largest and most frontal."""

    def __init__(self, min_iou: float, same: float, gap: int, keep: int) -> None:
        self.min_iou, self.same, self.gap, self.keep = min_iou, same, gap, keep
        self.active: list = []
        self.next_id = 0

    def update(self, t: int, fid: str, img, faces, vecs) -> list:
        free = list(range(len(self.active)))
        for face, v in zip(faces, vecs):
            best, score = None, self.min_iou
            for k in free:
                tr = self.active[k]
                o = iou(tr["box"], face.bbox)
                if o >= score and float(tr["vec"] @ v) >= self.same:
                    best, score = k, o
            if best is None:
                self.active.append({"id": self.next_id, "items": [], "frames": []})
                self.next_id += 1
                best = len(self.active) - 1
            else:
                free.remove(best)
            tr = self.active[best]
            tr.update(box=face.bbox, vec=v, last=t)
            tr["frames"].append(fid)
            tr["items"].append((img, face))
            # Keep the faces worth pooling: large and frontal (bounded memory on a long track).
            tr["items"].sort(key=lambda it: -(it[1].width * it[1].height) * np.cos(np.radians(min(abs(it[1].yaw or 0), 89))))
            del tr["items"][self.keep:]
        done = [tr for tr in self.active if t - tr["last"] > self.gap]
        self.active = [tr for tr in self.active if t - tr["last"] <= self.gap]
        return done

    def flush(self) -> list:
        done, self.active = self.active, []
        return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--enroll", type=Path, help="folder of people (one sub-folder each)")
    ap.add_argument("--gallery", type=Path, help="existing gallery file (written here after --enroll)")
    ap.add_argument("--impostors", type=Path, help="folder of other people (sub-folder each) to calibrate on")
    ap.add_argument("--far", type=float, default=1e-3, help="target false-accept rate per probe (with --impostors)")
    ap.add_argument("--frames", type=Path, required=True, help="video file or folder of images")
    ap.add_argument("--every", type=int, default=5, help="use every N-th video frame")
    ap.add_argument("--log", type=Path, default=Path("decisions.csv"))
    ap.add_argument("--frontalize", choices=FRONTALIZE_MODES, default=None,
                    help=f"pose policy of a new gallery (default: {DEFAULT_FRONTALIZE}, the Gallery default; "
                         "a loaded gallery keeps its own)")
    ap.add_argument("--iou", type=float, default=0.3, help="box overlap that continues a track")
    ap.add_argument("--gap", type=int, default=1, help="frames a track may miss before it ends")
    ap.add_argument("--track-faces", type=int, default=5, help="faces of a track pooled for its decision")
    ap.add_argument("--frontalizer", default=None,
                    help="frontal view: '3d', 'refined', 'refined:<refiner.safetensors>' or a TP-GAN generator "
                         "path (default: the 3D render, or a registered generator)")
    args = ap.parse_args()

    if args.gallery and args.gallery.is_file():
        g = pifr.Gallery.load(args.gallery, frontalizer=args.frontalizer)
        if args.frontalize is not None and args.frontalize != g.frontalize:
            print(f"{args.gallery}: saved with frontalize={g.frontalize!r}; --frontalize {args.frontalize} "
                  "applies to new galleries only")
    else:
        # Only an explicit choice is passed on: otherwise the Gallery's own default applies.
        policy = {} if args.frontalize is None else {"frontalize": args.frontalize}
        g = pifr.Gallery(frontalizer=args.frontalizer, **policy)
    if g.frontalize == "never":
        view = "unused"
    else:
        try:  # resolved now: a bad --frontalizer would otherwise fail every enrollment, one by one
            view = get_view_source(g.frontalizer).name
        except pifr.PifrError as e:
            raise SystemExit(f"--frontalizer {args.frontalizer}: {e}")
    print(f"gallery: embedder {g.embedder}, frontalize={g.frontalize!r}, frontal view {view}")
    if args.enroll:
        for person in sorted(p for p in args.enroll.iterdir() if p.is_dir()):
            rep = g.enroll(person.name, sorted(f for f in person.iterdir() if f.suffix.lower() in EXTS))
            print(f"enrolled {person.name}: {rep.added} photo(s), {len(rep.failures)} failed, {len(rep.duplicates)} duplicate")
    if args.impostors:
        paths, labels = [], []
        for person in sorted(p for p in args.impostors.iterdir() if p.is_dir()):
            for f in sorted(f for f in person.iterdir() if f.suffix.lower() in EXTS):
                paths.append(f)
                labels.append(person.name)
        res = pifr.embed_many(paths, embedder=g.embedder, frontalize=g.frontalize, frontalizer=g.frontalizer)  # as probes are made
        ok = [r for r in res if r.ok]
        thr = g.calibrate(args.far, embeddings=np.stack([r.embedding for r in ok]), labels=[labels[r.index] for r in ok])
        print(f"threshold {thr:.4f} for FAR {args.far:g} per probe against {len(g)} identities")
    if args.gallery:
        g.save(args.gallery)
    from pifr.detection import detect

    decisions = Counter()
    tracker = Tracker(args.iou, pifr.get_embedder(g.embedder).threshold, args.gap, args.track_faces)
    t0 = time.perf_counter()
    n = 0
    with open(args.log, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["track", "frames", "faces_used", "x1", "y1", "x2", "y2", "yaw", "decision", "identity", "score", "threshold"])

        def decide(tracks) -> None:
            for tr in tracks:
                try:  # one pooled probe per track, under the gallery's probe policy
                    m = g.identify(tr["items"])[0]
                except pifr.PifrError as e:  # a track whose faces all fail does not stop the door
                    print(f"track {tr['id']}: skipped ({e})")
                    continue
                who = m.identity if m.accepted else "unknown"
                decisions[who] += 1
                face = tr["items"][0][1]
                print(f"track {tr['id']} ({len(tr['frames'])} frames, {len(tr['items'])} pooled): {who} {m.score:.3f}")
                w.writerow([tr["id"], ";".join(tr["frames"]), len(tr["items"]), *np.round(face.bbox, 1),
                            round(face.yaw or 0.0, 1), "accept" if m.accepted else "reject", who, round(m.score, 4),
                            round(g.threshold, 4)])

        for t, (fid, img) in enumerate(frames(args.frames, args.every)):
            n += 1
            faces = detect(img)
            vecs = [pifr.embed(img, face=f, embedder=g.embedder, frontalize="never") for f in faces]
            decide(tracker.update(t, fid, img, faces, vecs))
        decide(tracker.flush())
    dt = time.perf_counter() - t0
    print(f"\n{n} frames in {dt:.1f} s ({n / max(dt, 1e-9):.1f} frames/s); decision log (one row per track): {args.log}")
    for who, c in decisions.most_common():
        print(f"  {who}: {c} track(s)")


if __name__ == "__main__":
    main()
