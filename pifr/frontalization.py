"""Frontalization: a face at any yaw → the 128×128 frontal face (TP-GAN, Huang et al. ICCV 2017).

Data flow: image → face → TP-GAN aligned crop (mirrored so the face turns right, as in
training) → generator → frontal crop (mirrored back) → embedder. Generator weights come from
the registry (a shipped ``tpgan_*`` entry) or an explicit ``generator.safetensors`` written by
``pifr-train``.
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ._device import resolve_device
from .alignment import TPGAN_128, AlignmentTemplate, align_with_landmarks, mirror, similarity_transform
from .errors import WeightsFormatError, WeightsNotFoundError
from .image import ImageLike, load_image
from .types import Face

log = logging.getLogger("pifr")

#: Registry name of the shipped frontalizer, if any (see weights/manifest.json).
DEFAULT_FRONTALIZER = "tpgan_cfp"


@dataclass(frozen=True)
class Frontalized:
    """Result of :func:`frontalize`.

    Attributes:
        image: ``(128, 128, 3)`` uint8 RGB frontal face on the :data:`pifr.TPGAN_128` template.
        face: the input :class:`Face` (source-image pixels, with yaw).
        yaw: the input face's estimated yaw in degrees.
        generator: which weights produced it.
    """

    image: np.ndarray
    face: Face
    yaw: float
    generator: str


class Frontalizer:
    """A loaded TP-GAN generator. Build with :func:`get_frontalizer`."""

    def __init__(self, weights: Optional[Union[str, Path]] = None, device: Any = None) -> None:
        import torch
        from safetensors import safe_open

        from .models.tpgan import Generator

        if weights is None:
            from .weights import get_spec, resolve

            try:
                spec, path = resolve(get_spec(DEFAULT_FRONTALIZER))
            except Exception as e:
                raise WeightsNotFoundError(
                    "no TP-GAN frontalizer weights are installed yet; pass weights=<generator.safetensors> "
                    f"written by pifr-train ({e})") from e
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


@functools.lru_cache(maxsize=4)
def _cached(weights: Optional[str], device: str) -> Frontalizer:
    return Frontalizer(weights, device)


def get_frontalizer(weights: Optional[Union[str, Path]] = None, device: Any = None) -> Frontalizer:
    return _cached(None if weights is None else str(weights), str(resolve_device(device)))


def to_template(frontal: np.ndarray, template: AlignmentTemplate) -> np.ndarray:
    """Re-crop a frontal TP-GAN output onto another frontal template (e.g. an embedder's)."""
    import cv2

    m = similarity_transform(TPGAN_128.array, template.array)
    return cv2.warpAffine(frontal, m, (template.size, template.size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


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


def frontalize(img: Union[ImageLike, List[ImageLike]], *, method: str = "tpgan", face: Optional[Face] = None,
               weights: Optional[Union[str, Path]] = None, detector: Optional[str] = None,
               device: Any = None, batch_size: int = 32) -> Union[Frontalized, List[Union[Frontalized, Exception]]]:
    """Frontal view of the largest face in ``img`` (or of ``face``).

    Args:
        method: ``"tpgan"`` (the learned frontalizer; ``weights`` or the installed one) or ``"3d"``
            (classical 3D frontalization, Hassner et al. 2015; ``weights`` = path of
            ``model3Ddlib.mat``, else the registry's search path).
        batch_size: for a list, how many faces go through the generator in one forward pass.

    A list input returns a list with one :class:`Frontalized` or one exception per image (one
    bad image never stops the batch); faces are detected one image at a time and frontalized
    ``batch_size`` at a time.

    Raises:
        NoFaceError: no face found (single-image call).
        WeightsNotFoundError: no frontalizer weights installed and none given (also for a list:
            that is not one bad image).
    """
    from .errors import PifrError, UnknownModelError

    if method not in ("tpgan", "3d"):
        raise UnknownModelError(f"method must be 'tpgan' or '3d', got {method!r}")
    if method == "3d":
        from .geometry import frontalize_3d

        def one_3d(im: ImageLike, f: Optional[Face]) -> Frontalized:
            r = frontalize_3d(im, face=f, model_path=None if weights is None else str(weights), detector=detector)
            return Frontalized(image=r.image, face=r.face if r.face.yaw is not None else r.face.with_yaw(r.yaw),
                               yaw=float(r.face.yaw if r.face.yaw is not None else r.yaw), generator="hassner2015-3d")

        if not isinstance(img, list):
            return one_3d(img, face)
        out3: List[Union[Frontalized, Exception]] = []
        for one in img:
            try:
                out3.append(one_3d(one, None))
            except PifrError as e:
                out3.append(e)
        return out3
    fr = get_frontalizer(weights, device)
    if not isinstance(img, list):
        face, crop, lm = _tpgan_input(img, face, detector, device)
        image = fr.frontalize_crops(crop[None], lm[None], [face.yaw])[0]
        return Frontalized(image=image, face=face, yaw=float(face.yaw), generator=fr.name)
    out: List[Union[Frontalized, Exception, None]] = [None] * len(img)
    ready: List["tuple[int, Face, np.ndarray, np.ndarray]"] = []
    for i, one in enumerate(img):
        try:
            ready.append((i, *_tpgan_input(one, None, detector, device)))
        except PifrError as e:
            out[i] = e
    step = max(1, batch_size)
    for k in range(0, len(ready), step):
        chunk = ready[k:k + step]
        images = fr.frontalize_crops(np.stack([c for _, _, c, _ in chunk]), np.stack([l for _, _, _, l in chunk]),
                                     [f.yaw for _, f, _, _ in chunk])
        for (i, f, _, _), image in zip(chunk, images):
            out[i] = Frontalized(image=image, face=f, yaw=float(f.yaw), generator=fr.name)
    return out  # type: ignore[return-value]
