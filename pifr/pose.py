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


def estimate_yaw_faces(img: np.ndarray, faces: Sequence[Face], method: str = "3ddfa", device: Any = None) -> List[float]:
    """Yaw of each face in ``img`` (``(H, W, 3)`` uint8 RGB), batched."""
    if method == "landmarks":
        return [yaw_from_landmarks(f.landmarks) for f in faces]
    if method != "3ddfa":
        raise UnknownModelError(f"unknown yaw method {method!r}; use '3ddfa' or 'landmarks'")
    if not faces:
        return []
    import torch

    from .models.tddfa import pose_from_params, roi_from_bbox

    net = pose_network(device)
    crops = np.stack([roi_crop(img[..., ::-1], roi_from_bbox(f.bbox), 120) for f in faces])  # BGR contract
    x = torch.from_numpy(crops).to(next(net.parameters()).device).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        params = net(x).cpu().numpy()
    # 3DDFA's yaw is positive when the face turns to the image's left: flip to pifr's convention.
    return [-pose_from_params(p)[0] for p in params]
