"""Head yaw in degrees. Convention: 0 = frontal, positive when the face turns towards the
image's right (the subject looks to their own left), ±90 = full profile.

Methods: ``"3ddfa"`` — the 3DDFA_V2 MobileNet regressor (Guo et al., ECCV 2020) on the
face box; ``"landmarks"`` — geometry of the 5 landmarks (nose offset from the eye midpoint
against the inter-eye half-distance), a fallback that needs no network.

The verb :func:`pifr.estimate_yaw` (image in, detection included) lives in
:mod:`pifr.detection`, which uses this module; this module never imports detection.
"""
from __future__ import annotations

import functools
import math
from typing import Any, List, Sequence

import numpy as np

from ._device import resolve_device
from .errors import UnknownModelError
from .types import Face

#: Nose-tip depth in front of the eye line, in units of half the inter-eye distance (a mean-face ratio).
NOSE_DEPTH_RATIO = 1.1


def yaw_from_landmarks(landmarks: np.ndarray) -> float:
    """Yaw (degrees) from 5 landmarks: ``atan2(nose offset / depth, half inter-eye distance)``."""
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    le, re, nose = lm[0], lm[1], lm[2]
    axis = re - le
    half = np.linalg.norm(axis) / 2
    if half < 1e-6:
        return 90.0 * float(np.sign(nose[0] - le[0]) or 1.0)
    u = axis / (2 * half)
    offset = float(np.dot(nose - (le + re) / 2, u))
    return math.degrees(math.atan2(offset / NOSE_DEPTH_RATIO, half))


@functools.lru_cache(maxsize=4)
def pose_network(device: Any = None) -> Any:
    """The 3DDFA_V2 MobileNet (``tddfa_mb05``) that :func:`estimate_yaw_faces` reads yaw with, in
    eval mode on ``device``; loaded once per device and shared (the trainer's pose term uses it).
    Input ``(B, 3, 120, 120)`` BGR in [0, 255] on 3DDFA's ROI; output ``(B, 62)`` parameters."""
    from .models.tddfa import TDDFAMobileNet
    from .weights import load_into

    net = TDDFAMobileNet()
    load_into(net, "tddfa_mb05")
    return net.eval().to(resolve_device(device))


def roi_crop(img: np.ndarray, box: Sequence[float], size: int) -> np.ndarray:
    """``(size, size, 3)`` crop of ``img`` over the square ``box`` (x1, y1, x2, y2), black outside."""
    import cv2

    x1, y1, x2, y2 = box
    s = size / (x2 - x1)
    m = np.array([[s, 0, -x1 * s], [0, s, -y1 * s]], np.float64)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def regress_faces(items: Sequence["tuple[np.ndarray, Face]"], device: Any = None, batch_size: int = 128) -> np.ndarray:
    """3DDFA_V2's ``(N, 62)`` float32 parameters for each ``(image (H, W, 3) uint8 RGB, face)`` of
    ``items``, read on 3DDFA's ROI around each face box, ``batch_size`` faces a network pass
    (faces of many images share a pass). Yaw (:func:`yaw_from_params`) and the 3D fit
    (:func:`pifr.face3d.fit_from_params`) are both read from these."""
    if not items:
        return np.zeros((0, 62), np.float32)
    import torch

    from .models.tddfa import roi_from_bbox

    net = pose_network(device)
    dev = next(net.parameters()).device
    out = []
    for k in range(0, len(items), max(1, batch_size)):
        crops = np.stack([roi_crop(img[..., ::-1], roi_from_bbox(f.bbox), 120) for img, f in items[k:k + batch_size]])  # BGR contract
        with torch.inference_mode():
            out.append(net(torch.from_numpy(crops).to(dev).permute(0, 3, 1, 2).float()).cpu().numpy())
    return np.concatenate(out)


def yaw_from_params(params: np.ndarray) -> float:
    """Yaw (degrees, pifr's convention) from 3DDFA_V2's 62 parameters."""
    from .models.tddfa import pose_from_params

    # 3DDFA's yaw is positive when the face turns to the image's left: flip to pifr's convention.
    return -pose_from_params(params)[0]


def estimate_yaw_faces(img: np.ndarray, faces: Sequence[Face], method: str = "3ddfa", device: Any = None) -> List[float]:
    """Yaw of each face in ``img`` (``(H, W, 3)`` uint8 RGB), batched."""
    if method == "landmarks":
        return [yaw_from_landmarks(f.landmarks) for f in faces]
    if method != "3ddfa":
        raise UnknownModelError(f"unknown yaw method {method!r}; use '3ddfa' or 'landmarks'")
    return [yaw_from_params(p) for p in regress_faces([(img, f) for f in faces], device)]
