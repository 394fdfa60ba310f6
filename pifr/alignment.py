"""Face alignment: warp a detected face onto a canonical 5-point template.

The canonical templates are public constants. Landmark order everywhere in pifr:
eye on the image's left, eye on the image's right, nose tip, mouth corner on the
image's left, mouth corner on the image's right; ``(x, y)`` in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from .errors import ShapeError, UnknownModelError
from .types import Face


@dataclass(frozen=True)
class AlignmentTemplate:
    """A canonical crop: output ``size`` (square, px) and where the 5 landmarks land.

    ``method`` is how the warp is fitted:
      * ``"similarity"`` — least-squares similarity (rotation, uniform scale, shift) on all 5 points.
      * ``"eyes_mouth"`` — TP-GAN's rule: rotate the eye line level, scale so the vertical
        eye-midpoint → mouth-midpoint distance equals the template's, put the eye midpoint at
        the template's. It ignores the inter-eye distance, which foreshortens with yaw, so
        profiles keep their true scale. When the eyes all but meet (past ~70° of yaw) the eye
        line says nothing of the roll, and eye→mouth is made vertical instead.
    """

    name: str
    size: int
    points: tuple  # 5 (x, y) pairs
    method: str = "similarity"

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.points, dtype=np.float64)


#: TP-GAN input crop (Huang et al. 2017): eye line at y≈40, eye→mouth 48 px; the mean frontal positions.
TPGAN_128 = AlignmentTemplate(
    "tpgan_128", 128,
    ((43.6, 41.0), (86.4, 41.0), (64.1, 64.8), (47.6, 88.9), (82.6, 89.1)),
    method="eyes_mouth",
)
#: The ArcFace / InsightFace 112×112 template used by MobileFaceNet and most margin-loss recognisers.
ARCFACE_112 = AlignmentTemplate(
    "arcface_112", 112,
    ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)),
)
#: dlib's 150×150 face chip with padding 0.25, expressed in our 5 points: eye centres, nose
#: tip and mouth corners taken from dlib's mean 68-point face shape (get_face_chip_details).
DLIB_150 = AlignmentTemplate(
    "dlib_150", 150,
    ((47.549, 46.599), (100.476, 46.599), (74.013, 76.562), (50.415, 103.023), (97.610, 103.023)),
)

TEMPLATES = {t.name: t for t in (TPGAN_128, ARCFACE_112, DLIB_150)}


def get_template(template: Union[str, AlignmentTemplate]) -> AlignmentTemplate:
    if isinstance(template, AlignmentTemplate):
        return template
    try:
        return TEMPLATES[template]
    except KeyError:
        raise UnknownModelError(f"unknown template {template!r}; known: {sorted(TEMPLATES)}") from None


def check_crops(crops: np.ndarray, template: AlignmentTemplate, who: str) -> np.ndarray:
    """``crops`` as an ``(N, S, S, 3)`` array for ``template`` (a single ``(S, S, 3)`` crop gains the
    batch axis). Raises :class:`ShapeError` naming ``who`` otherwise."""
    crops = np.asarray(crops)
    s = template.size
    if crops.ndim == 3:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[1:] != (s, s, 3):
        raise ShapeError(f"{who} expects crops of shape (N, {s}, {s}, 3), got {crops.shape}")
    return crops


def template_transform(src: AlignmentTemplate, dst: AlignmentTemplate) -> np.ndarray:
    """``(2, 3)`` similarity taking pixels of a crop on ``src`` to the same face on ``dst`` (the
    least-squares map between the two templates' 5 points)."""
    return similarity_transform(src.array, dst.array)


def warp_to_template(img: np.ndarray, src: AlignmentTemplate, dst: AlignmentTemplate, nearest: bool = False) -> np.ndarray:
    """A crop on ``src`` (``(S, S[, C])``) re-cropped onto ``dst`` by :func:`template_transform`;
    black (0) where ``src`` has no pixels. ``nearest``: nearest-neighbour (for masks)."""
    import cv2

    return cv2.warpAffine(img, template_transform(src, dst), (dst.size, dst.size),
                          flags=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _as_landmarks(face_or_landmarks: Union[Face, np.ndarray]) -> np.ndarray:
    lm = face_or_landmarks.landmarks if isinstance(face_or_landmarks, Face) else face_or_landmarks
    lm = np.asarray(lm, dtype=np.float64)
    if lm.shape != (5, 2):
        raise ShapeError(f"landmarks must have shape (5, 2), got {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise ShapeError("landmarks contain NaN or infinite values")
    return lm


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping ``src`` points onto ``dst`` (Umeyama 1991).

    Args:
        src, dst: ``(N, 2)`` point sets, N ≥ 2.
    Returns:
        ``(2, 3)`` float64 affine matrix M with ``dst ≈ M @ [x, y, 1]``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s < 1e-12:
        raise ShapeError("landmarks are degenerate (all points coincide)")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


#: Inter-eye / eye→mouth distance ratios between which :func:`eyes_mouth_transform` goes over
#: from the eye line (above; ~0.9 frontal, ~0.45 at 60° yaw) to the eye→mouth direction (below).
PROFILE_EYE_RATIO = (0.15, 0.35)


def eyes_mouth_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """TP-GAN's alignment rule as a ``(2, 3)`` matrix (see :class:`AlignmentTemplate`)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    eye_s, mouth_s = src[:2].mean(0), src[3:].mean(0)
    eye_d, mouth_d = dst[:2].mean(0), dst[3:].mean(0)
    eyes, down = src[1] - src[0], mouth_s - eye_s
    angle = np.arctan2(eyes[1], eyes[0])
    # Past ~70° of yaw a detector puts both eyes within a few pixels of each other, and the eye
    # line's direction is noise (a sideways or upside-down crop). There the face is levelled by
    # making eye→mouth vertical instead, blended in as the eyes close up.
    ratio = np.hypot(*eyes) / max(np.hypot(*down), 1e-6)
    w = float(np.clip((ratio - PROFILE_EYE_RATIO[0]) / (PROFILE_EYE_RATIO[1] - PROFILE_EYE_RATIO[0]), 0.0, 1.0))
    if w < 1.0:
        a_down = np.arctan2(down[1], down[0]) - np.pi / 2
        angle = np.arctan2(w * np.sin(angle) + (1 - w) * np.sin(a_down), w * np.cos(angle) + (1 - w) * np.cos(a_down))
    c, s = np.cos(-angle), np.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    # Vertical eye→mouth distance after levelling the eyes.
    v = rot @ (mouth_s - eye_s)
    span = v[1] if v[1] > 1e-6 else np.hypot(*v)
    if span < 1e-6:
        raise ShapeError("landmarks are degenerate (eyes and mouth coincide)")
    scale = (mouth_d[1] - eye_d[1]) / span
    a = scale * rot
    t = eye_d - a @ eye_s
    return np.hstack([a, t[:, None]])


def estimate_transform(landmarks: np.ndarray, template: Union[str, AlignmentTemplate]) -> np.ndarray:
    """The ``(2, 3)`` matrix that :func:`align` applies (image px → crop px)."""
    t = get_template(template)
    lm = _as_landmarks(landmarks)
    if t.method == "eyes_mouth":
        return eyes_mouth_transform(lm, t.array)
    return similarity_transform(lm, t.array)


def align(img: np.ndarray, face: Union[Face, np.ndarray], template: Union[str, AlignmentTemplate] = TPGAN_128) -> np.ndarray:
    """Warp ``img`` so the face's landmarks land on ``template``.

    Args:
        img: ``(H, W, 3)`` uint8 RGB (see :func:`pifr.load_image`).
        face: a :class:`Face` or its ``(5, 2)`` landmarks in ``img`` pixels.
        template: an :class:`AlignmentTemplate` or its name (``"tpgan_128"``, ``"arcface_112"``, ``"dlib_150"``).

    Returns:
        ``(size, size, 3)`` uint8 RGB crop; pixels outside the source are black.
    """
    return align_with_landmarks(img, face, template)[0]


def align_with_landmarks(img: np.ndarray, face: Union[Face, np.ndarray],
                         template: Union[str, AlignmentTemplate] = TPGAN_128) -> "tuple[np.ndarray, np.ndarray]":
    """Like :func:`align`, also returning the face's ``(5, 2)`` landmarks in crop pixels."""
    import cv2

    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        raise ShapeError(f"img must be an (H, W, 3) array, got {getattr(img, 'shape', type(img))}")
    t = get_template(template)
    lm = _as_landmarks(face)
    m = estimate_transform(lm, t)
    crop = cv2.warpAffine(img, m, (t.size, t.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, transform_points(lm, m).astype(np.float32)


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to ``(N, 2)`` points."""
    p = np.asarray(points, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def mirror(crop: np.ndarray, landmarks: np.ndarray) -> "tuple[np.ndarray, np.ndarray]":
    """Horizontal flip of an aligned crop and its ``(5, 2)`` landmarks (crop pixels), keeping pifr's
    landmark order (index 0 = the eye on the image's left)."""
    lm = np.array(landmarks, dtype=np.float32).copy()
    lm[:, 0] = crop.shape[1] - 1 - lm[:, 0]
    return np.ascontiguousarray(crop[:, ::-1]), lm[[1, 0, 2, 4, 3]]
