"""The refiner's training pairs: rotate-and-render packs read into batches, validation people
held out by a hash of their names, and an in-memory cache of decoded pairs (:mod:`pifr.train.refine`)."""
from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .render_pairs import RenderPairPack

log = logging.getLogger("pifr")

#: iBUG 68-point index of each point's mirror image (left eye ↔ right eye, jaw reversed, …).
FLIP_68 = np.array(list(range(16, -1, -1)) + list(range(26, 21, -1)) + list(range(21, 16, -1)) + list(range(27, 31)) + list(range(35, 30, -1))
                   + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40] + list(range(54, 47, -1))
                   + list(range(59, 54, -1)) + list(range(64, 59, -1)) + list(range(67, 64, -1)))
#: One person in this many (by a hash of the name) is held out for validation.
VAL_EVERY = 20


def person(source: str) -> str:
    """The person a pack photo shows: LFW ``Name/Name_0001.jpg`` → ``Name``; CFP
    ``Data/Images/001/frontal/01.jpg`` → ``cfp:001``."""
    parts = Path(source).parts
    if len(parts) >= 3 and parts[0] == "Data" and parts[1] == "Images":
        return f"cfp:{parts[2]}"
    return parts[0]


def is_validation(name: str) -> bool:
    return zlib.crc32(name.encode()) % VAL_EVERY == 0


class RefinePairs:
    """Pairs of one or more packs, split by person into ``"train"`` or ``"val"``."""

    def __init__(self, packs: Sequence[RenderPairPack], part: str) -> None:
        if part not in ("train", "val"):
            raise ValueError(f"part must be 'train' or 'val', got {part!r}")
        self.packs = list(packs)
        self.index: List[Tuple[int, int]] = []
        for k, p in enumerate(self.packs):
            val = np.array([is_validation(person(str(s))) for s in p.sources])
            for i in range(len(p)):
                if val[p.photo[i]] == (part == "val"):
                    self.index.append((k, i))

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, items: Sequence[int], flips: Optional[Sequence[bool]] = None) -> Dict[str, torch.Tensor]:
        """``render``/``target`` ``(B, 3, 128, 128)`` in [-1, 1], ``mask`` ``(B, 1, 128, 128)``,
        ``face`` ``(B, 1, 128, 128)`` (the mask plus the hull of the jaw and brows: where the
        photo shows face, rendered or not), ``landmarks`` ``(B, 68, 2)`` crop px; ``flips``:
        mirror those samples."""
        import cv2

        rs, ms, ts, ls, fs, ys = [], [], [], [], [], []
        for j, k in enumerate(items):
            pk, i = self.index[k]
            inp, mask, tgt, lm = self.packs[pk].pair(i)
            ys.append(float(self.packs[pk].yaw[self.packs[pk].photo[i]]) * (-1 if flips is not None and flips[j] else 1))
            lm = lm.astype(np.float32)
            if flips is not None and flips[j]:
                inp, mask, tgt = inp[:, ::-1], mask[:, ::-1], tgt[:, ::-1]
                lm = lm[FLIP_68] * np.array([-1, 1], np.float32) + np.array([128, 0], np.float32)
            hull = np.zeros((128, 128), np.uint8)
            cv2.fillConvexPoly(hull, cv2.convexHull(np.round(lm[:27]).astype(np.int32)), 1)
            fs.append(mask | (hull > 0))
            rs.append(inp)
            ms.append(mask)
            ts.append(tgt)
            ls.append(lm)

        def img(a: List[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(np.stack(a))).permute(0, 3, 1, 2).float() / 127.5 - 1

        def bits(a: List[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(np.stack(a)[:, None]).astype(np.float32))

        return {"render": img(rs), "target": img(ts), "mask": bits(ms), "face": bits(fs), "landmarks": torch.from_numpy(np.stack(ls)),
                "yaw": torch.tensor(ys, dtype=torch.float32)}


class PairCache:
    """Every pair of a :class:`RefinePairs` decoded once into uint8/bool tensors on ``device``, so a
    step only indexes (on a GPU the JPEG decoding of each batch would otherwise be the bottleneck).
    :meth:`batch` returns exactly what ``RefinePairs.batch`` does for the same items and flips.

    Memory: ~81 KB per pair (render, mask, both faces) + 49 KB per photo — 0.6 GB for 4,800 pairs of 2,400 photos."""

    def __init__(self, pairs: RefinePairs, device: torch.device) -> None:
        import cv2

        photos: Dict[Tuple[int, int], int] = {}
        renders, masks, faces, faces_f, targets, lms, yaws, which = [], [], [], [], [], [], [], []
        for pk, i in pairs.index:
            pack = pairs.packs[pk]
            inp, mask, tgt, lm = pack.pair(i)
            key = (pk, int(pack.photo[i]))
            if key not in photos:
                photos[key] = len(targets)
                targets.append(tgt)
                lms.append(lm.astype(np.float32))
                yaws.append(float(pack.yaw[key[1]]))
            which.append(photos[key])
            renders.append(inp)
            masks.append(mask)
            lm = lm.astype(np.float32)
            for flip, out in ((False, faces), (True, faces_f)):
                pts = lm[FLIP_68] * np.array([-1, 1], np.float32) + np.array([128, 0], np.float32) if flip else lm
                hull = np.zeros((128, 128), np.uint8)
                cv2.fillConvexPoly(hull, cv2.convexHull(np.round(pts[:27]).astype(np.int32)), 1)
                out.append((mask[:, ::-1] if flip else mask) | (hull > 0))
        to = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a))).to(device)  # noqa: E731
        self.render, self.target = to(renders).permute(0, 3, 1, 2), to(targets).permute(0, 3, 1, 2)
        self.mask, self.face, self.face_flipped = to(masks), to(faces), to(faces_f)
        self.landmarks, self.yaw = to(lms), to(yaws).float()
        self.photo = torch.tensor(which, dtype=torch.long, device=device)
        self.flip_68 = torch.from_numpy(FLIP_68).to(device)

    def __len__(self) -> int:
        return len(self.photo)

    def batch(self, items: Sequence[int], flips: Optional[Sequence[bool]] = None) -> Dict[str, torch.Tensor]:
        dev = self.render.device
        idx = torch.as_tensor(list(items), dtype=torch.long, device=dev)
        f = torch.as_tensor(list(flips) if flips is not None else [False] * len(idx), dtype=torch.bool, device=dev)
        ph = self.photo[idx]
        fi = f[:, None, None, None]

        def img(x: torch.Tensor) -> torch.Tensor:
            x = torch.where(fi, x.flip(3), x)
            return x.float() / 127.5 - 1

        mask = self.mask[idx][:, None]
        face = torch.where(f[:, None, None], self.face_flipped[idx], self.face[idx])[:, None]
        lm = self.landmarks[ph]
        lm_f = lm[:, self.flip_68] * lm.new_tensor([-1.0, 1.0]) + lm.new_tensor([128.0, 0.0])
        return {"render": img(self.render[idx]), "target": img(self.target[ph]), "mask": torch.where(fi, mask.flip(3), mask).float(),
                "face": face.float(), "landmarks": torch.where(f[:, None, None], lm_f, lm),
                "yaw": torch.where(f, -self.yaw[ph], self.yaw[ph])}


