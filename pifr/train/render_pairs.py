"""Rotate-and-render training pairs (Zhou et al., CVPR 2020) from single photos.

Each photo is fitted in 3D, turned to another yaw, re-textured there and turned back
(:func:`pifr.rotation.rotate_and_render`): the render-back is the network's input, the photo
itself — aligned to the same 128×128 TP-GAN crop, pixel for pixel — its target. No identity
labels or multi-view data are needed, so every LFW photo and every CFP 001–350 photo (frontal
and profile) is a training pair.

A pack is one ``.npz`` (no pickles): per photo its target crop (JPEG) and 68 landmarks in crop
pixels; per rotation the input (JPEG), its mask (bit-packed), the photo index and the yaws.

    python -m pifr.train.pack --rotate-and-render ../shared/data/lfw ../shared/data/cfp --identities 1-350 \\
        --rotations 2 --max-photos 2000 --out packs/rr_train.npz
"""
from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger("pifr")

#: R&R's rotation recipe: turned by 20–55° (either side), never past ±69°, one time in five to the
#: frontal view, with a little pitch.
AWAY_RANGE = (20.0, 55.0)
AWAY_LIMIT = 69.0
FRONTAL_SHARE = 0.2
PITCH_JITTER = 8.0
#: An away view closer than this to the photo's own yaw teaches little (the render-back is nearly the photo).
MIN_TURN = 15.0


@dataclass(frozen=True)
class TurnRecipe:
    """How far a photo is turned away before it is rendered back (degrees). The default is R&R's;
    a mirror-backed pack (``back="mirror"``) is better served by larger turns (e.g. 45–75°,
    limit 80°), whose away views are as one-sided as the profiles frontalized at inference."""

    away_range: Tuple[float, float] = AWAY_RANGE
    away_limit: float = AWAY_LIMIT
    frontal_share: float = FRONTAL_SHARE
    pitch_jitter: float = PITCH_JITTER
    min_turn: float = MIN_TURN


def away_pose(yaw: float, rng: np.random.Generator, recipe: TurnRecipe = TurnRecipe()) -> Tuple[float, float]:
    """(yaw, pitch) in degrees to rotate a photo of ``yaw`` to: by default R&R's recipe — one time
    in five the frontal view, else a turn of 20–55° to either side, never past ±69°. A turn that the
    limit would cut below ``min_turn`` goes the other way (the mesh is a face, not a head: turned
    much further, what the photo shows lands off the face's silhouette and carries back nothing)."""
    r = recipe
    pitch = float(rng.uniform(-r.pitch_jitter, r.pitch_jitter))
    if rng.random() < r.frontal_share and abs(yaw) >= r.min_turn:
        return 0.0, pitch
    turn = float(rng.choice([-1.0, 1.0]) * rng.uniform(*r.away_range))
    y = float(np.clip(yaw + turn, -r.away_limit, r.away_limit))
    if abs(y - yaw) < r.min_turn:
        y = float(np.clip(yaw - turn, -r.away_limit, r.away_limit))
    return y, pitch


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _unjpeg(b: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


def _join(blobs: Sequence[bytes]) -> Tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), np.uint8).copy(), offsets


