"""Frontalization: a face at any yaw → the 128×128 frontal face (TP-GAN, Huang et al. ICCV 2017),
and the pose policy that decides when recognition uses it.

Data flow: image → face → TP-GAN aligned crop (mirrored so the face turns right, as in
training) → generator → frontal crop (mirrored back) → embedder. Generator weights come from
the registry (an entry of task ``"frontalizer"`` in ``weights/manifest.json``; none ships yet)
or an explicit ``generator.safetensors`` written by ``pifr-train``.

The policy (:data:`FRONTALIZE_MODES`, :func:`validate_policy`, :func:`embed_face_policy`) is
shared by :func:`pifr.verify`, :func:`pifr.embed`, :class:`pifr.Gallery` and the CLI, so all
of them take the same mode, yaw threshold and fusion weight and reject the same bad values.
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
from .errors import InvalidPolicyError, PifrError, UnknownModelError, WeightsFormatError, WeightsNotFoundError
from .image import ImageLike, load_image
from .types import Face

log = logging.getLogger("pifr")

# ----------------------------------------------------------------------------- pose policy

#: ``"never"``: raw embeddings; ``"always"``: the frontalized face's embedding alone; ``"auto"``:
#: faces with |yaw| above the threshold are embedded raw and frontalized, fused.
FRONTALIZE_MODES = ("never", "always", "auto")
# The "auto" rule, chosen on CFP 351-400 (tuning split) by `python benchmarks/frontalization.py
# --generator G --no-3d` over |yaw| > 30/45/60 and w = 0.25/0.5/0.75/1, best rank-1 + FP accuracy,
# for the first generator benchmarked (width 0.25, 2,000 CPU steps; research/LOG.md):
#   dlib_resnet  raw 72.5 % rank-1 / 88.71 % FP acc; frontalized only 60.5 / 83.86;
#                |yaw| > 45, w = 0.25: 73.0 / 89.71 (chosen; MobileFaceNet's best was |yaw| > 30,
#                w = 0.25: 67.0 / 86.14 against raw 69.0 / 87.14).
# No generator helps yet, which is why verify() defaults to frontalize="never"; a small w keeps
# "auto" close to raw until one does.
#: |yaw| above which ``frontalize="auto"`` sends a face through the frontalizer (degrees).
AUTO_YAW_THRESHOLD = 45.0
#: Weight of the frontalized embedding in ``frontalize="auto"``: a face above the yaw threshold is
#: embedded as normalise((1 − w)·raw + w·frontalized); 1 means "frontalized only".
AUTO_FUSION_WEIGHT = 0.25


def validate_policy(frontalize: Any, yaw_threshold: Any = AUTO_YAW_THRESHOLD,
                    fusion_weight: Any = AUTO_FUSION_WEIGHT) -> "tuple[str, float, float]":
    """Check a frontalization policy; returns ``(mode, yaw_threshold, fusion_weight)`` as
    ``(str, float, float)``.

    ``frontalize`` must be one of :data:`FRONTALIZE_MODES` exactly (``"Auto"`` is refused: a
    near-miss would otherwise fall through to raw embeddings unnoticed); ``yaw_threshold`` is in
    degrees, 0–90; ``fusion_weight`` in [0, 1].

    Raises:
        InvalidPolicyError: (also a ``ValueError``) any of the three is invalid.
    """
    if not isinstance(frontalize, str) or frontalize not in FRONTALIZE_MODES:
        raise InvalidPolicyError(f"frontalize must be one of {FRONTALIZE_MODES}, got {frontalize!r}")
    out = []
    for name, value, lo, hi in (("yaw_threshold", yaw_threshold, 0.0, 90.0), ("fusion_weight", fusion_weight, 0.0, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidPolicyError(f"{name} must be a number, got {value!r}")
        if not lo <= float(value) <= hi:  # NaN fails too
            raise InvalidPolicyError(f"{name} must lie in [{lo:g}, {hi:g}], got {value!r}")
        out.append(float(value))
    return frontalize, out[0], out[1]


def fuse_embeddings(raw: np.ndarray, frontalized: np.ndarray, weight: float) -> np.ndarray:
    """normalise((1 − weight)·raw + weight·frontalized) for unit ``(dim,)`` vectors; weight 1 is
    the frontalized embedding alone."""
    if weight >= 1.0:
        return frontalized
    v = (1.0 - weight) * raw + weight * frontalized
    return (v / np.linalg.norm(v)).astype(np.float32)


def embed_face_policy(arr: np.ndarray, face: Face, emb: Any, frontalize: str, frontalizer: Any,
                      yaw_threshold: float = AUTO_YAW_THRESHOLD,
                      fusion_weight: float = AUTO_FUSION_WEIGHT) -> "tuple[np.ndarray, bool]":
    """Embedding of ``face`` in ``arr`` (``(H, W, 3)`` uint8 RGB) by ``emb`` (an
    :class:`pifr.embedders.Embedder`) under the policy; returns ``(unit (dim,) vector, frontalized?)``.

    ``"always"`` embeds the frontalized face alone; ``"auto"`` frontalizes faces with
    |yaw| > ``yaw_threshold`` and fuses: normalise((1 − w)·raw + w·frontalized). For a probe
    against fixed gallery vectors, that ranks exactly like the score fusion
    (1 − w)·cos(raw, g) + w·cos(frontalized, g). ``frontalizer`` (a :class:`Frontalizer`) may be
    ``None`` for ``"never"``.

    Raises:
        InvalidPolicyError: the policy is invalid (see :func:`validate_policy`).
    """
    frontalize, yaw_threshold, w = validate_policy(frontalize, yaw_threshold, fusion_weight)
    use = frontalize == "always" or (frontalize == "auto" and face.yaw is not None and abs(face.yaw) > yaw_threshold)
    if frontalize == "always":
        w = 1.0
    if not use:
        return emb.embed_crops(emb.align(arr, face)[None])[0], False
    crop, lm = align_with_landmarks(arr, face, TPGAN_128)
    frontal = frontalizer.frontalize_crops(crop[None], lm[None], [face.yaw or 0.0])[0]
    v = emb.embed_crops(to_template(frontal, emb.template)[None])[0]
    if w < 1.0:
        v = fuse_embeddings(emb.embed_crops(emb.align(arr, face)[None])[0], v, w)
    return v, True


# ----------------------------------------------------------------------------- the generator


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


#: What :func:`frontalize` can use: the learned TP-GAN generator, or classical 3D frontalization.
FRONTALIZE_METHODS = ("tpgan", "3d")


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
    if method not in FRONTALIZE_METHODS:
        raise UnknownModelError(f"method must be one of {FRONTALIZE_METHODS}, got {method!r}")
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
