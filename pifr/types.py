"""Frozen result records returned by the public API."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np


def _ro(a: Any, shape: tuple, name: str) -> np.ndarray:
    arr = np.array(a, dtype=np.float32).reshape(shape) if a is not None else None
    if arr is None:
        raise ValueError(f"{name} is required")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        bbox: ``(4,)`` float32 ``[x1, y1, x2, y2]`` in pixels of the source image.
        score: detector confidence in [0, 1].
        landmarks: ``(5, 2)`` float32 ``(x, y)`` pixels: the eye on the image's left,
            the eye on the image's right, nose tip, mouth corner on the image's left,
            mouth corner on the image's right.
        yaw: head yaw in degrees, positive when the face turns towards the image's right
            (the subject looks to their left); ``None`` if not estimated.
        detector: name of the detector that produced it.
    """

    bbox: np.ndarray
    score: float
    landmarks: np.ndarray
    yaw: Optional[float] = None
    detector: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bbox", _ro(self.bbox, (4,), "bbox"))
        object.__setattr__(self, "landmarks", _ro(self.landmarks, (5, 2), "landmarks"))
        object.__setattr__(self, "score", float(self.score))
        if self.yaw is not None:
            object.__setattr__(self, "yaw", float(self.yaw))

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    def with_yaw(self, yaw: Optional[float]) -> "Face":
        return Face(self.bbox, self.score, self.landmarks, yaw, self.detector)

    def to_dict(self) -> dict:
        return {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(self.score, 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "yaw": None if self.yaw is None else round(self.yaw, 2),
            "detector": self.detector,
        }

    def __eq__(self, other: object) -> bool:  # numpy fields need an explicit comparison
        if not isinstance(other, Face):
            return NotImplemented
        return (
            np.array_equal(self.bbox, other.bbox)
            and np.array_equal(self.landmarks, other.landmarks)
            and self.score == other.score
            and self.yaw == other.yaw
            and self.detector == other.detector
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Verification:
    """Outcome of :func:`pifr.verify`.

    ``bool(result)`` is ``result.same``. ``score`` is the cosine similarity of the two
    L2-normalised embeddings (higher = more alike); ``distance = 1 - score``. ``same`` is
    ``score >= threshold``.
    """

    same: bool
    score: float
    threshold: float
    embedder: str
    faces: Tuple[Face, Face]
    frontalized: Tuple[bool, bool] = (False, False)
    metric: str = "cosine"
    seconds: float = 0.0
    #: Faces pooled on each side (1 for a single image; more for a list of frames of one person).
    frames: Tuple[int, int] = (1, 1)

    @property
    def distance(self) -> float:
        return 1.0 - self.score

    @property
    def yaw(self) -> Tuple[Optional[float], Optional[float]]:
        return (self.faces[0].yaw, self.faces[1].yaw)

    def __bool__(self) -> bool:
        return bool(self.same)

    def to_dict(self) -> dict:
        return {
            "same": bool(self.same),
            "score": round(self.score, 5),
            "distance": round(self.distance, 5),
            "threshold": round(self.threshold, 5),
            "metric": self.metric,
            "embedder": self.embedder,
            "yaw": [None if y is None else round(y, 1) for y in self.yaw],
            "frontalized": list(self.frontalized),
            "faces": [f.to_dict() for f in self.faces],
            "frames": list(self.frames),
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class EmbedderInfo:
    """What :func:`pifr.list_embedders` reports for one embedder (``dim`` 0: not known until the
    model is loaded; ``threshold`` NaN: none measured)."""

    name: str
    weights: str
    template: str
    dim: int
    threshold: float
    available: bool
    calibrated: bool = True
    reason: str = ""