@dataclass
class RenderPairPack:
    """Rotate-and-render pairs in memory (see the module docstring for the file layout).

    Attributes (P photos, R rotations):
        targets, target_offsets: JPEG bytes of each photo's ``(128, 128, 3)`` crop, concatenated.
        landmarks: ``(P, 68, 2)`` float32 crop pixels.
        yaw: ``(P,)`` the photo's fitted yaw (degrees).
        inputs, input_offsets: JPEG bytes of each rotation's render-back.
        masks: ``(R, 2048)`` uint8 bit-packed ``(128, 128)`` masks.
        photo: ``(R,)`` int32 index of the rotation's photo; yaw_away, pitch_away: ``(R,)`` degrees.
        sources: ``(P,)`` str photo paths (relative to their data root); manifest: how it was built.
    """

    targets: np.ndarray
    target_offsets: np.ndarray
    landmarks: np.ndarray
    yaw: np.ndarray
    inputs: np.ndarray
    input_offsets: np.ndarray
    masks: np.ndarray
    photo: np.ndarray
    yaw_away: np.ndarray
    pitch_away: np.ndarray
    sources: np.ndarray
    manifest: Dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.photo)

    def pair(self, i: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rotation ``i`` as ``(input (128, 128, 3) uint8, mask (128, 128) bool, target uint8, landmarks (68, 2))``."""
        p = int(self.photo[i])
        inp = _unjpeg(self.inputs[self.input_offsets[i]:self.input_offsets[i + 1]].tobytes())
        tgt = _unjpeg(self.targets[self.target_offsets[p]:self.target_offsets[p + 1]].tobytes())
        mask = np.unpackbits(self.masks[i])[: 128 * 128].reshape(128, 128).astype(bool)
        return inp, mask, tgt, self.landmarks[p]

    def subset(self, photos: int = 0, per_photo: int = 0, seed: int = 0) -> "RenderPairPack":
        """A smaller pack to carry: ``photos`` photos drawn at random (seeded; 0 = all) and at most
        ``per_photo`` of each one's rotations (its first ones; 0 = all). Bytes are copied, not
        re-encoded; the manifest records the cut."""
        keep_photo = np.arange(len(self.yaw))
        if photos and photos < len(keep_photo):
            keep_photo = np.sort(np.random.default_rng(seed).choice(len(keep_photo), photos, replace=False))
        new_index = np.full(len(self.yaw), -1, np.int64)
        new_index[keep_photo] = np.arange(len(keep_photo))
        rots, seen = [], np.zeros(len(self.yaw), np.int64)
        for i, ph in enumerate(self.photo):
            if new_index[ph] >= 0 and (not per_photo or seen[ph] < per_photo):
                rots.append(i)
                seen[ph] += 1
        blob = lambda data, off, idx: _join([data[off[i]:off[i + 1]].tobytes() for i in idx])  # noqa: E731
        t, to = blob(self.targets, self.target_offsets, keep_photo)
        i, io_ = blob(self.inputs, self.input_offsets, rots)
        man = dict(self.manifest)
        man.update(photos=len(keep_photo), rotations=len(rots),
                   subset={"of_photos": int(len(self.yaw)), "of_rotations": int(len(self.photo)), "photos": photos,
                           "per_photo": per_photo, "seed": seed})
        return RenderPairPack(t, to, self.landmarks[keep_photo], self.yaw[keep_photo], i, io_, self.masks[rots],
                              new_index[self.photo[rots]].astype(np.int32), self.yaw_away[rots], self.pitch_away[rots],
                              self.sources[keep_photo], man)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, targets=self.targets, target_offsets=self.target_offsets, landmarks=self.landmarks,
                            yaw=self.yaw, inputs=self.inputs, input_offsets=self.input_offsets, masks=self.masks,
                            photo=self.photo, yaw_away=self.yaw_away, pitch_away=self.pitch_away,
                            sources=self.sources.astype("U"), manifest=np.array(json.dumps(self.manifest)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "RenderPairPack":
        from ..errors import PifrError

        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise PifrError(f"{path}: not a rotate-and-render pack ({e})") from e
        manifest = json.loads(str(d.pop("manifest")))
        return cls(**d, manifest=manifest)


def photo_sources(roots: Iterable[Path], cfp_ids: range) -> List[Tuple[Path, str]]:
    """(photo, its name relative to the data root) for each root: a CFP root (``Data/Images``) gives
    the frontals and profiles of ``cfp_ids``; an LFW root (``pairs.txt``) every photo. CFP people
    outside ``cfp_ids`` are validation people and never enter (nor do they by an LFW name: LFW
    folders of CFP people outside ``cfp_ids`` are left out when a CFP root is given too)."""
    from ..eval.datasets import cfp_images, cfp_names

    roots = [Path(r) for r in roots]
    out: List[Tuple[Path, str]] = []
    cfp_root = next((r for r in roots if (r / "Data" / "Images").is_dir()), None)
    held_out = set()
    if cfp_root is not None:
        held_out = {n.replace(" ", "_") for i, n in cfp_names(cfp_root).items() if i not in cfp_ids}
    for r in roots:
        if (r / "Data" / "Images").is_dir():
            out += [(im.path, str(im.path.relative_to(r))) for im in cfp_images(r, cfp_ids)]
        elif (r / "pairs.txt").is_file():
            out += [(p, str(p.relative_to(r))) for p in sorted(r.glob("*/*.jpg")) if p.parent.name not in held_out]
        else:
            from ..errors import PifrError

            raise PifrError(f"{r}: neither a CFP root (Data/Images) nor an LFW root (pairs.txt)")
    return out


def build(sources: Sequence[Tuple[Path, str]], rotations: int = 2, seed: int = 0, quality: int = 90,
          detector: Optional[str] = None, manifest: Optional[Dict] = None, back: str = "texture",
          recipe: TurnRecipe = TurnRecipe()) -> RenderPairPack:
    """Fit, rotate away and render back each photo ``rotations`` times (``back``: see
    :func:`pifr.rotation.rotate_and_render`; ``recipe``: the turns, :class:`TurnRecipe`). A photo that fails (no face, a refused fit, an
    unreadable file) is skipped and counted; it never stops the build."""
    from tqdm import tqdm

    from ..detection import locate_face
    from ..errors import PifrError
    from ..face3d import fit_faces
    from ..rotation import rotate_and_render

    rng = np.random.default_rng(seed)
    targets, lms, yaws, names = [], [], [], []
    inputs, masks, photo, y_away, p_away = [], [], [], [], []
    skipped: Dict[str, int] = {}
    t0 = time.time()
    for path, name in tqdm(sources, desc="rotate-and-render", unit="photo"):
        try:
            img, face = locate_face(path, detector=detector)
            fit = fit_faces(img, [face], names=[str(path)])[0]
            pairs = []
            for _ in range(rotations):
                ya, pa = away_pose(fit.yaw, rng, recipe)
                pairs.append((rotate_and_render(fit, img, face, ya, pa, back=back), ya, pa))
        except PifrError as e:
            kind = type(e).__name__
            skipped[kind] = skipped.get(kind, 0) + 1
            log.debug("%s: skipped (%s)", path, e)
            continue
        k = len(targets)
        targets.append(_jpeg(pairs[0][0].target, quality))
        lms.append(pairs[0][0].landmarks)
        yaws.append(fit.yaw)
        names.append(name)
        for pr, ya, pa in pairs:
            inputs.append(_jpeg(pr.input, quality))
            masks.append(np.packbits(pr.mask.ravel()))
            photo.append(k)
            y_away.append(ya)
            p_away.append(pa)
    seconds = time.time() - t0
    t, to = _join(targets)
    i, io_ = _join(inputs)
    man = dict(manifest or {})
    man.update(photos=len(targets), rotations=len(inputs), skipped=skipped, seconds=round(seconds, 1),
               seconds_per_1000_photos=round(1000 * seconds / max(len(sources), 1), 1), jpeg_quality=quality, seed=seed, back=back,
               recipe=asdict(recipe))
    return RenderPairPack(t, to, np.array(lms, np.float32).reshape(-1, 68, 2), np.array(yaws, np.float32), i, io_,
                          np.array(masks, np.uint8).reshape(-1, 2048), np.array(photo, np.int32),
                          np.array(y_away, np.float32), np.array(p_away, np.float32), np.array(names), man)
