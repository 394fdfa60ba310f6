"""Several embeddings of one face or one person → one: a face's views (pool_views, fuse_embeddings)
and the frames of one door event (pool_faces).

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


def pool_views(views: np.ndarray) -> np.ndarray:
    """The embedding of several rendered views of one face: normalise(mean) of their unit
    ``(k, dim)`` embeddings, as ``(dim,)`` float32 (one view: itself)."""
    if len(views) == 1:
        return views[0]
    v = np.mean(views, axis=0)
    return (v / np.linalg.norm(v)).astype(np.float32)


def fuse_embeddings(raw: np.ndarray, view: np.ndarray, weight: float) -> np.ndarray:
    """normalise((1 − weight)·raw + weight·view) for unit ``(dim,)`` vectors; weight 1 is the
    view's embedding alone. For a probe against fixed gallery vectors this ranks exactly like the
    score fusion (1 − w)·cos(raw, g) + w·cos(view, g)."""
    if weight >= 1.0:
        return view
    v = (1.0 - weight) * raw + weight * view
    return (v / np.linalg.norm(v)).astype(np.float32)
