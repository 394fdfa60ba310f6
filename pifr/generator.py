"""A TP-GAN generator (Huang et al., ICCV 2017) loaded for inference: the seed's network, which
pifr can train (``pifr-train``) but does not ship. It is used only when a caller names a
``generator.safetensors`` file (``pifr.frontalize(method="tpgan", weights=...)``, or as the view
source of recognition, :mod:`pifr.views`).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from ._device import resolve_device
from .alignment import TPGAN_128, AlignmentTemplate, align_with_landmarks, mirror, warp_to_template
from .errors import WeightsFormatError, WeightsNotFoundError
from .image import ImageLike, load_image
from .types import Face


class Frontalizer:
    """A loaded TP-GAN generator. Build with :func:`get_frontalizer`."""

    def __init__(self, weights: Optional[Union[str, Path]] = None, device: Any = None) -> None:
        import torch
        from safetensors import safe_open

        from .models.tpgan import Generator

        if weights is None:
            from .weights import list_weights, resolve

            registered = list_weights("frontalizer")
            if not registered:
                raise WeightsNotFoundError("no TP-GAN frontalizer weights ship with pifr yet; pass "
                                           "weights=<generator.safetensors> written by pifr-train")
            # A missing or corrupt registered file raises its own WeightsError (checksum included).
            spec, path = resolve(registered[0])
            name = spec.name
        else:
            path, name = Path(weights), Path(weights).name
            if not path.is_file():
                raise WeightsNotFoundError(f"{path}: no such generator file")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
            config = json.loads(meta.get("config", "{}"))
            net = Generator.from_config(config)
        except Exception as e:  # noqa: BLE001 - a corrupt file is a format error for the caller
            raise WeightsFormatError(f"{path}: not a TP-GAN generator safetensors file ({e})") from e
        self.device = resolve_device(device)
        self.net = net
        try:
            missing, unexpected = self.net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise WeightsFormatError(f"{path}: does not fit a {net.config} generator ({e})") from e
        if missing or unexpected:
            raise WeightsFormatError(f"{path}: does not fit a {net.config} generator "
                                     f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
        self.net.eval().to(self.device)
        self.name, self.path = name, Path(path)
        self.metadata: Dict[str, str] = meta  # the file's own record: config, step, validation score
        self._torch = torch

    def frontalize_crops(self, crops: np.ndarray, landmarks: np.ndarray, yaws: Sequence[float]) -> np.ndarray:
        """``crops`` ``(N, 128, 128, 3)`` uint8 TP-GAN crops, ``landmarks`` ``(N, 5, 2)`` crop pixels,
        ``yaws`` degrees → ``(N, 128, 128, 3)`` uint8 frontal faces."""
        torch = self._torch
        xs, lms, flips = [], [], []
        for c, l, y in zip(crops, landmarks, yaws):
            flip = y < 0
            if flip:
                c, l = mirror(c, l)
            xs.append(c)
            lms.append(l)
            flips.append(flip)
        x = torch.from_numpy(np.stack(xs)).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        lm = torch.from_numpy(np.stack(lms).astype(np.float32)).to(self.device)
        with torch.inference_mode():
            noise = torch.zeros(len(xs), self.net.noise_dim, device=self.device)  # deterministic output
            out = self.net(x, lm, noise)["img128"]
        imgs = ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return np.stack([im[:, ::-1] if f else im for im, f in zip(imgs, flips)])


    def frontal_crop(self, arr: np.ndarray, face: Face, template: AlignmentTemplate) -> np.ndarray:
        """``(S, S, 3)`` uint8 generator output for ``face`` in ``arr``, re-cropped onto ``template``."""
        crop, lm = align_with_landmarks(arr, face, TPGAN_128)
        return warp_to_template(self.frontalize_crops(crop[None], lm[None], [face.yaw or 0.0])[0], TPGAN_128, template)


@functools.lru_cache(maxsize=4)
def _cached(weights: Optional[str], device: str) -> Frontalizer:
    return Frontalizer(weights, device)


def get_frontalizer(weights: Optional[Union[str, Path]] = None, device: Any = None) -> Frontalizer:
    return _cached(None if weights is None else str(weights), str(resolve_device(device)))


def _tpgan_input(img: ImageLike, face: Optional[Face], detector: Optional[str], device: Any
                 ) -> "tuple[Face, np.ndarray, np.ndarray]":
    """image → (face with yaw, ``(128, 128, 3)`` TP-GAN crop, ``(5, 2)`` crop landmarks)."""
    from .detection import detect_one

    arr = load_image(img)
    face = face or detect_one(arr, detector=detector, device=device, purpose=" to frontalize")
    if face.yaw is None:
        from .pose import estimate_yaw_faces

        face = face.with_yaw(estimate_yaw_faces(arr, [face], device=device)[0])
    crop, lm = align_with_landmarks(arr, face, TPGAN_128)
    return face, crop, lm


