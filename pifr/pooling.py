"""Several faces of one person (the frames of one door event) → one embedding.

A door sees a person in several frames; deciding on each frame alone gives a stranger several
chances and wastes what the better frames show. pifr pools the frames' embeddings (each already
made under the pose policy) into one probe and decides once, at a threshold measured for pooled
probes (:func:`event_threshold_shift`), so the false-accept rate holds per event.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .errors import ShapeError


def pool_faces(embeddings: np.ndarray, yaws: Optional[Sequence[Optional[float]]] = None) -> np.ndarray:
    """One unit embedding ``(dim,)`` from ``k`` unit embeddings ``(k, dim)`` of one person: their
    mean weighted by how frontal each face is, max(cos |yaw|, 0.1) (a face of unknown yaw counts
    as frontal), renormalised. One face: itself.

    Raises:
        ShapeError: not a non-empty ``(k, dim)`` array, or ``yaws`` of another length.
    """
    e = np.asarray(embeddings, np.float32)
    if e.ndim != 2 or len(e) == 0:
        raise ShapeError(f"pool_faces takes a non-empty (k, dim) array of embeddings, got shape {e.shape}")
    if len(e) == 1:
        return e[0]
    if yaws is None:
        yaws = [None] * len(e)
    if len(yaws) != len(e):
        raise ShapeError(f"{len(e)} embeddings but {len(yaws)} yaws")
    w = np.array([1.0 if y is None else max(math.cos(math.radians(abs(float(y)))), 0.1) for y in yaws], np.float32)
    v = (w[:, None] * e).sum(0)
    return (v / np.linalg.norm(v)).astype(np.float32)
