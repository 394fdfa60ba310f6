"""Training data for TP-GAN: packs of aligned 128×128 crops and (profile, frontal) pair datasets.

A *pack* is one ``.npz`` file (no pickles) holding JPEG-encoded TP-GAN crops with their 5
landmarks (crop pixels), estimated yaw, identity, pose label and source path, plus a JSON
manifest — detection and alignment run once, when the pack is built, never per epoch, and
the whole training set travels as one compact file. Sources: CFP (identity-level pairs),
Multi-PIE in its real layout (pixel-aligned pairs), and synthetic renders when available.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..alignment import TPGAN_128, align_with_landmarks, mirror
from ..eval.multipie import FRONTAL_CAMERA, MULTIPIE_NAME, multipie_pairs, multipie_split, scan_multipie

log = logging.getLogger("pifr")

CROP = 128

# ----------------------------------------------------------------------------- packs


def _jpeg(crop: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class Pack:
    """An in-memory pack: JPEG crops and their records."""

    jpeg: np.ndarray  # uint8, all JPEG files concatenated
    offsets: np.ndarray  # int64 (N + 1,)
    landmarks: np.ndarray  # float32 (N, 5, 2), crop pixels
    yaw: np.ndarray  # float32 (N,), degrees (pifr convention)
    identity: np.ndarray  # int32 (N,)
    frontal: np.ndarray  # bool (N,): a frontal (target-capable) image
    group: np.ndarray  # int32 (N,): pixel-aligned pairing group (-1 = identity-level pairing only)
    source: np.ndarray  # unicode (N,)
    manifest: dict

    def __len__(self) -> int:
        return len(self.yaw)

    def image(self, i: int) -> np.ndarray:
        from PIL import Image

        data = self.jpeg[self.offsets[i] : self.offsets[i + 1]].tobytes()
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        # Compressed: the JPEG bytes barely shrink, but the fixed-width source paths (~0.4 kB a
        # record, over a tenth of a render pack) do — bytes that count against a carry limit.
        np.savez_compressed(tmp, jpeg=self.jpeg, offsets=self.offsets, landmarks=self.landmarks, yaw=self.yaw,
                 identity=self.identity, frontal=self.frontal, group=self.group, source=self.source,
                 manifest=np.array(json.dumps(self.manifest)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Pack":
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such pack (build one with `python -m pifr.train.pack`; docs/tpgan.md, Data)")
        z = np.load(path, allow_pickle=False)
        return cls(z["jpeg"], z["offsets"], z["landmarks"], z["yaw"], z["identity"], z["frontal"], z["group"],
                   z["source"], json.loads(str(z["manifest"])))

    @classmethod
    def from_records(cls, blobs: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], yaw: Sequence[float],
                     identity: Sequence[int], frontal: Sequence[bool], group: Sequence[int], source: Sequence[str],
                     manifest: dict) -> "Pack":
        """A pack from per-record JPEG byte arrays and fields (the offsets are derived)."""
        offsets = np.zeros(len(blobs) + 1, np.int64)
        offsets[1:] = np.cumsum([len(b) for b in blobs])
        return cls(np.concatenate(blobs) if len(blobs) else np.zeros(0, np.uint8), offsets,
                   np.stack(landmarks).astype(np.float32) if len(landmarks) else np.zeros((0, 5, 2), np.float32),
                   np.asarray(yaw, np.float32), np.asarray(identity, np.int32), np.asarray(frontal, bool),
                   np.asarray(group, np.int32), np.asarray(source), manifest)

    def subset(self, keep: np.ndarray) -> "Pack":
        """The records where the boolean mask ``keep`` is true (e.g. dropping renders at ±90°)."""
        idx = np.nonzero(keep)[0]
        return Pack.from_records([self.jpeg[self.offsets[i]:self.offsets[i + 1]] for i in idx], self.landmarks[idx],
                                 self.yaw[idx], self.identity[idx], self.frontal[idx], self.group[idx], self.source[idx],
                                 dict(self.manifest, subset_of=int(len(self)), kept=int(len(idx))))

    def reencoded(self, quality: int, progress: bool = True) -> "Pack":
        """The same records with every crop re-encoded as JPEG at ``quality`` (1–95): a smaller
        file to carry to a training machine (quality 80 is ~0.54× the size of the packs' 95)."""
        from tqdm import tqdm

        if not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be in 1..95, got {quality}")
        blobs = [np.frombuffer(_jpeg(self.image(i), quality), np.uint8)
                 for i in tqdm(range(len(self)), desc=f"re-encode q{quality}", disable=not progress)]
        return Pack.from_records(blobs, self.landmarks, self.yaw, self.identity, self.frontal, self.group, self.source,
                                 dict(self.manifest, jpeg_quality=int(quality)))

    @classmethod
    def concat(cls, packs: Sequence["Pack"]) -> "Pack":
        """One pack from several (e.g. real CFP crops + rendered pairs): pairing groups are
        renumbered so that groups of different packs never meet; the manifest lists the parts."""
        if len(packs) == 1:
            return packs[0]
        groups, base = [], 0
        for p in packs:
            g = p.group.astype(np.int64)
            groups.append(np.where(g >= 0, g + base, -1))
            base += int(g.max()) + 1 if (g >= 0).any() else 0
        starts = np.cumsum([0] + [int(p.offsets[-1]) for p in packs[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(packs, starts)])
        return cls(np.concatenate([p.jpeg for p in packs]), offsets.astype(np.int64),
                   np.concatenate([p.landmarks for p in packs]), np.concatenate([p.yaw for p in packs]),
                   np.concatenate([p.identity for p in packs]), np.concatenate([p.frontal for p in packs]),
                   np.concatenate(groups).astype(np.int32), np.concatenate([p.source for p in packs]),
                   {"parts": [p.manifest for p in packs]})


def build_pack(items: Iterable[Tuple[str, int, bool, int]], manifest: dict, *, detector: str = "retinaface",
               progress: bool = True) -> Pack:
    """Detect, align to TPGAN_128 and JPEG-encode each ``(path, identity, is_frontal, group)``.
    Images without a face are skipped and counted in the manifest."""
    from ..detection import locate_face

    items = list(items)
    it = items
    if progress:
        from tqdm import tqdm

        it = tqdm(items, desc="pack", unit="img")
    blobs, lms, yaws, ids, fr, groups, srcs = [], [], [], [], [], [], []
    skipped = []
    for path, ident, is_frontal, group in it:
        try:
            img, face = locate_face(path, detector=detector, select="largest", retry_min_score=0.5)
        except Exception as e:  # noqa: BLE001 - one bad image must not stop the pack
            skipped.append(f"{path}: {type(e).__name__}")
            continue
        crop, lm = align_with_landmarks(img, face, TPGAN_128)
        blobs.append(np.frombuffer(_jpeg(crop), np.uint8))
        lms.append(lm)
        yaws.append(face.yaw if face.yaw is not None else np.nan)
        ids.append(ident)
        fr.append(is_frontal)
        groups.append(group)
        srcs.append(str(path))
    manifest = dict(manifest, images=len(blobs), skipped=len(skipped), skipped_examples=skipped[:20], detector=detector,
                    crop="pifr.alignment.TPGAN_128 (eyes_mouth rule)")
    return Pack.from_records(blobs, lms, yaws, ids, fr, groups, srcs, manifest)


#: Identity numbers of LFW people in packs: this + the person's index among all LFW names, far
#: above CFP's 1–500 so the two never collide.
LFW_IDENTITY_BASE = 100_000

SYNTHETIC_TARGETS = ("render", "photo")
SYNTHETIC_BACKGROUNDS = ("black", "fill")
SYNTHETIC_LANDMARKS = ("projected", "detected")


def build_synthetic_pack(items: Iterable[Tuple[str, int]], yaws: Sequence[float], manifest: dict, *,
                         model_path: Optional[str] = None, detector: str = "retinaface", progress: bool = True,
                         target: str = "render", background: str = "black",
                         max_source_yaw: Optional[float] = None, landmarks: str = "projected",
                         depth_scales: Sequence[float] = (1.0,)) -> Pack:
    """Pixel-exact pairs from real frontal photos ``(path, identity)``: each face is textured onto
    the 3D reference head (:mod:`pifr.geometry`) and rendered at every yaw in ``yaws`` (the
    inputs), all in one pairing group with its frontal target; crops and landmarks come from the
    renderer, so no detection runs on the renders and the yaw labels are exact.

    ``target``: ``"render"`` — the head rendered at 0° (face only, black around it);
    ``"photo"`` — the photo itself, aligned by its detected landmarks: the same pixels on the face
    (the texture was sampled from them) plus the real hair and background, so a generator trained
    on it does not learn to black out everything but the face.

    ``background`` of the rendered inputs: ``"black"`` as rendered, or ``"fill"`` — the colours at
    the face's edge spread outwards and blurred (:func:`pifr.geometry.fill_background`), so that a
    black surround does not tell the generator "this is a render" apart from a real profile.

    ``max_source_yaw`` (degrees): photos whose yaw (:mod:`pifr.pose`, 3DDFA) is turned further
    are skipped — the texture of a turned photo is half symmetry fill, and its "frontal" target is
    not frontal (LFW holds such photos; CFP's frontals are frontal by construction).

    ``landmarks`` that align each render: ``"projected"`` — the reference head's 5 points turned
    with it (exact, but where no detector puts them: the hidden eye behind the nose, the nose at
    the silhouette), or ``"detected"`` — the detector's, found on the render as on any photo, so
    renders are cropped exactly as real profiles are at inference (a render with no face found is
    skipped).

    ``depth_scales``: head shapes to render with (:func:`pifr.geometry.turned_view`), the k-th
    source photo on ``depth_scales[k % len]`` — one shape per person, so that the generator sees
    more than the reference head's one profile silhouette."""
    if target not in SYNTHETIC_TARGETS:
        raise ValueError(f"target must be one of {SYNTHETIC_TARGETS}, not {target!r}")
    if background not in SYNTHETIC_BACKGROUNDS:
        raise ValueError(f"background must be one of {SYNTHETIC_BACKGROUNDS}, not {background!r}")
    if landmarks not in SYNTHETIC_LANDMARKS:
        raise ValueError(f"landmarks must be one of {SYNTHETIC_LANDMARKS}, not {landmarks!r}")
    from ..detection import locate_face
    from ..errors import NoFaceError
    from ..geometry import fill_background, landmarks68, load_reference, render_texture, texture_from_photo, turned_view
    from ..pose import estimate_yaw_faces

    ref = load_reference(model_path)
    scales = [float(k) for k in depth_scales]
    if not scales or min(scales) <= 0:
        raise ValueError(f"depth_scales must be positive, not {depth_scales!r}")
    # The same for every face of a shape: computed once.
    views = {(k, y): turned_view(ref, y, depth_scale=k) for k in scales for y in yaws}
    items = list(items)
    it = items
    if progress:
        from tqdm import tqdm

        it = tqdm(items, desc="render", unit="face")
    blobs, lms, yaw_l, ids, fr, groups, srcs, skipped = [], [], [], [], [], [], [], []
    for g, (path, ident) in enumerate(it):
        try:
            img, face = locate_face(path, detector=detector, select="center", retry_min_score=None)
            # 3DDFA, not the 68-point fit: that fit reads CFP profiles as turned by under 10°.
            if max_source_yaw is not None:
                src_yaw = estimate_yaw_faces(img, [face])[0]
                if abs(src_yaw) > max_source_yaw:
                    skipped.append(f"{path}: source yaw {src_yaw:+.0f}")
                    continue
            tex, _, _ = texture_from_photo(img, landmarks68(img, face), ref)
        except Exception as e:  # noqa: BLE001 - one bad photo must not stop the pack
            skipped.append(f"{path}: {type(e).__name__}")
            continue
        for y in (0.0, *yaws):
            if y == 0 and target == "photo":
                crop, lm = align_with_landmarks(img, face.landmarks, TPGAN_128)
            else:
                r = render_texture(tex, ref, y, view=views.get((scales[g % len(scales)], y)))
                im = fill_background(r.image, r.mask) if background == "fill" and y != 0 else r.image
                pts = ref.landmarks5 if y == 0 else r.landmarks
                if landmarks == "detected" and y != 0:
                    try:
                        pts = locate_face(im, detector=detector, retry_min_score=0.5)[1].landmarks
                    except NoFaceError:
                        skipped.append(f"{path}@{y:+.0f}: no face found on the render")
                        continue
                crop, lm = align_with_landmarks(im, pts, TPGAN_128)
            blobs.append(np.frombuffer(_jpeg(crop), np.uint8))
            lms.append(lm)
            yaw_l.append(y)
            ids.append(ident)
            fr.append(y == 0)
            groups.append(g)
            srcs.append(f"{path}@{y:+.0f}")
    manifest = dict(manifest, images=len(blobs), skipped=len(skipped), skipped_examples=skipped[:20], yaws=list(yaws),
                    renderer="pifr.geometry (Hassner et al. 2015 reference head)", crop="pifr.alignment.TPGAN_128 (eyes_mouth rule)",
                    target=target, background=background, max_source_yaw=max_source_yaw, landmarks=landmarks,
                    depth_scales=scales)
    return Pack.from_records(blobs, lms, yaw_l, ids, fr, groups, srcs, manifest)


def cfp_items(cfp_dir: Path, identities: range) -> List[Tuple[str, int, bool, int]]:
    from ..eval.datasets import cfp_images

    return [(str(im.path), im.identity, im.pose == "frontal", -1) for im in cfp_images(cfp_dir, identities)]


def multipie_items(root: Path, setting: int, part: str = "train", target_illumination: int = 7) -> List[Tuple[str, int, bool, int]]:
    """Multi-PIE pairs as pack items: each (input, target) pair shares a group id so the pair
    dataset can pair pixel-aligned images exactly."""
    imgs = scan_multipie(root)
    split = multipie_split(imgs, setting)
    items, groups = [], {}
    for inp, tgt in multipie_pairs(imgs, split, part, target_illumination):
        g = groups.setdefault(str(tgt.path), len(groups))
        items.append((str(inp.path), inp.subject, inp.camera == FRONTAL_CAMERA and inp.illumination == target_illumination, g))
    for tpath, g in groups.items():
        m = MULTIPIE_NAME.match(Path(tpath).name)
        items.append((tpath, int(m.group(1)), True, g))
    return sorted(set(items))


def identity_range(s: str) -> Optional[range]:
    """``"351-400"`` → ``range(351, 401)``, ``"7"`` → ``range(7, 8)``, ``""`` → ``None`` (every identity)."""
    if not s:
        return None
    a, _, b = s.partition("-")
    return range(int(a), int(b or a) + 1)


class PairDataset:
    """(input, target) training pairs from a pack, as float tensors in [-1, 1].

    Pixel-aligned sources (group ≥ 0) pair each input with its group's frontal; identity-level
    sources pair each non-frontal input with every frontal of the same identity (and, with
    ``frontal_inputs``, frontals with the other frontals of that identity, so near-frontal faces
    are trained too). Inputs with negative yaw are mirrored (with their target) so all inputs
    face one side (positive yaw), as in the paper.

    Item: dict with ``input`` (3, 128, 128), ``target`` (3, 128, 128), ``input_lm`` and
    ``target_lm`` (5, 2) crop pixels, ``yaw`` (|yaw| after mirroring), ``identity`` (int, the
    identity's index in :attr:`identities`), ``aligned`` (1.0 when the target is pixel-aligned
    with the input — a render's or Multi-PIE's — and 0.0 when it is another photo of the person).
    With ``flows`` (needs the 3D reference head, ``model_path`` or the registry): ``flow``
    (128, 128, 2) — for each input pixel, the frontal-frame pixel (x, y) of the same point of the
    face (:func:`pifr.geometry.frontal_flow`) — and ``flow_valid`` (128, 128), 1.0 on the face
    surface (all 0 when the input's yaw is unknown).
    """

    def __init__(self, pack: Pack, identities: Optional[Iterable[int]] = None, frontal_inputs: bool = False,
                 max_targets_per_input: int = 10, flows: bool = False, model_path: Optional[str] = None) -> None:
        self.pack = pack
        self.flows, self.model_path = flows, model_path
        keep = np.ones(len(pack), bool) if identities is None else np.isin(pack.identity, list(identities))
        self.identities = sorted(set(pack.identity[keep].tolist()))
        self._id_index = {v: i for i, v in enumerate(self.identities)}
        self.pairs: List[Tuple[int, int]] = []
        group_target = {int(pack.group[i]): i for i in np.nonzero(keep & pack.frontal & (pack.group >= 0))[0]}
        frontals: Dict[int, List[int]] = {}
        # Identity-level targets are photos (group -1), never another source's renders.
        for i in np.nonzero(keep & pack.frontal & (pack.group < 0))[0]:
            frontals.setdefault(int(pack.identity[i]), []).append(int(i))
        for i in np.nonzero(keep)[0]:
            g = int(pack.group[i])
            if g >= 0:
                t = group_target.get(g)
                if t is not None and t != i:
                    self.pairs.append((int(i), t))
            elif not pack.frontal[i] or frontal_inputs:
                ts = [t for t in frontals.get(int(pack.identity[i]), []) if t != i][:max_targets_per_input]
                self.pairs.extend((int(i), t) for t in ts)
        self._cache: Dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def _img(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = self.pack.image(i)
        return self._cache[i]

    def __getitem__(self, k: int) -> dict:
        import torch

        i, t = self.pairs[k]
        x, xl = self._img(i), self.pack.landmarks[i]
        y, yl = self._img(t), self.pack.landmarks[t]
        yaw = float(self.pack.yaw[i])
        if yaw < 0:
            x, xl = mirror(x, xl)
            y, yl = mirror(y, yl)
            yaw = -yaw
        to_t = lambda a: torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 127.5 - 1  # noqa: E731
        item = {"input": to_t(x), "target": to_t(y), "input_lm": torch.from_numpy(np.array(xl, np.float32)),
                "target_lm": torch.from_numpy(np.array(yl, np.float32)), "yaw": yaw,
                "identity": self._id_index[int(self.pack.identity[i])], "aligned": float(self.pack.group[i] >= 0)}
        if self.flows:
            size = x.shape[0]
            if np.isfinite(yaw):
                from ..geometry import frontal_flow

                flow, valid = frontal_flow(np.asarray(xl, np.float64), yaw, model_path=self.model_path)
            else:
                flow, valid = np.zeros((size, size, 2), np.float32), np.zeros((size, size), bool)
            item["flow"] = torch.from_numpy(flow)
            item["flow_valid"] = torch.from_numpy(valid.astype(np.float32))
        return item
