"""Face detection: image → list of :class:`~pifr.types.Face` (box, score, 5 landmarks, yaw).

Detectors: ``"mtcnn"`` (facenet-pytorch; weights ship in its wheel) and ``"retinaface"``
(RetinaFace-MobileNet0.25, weights in ``weights/``). ``DEFAULT_DETECTOR`` is the one that
found more faces on CFP profiles and frontals (see ``benchmarks/detection.py`` and docs/).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._device import resolve_device
from .errors import DependencyError, NoFaceError, UnknownModelError
from .image import ImageLike, load_image
from .pose import estimate_yaw_faces
from .types import Face

log = logging.getLogger("pifr")

DEFAULT_DETECTOR = "retinaface"
#: Longest image side fed to RetinaFace; larger images are downscaled first (speed), boxes mapped back.
RETINAFACE_MAX_SIDE = 1024


def _nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> List[int]:
    order = scores.argsort()[::-1]
    keep: List[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (area[i] + area[order[1:]] - inter + 1e-9)
        order = order[1:][iou <= thr]
    return keep


class RetinaFaceDetector:
    name = "retinaface"

    def __init__(self, device: Any = None, weights: Optional[str] = None) -> None:
        import torch

        from .models.retinaface import RetinaFace
        from .weights import load_into

        self.device = resolve_device(device)
        self.net = RetinaFace()
        load_into(self.net, "retinaface_mnet025", weights)
        self.net.eval().to(self.device)
        self._torch = torch

    def __call__(self, img: np.ndarray, min_score: float = 0.8) -> List[Face]:
        return self.detect_many([img], min_score)[0]

    def detect_many(self, imgs: Sequence[np.ndarray], min_score: float = 0.8, batch_size: int = 16) -> List[List[Face]]:
        """Faces of each ``(H, W, 3)`` uint8 RGB image (unsorted); images of one size after the
        downscale to :data:`RETINAFACE_MAX_SIDE` share a network pass, ``batch_size`` at a time."""
        import cv2

        from .models.retinaface import BGR_MEAN, priors

        torch = self._torch
        scaled, groups = [], {}
        for i, img in enumerate(imgs):
            h0, w0 = img.shape[:2]
            scale = min(1.0, RETINAFACE_MAX_SIDE / max(h0, w0))
            x = cv2.resize(img, (round(w0 * scale), round(h0 * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else img
            scaled.append((x, scale))
            groups.setdefault(x.shape[:2], []).append(i)
        out: List[List[Face]] = [[] for _ in imgs]
        mean = torch.tensor(BGR_MEAN, device=self.device)
        for (h, w), idx in groups.items():
            pri = priors(h, w, self.device)
            for k in range(0, len(idx), max(1, batch_size)):
                chunk = idx[k:k + batch_size]
                t = torch.from_numpy(np.stack([np.ascontiguousarray(scaled[i][0][..., ::-1]) for i in chunk])).to(self.device)
                with torch.inference_mode():
                    loc, conf, ldm = self.net((t.float() - mean).permute(0, 3, 1, 2))
                for j, i in enumerate(chunk):
                    out[i] = self._faces(loc[j], conf[j], ldm[j], pri, w, h, scaled[i][1], min_score)
        return out

    def _faces(self, loc: Any, conf: Any, ldm: Any, pri: Any, w: int, h: int, scale: float, min_score: float) -> List[Face]:
        from .models.retinaface import decode

        with self._torch.inference_mode():
            boxes, lms = decode(loc, ldm, pri)
        conf = conf.cpu().numpy()
        keep = conf >= min_score
        if not keep.any():
            return []
        wh = np.array([w, h], np.float32) / scale
        boxes = boxes.cpu().numpy()[keep] * np.tile(wh, 2)
        lms = lms.cpu().numpy()[keep] * wh
        conf = conf[keep]
        idx = _nms(boxes, conf, 0.4)
        return [Face(boxes[i], float(conf[i]), lms[i], None, self.name) for i in idx]


class MTCNNDetector:
    name = "mtcnn"

    def __init__(self, device: Any = None) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise DependencyError("the 'mtcnn' detector needs facenet-pytorch==2.5.3 (pip install facenet-pytorch==2.5.3)") from e
        self.device = resolve_device(device)
        self.net = MTCNN(keep_all=True, device=self.device, select_largest=False, post_process=False)

    def __call__(self, img: np.ndarray, min_score: float = 0.9) -> List[Face]:
        boxes, probs, points = self.net.detect(img, landmarks=True)
        if boxes is None:
            return []
        return [
            Face(b, float(p), pts, None, self.name)
            for b, p, pts in zip(boxes, probs, points)
            if p is not None and p >= min_score
        ]

    def detect_many(self, imgs: Sequence[np.ndarray], min_score: float = 0.9, batch_size: int = 16) -> List[List[Face]]:
        """Faces of each image, one image at a time (MTCNN's cascade does not batch images)."""
        return [self(img, min_score) for img in imgs]


_FACTORIES: Dict[str, Callable[..., Any]] = {"retinaface": RetinaFaceDetector, "mtcnn": MTCNNDetector}


@functools.lru_cache(maxsize=8)
def get_detector(name: str = DEFAULT_DETECTOR, device: Any = None) -> Any:
    """The detector ``name`` on ``device``, built once and cached."""
    if name not in _FACTORIES:
        raise UnknownModelError(f"unknown detector {name!r}; known: {sorted(_FACTORIES)}")
    return _FACTORIES[name](device=device)


def list_detectors() -> List[str]:
    return sorted(_FACTORIES)


def detect(img: ImageLike, *, detector: str = DEFAULT_DETECTOR, min_score: Optional[float] = None,
           yaw: bool = True, device: Any = None, bgr: bool = False) -> List[Face]:
    """Find faces in ``img``.

    Args:
        img: anything :func:`pifr.load_image` accepts.
        detector: ``"retinaface"`` or ``"mtcnn"``.
        min_score: confidence cut-off (detector default if ``None``).
        yaw: also estimate each face's yaw (3DDFA_V2; see :func:`pifr.estimate_yaw`).
        device: torch device (``None`` = CUDA if available).
        bgr: numpy/tensor input is BGR.

    Returns:
        Faces sorted by box area, largest first; an empty list when there are none.
    """
    arr = load_image(img, bgr=bgr)
    det = get_detector(detector, device)
    faces = det(arr) if min_score is None else det(arr, min_score=min_score)
    faces.sort(key=lambda f: -(f.width * f.height))
    if yaw and faces:
        yaws = estimate_yaw_faces(arr, faces, device=device)
        faces = [f.with_yaw(y) for f, y in zip(faces, yaws)]
    return faces


def detect_one(img: np.ndarray, *, detector: Optional[str] = None, device: Any = None, yaw: bool = True,
               purpose: str = "") -> Face:
    """The largest face in ``img`` (``(H, W, 3)`` uint8 RGB).

    Raises:
        NoFaceError: there is none; ``purpose`` completes the message ("no face found" + purpose).
    """
    from .errors import NoFaceError

    faces = detect(img, detector=detector or DEFAULT_DETECTOR, yaw=yaw, device=device)
    if not faces:
        raise NoFaceError(f"no face found{purpose}")
    return faces[0]


def estimate_yaw(img: ImageLike, face: Optional[Face] = None, *, method: str = "3ddfa",
                 detector: Optional[str] = None, device: Any = None) -> float:
    """Yaw in degrees of ``face`` in ``img`` (or of the largest detected face).

    Raises:
        NoFaceError: no face given and none detected.
    """
    arr = load_image(img)
    if face is None:
        face = detect_one(arr, detector=detector, yaw=False, device=device, purpose=" to estimate yaw")
    return estimate_yaw_faces(arr, [face], method=method, device=device)[0]


def pick_face(faces: Sequence[Face], shape: tuple, select: str = "largest") -> Face:
    """Choose one face: ``"largest"`` box, or ``"center"`` (closest to the image centre, for
    datasets such as LFW whose subject is centred).

    Raises:
        NoFaceError: no faces. ValueError: an unknown ``select``."""
    if not faces:
        raise NoFaceError("no face found")
    if select == "largest":
        return max(faces, key=lambda f: f.width * f.height)
    if select == "center":
        cy, cx = shape[0] / 2, shape[1] / 2
        return min(faces, key=lambda f: np.hypot((f.bbox[0] + f.bbox[2]) / 2 - cx, (f.bbox[1] + f.bbox[3]) / 2 - cy))
    raise ValueError(f"select must be 'largest' or 'center', got {select!r}")


def locate_face(src: ImageLike, *, detector: Optional[str] = None, select: str = "largest",
                retry_min_score: Optional[float] = 0.5, device: Any = None) -> "Tuple[np.ndarray, Face]":
    """Load ``src`` and choose its face (see :func:`pick_face`), retrying detection once at
    ``retry_min_score`` when nothing is found at the detector's default confidence.

    Returns ``(image, face)``. Raises InvalidImageError / NoFaceError."""
    det = detector or DEFAULT_DETECTOR
    arr = load_image(src)
    faces = detect(arr, detector=det, device=device)
    if not faces and retry_min_score is not None:
        faces = detect(arr, detector=det, device=device, min_score=retry_min_score)
    return arr, pick_face(faces, arr.shape, select)
