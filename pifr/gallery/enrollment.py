"""From photos to a gallery's templates: the largest face, its templates under a frontalization
policy, the threshold shift a fused probe needs, and each template's view record."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..errors import PifrError
from ..frontalization import embed_face_policy, frontal_view, threshold_shift
from ..image import ImageLike, load_image
from ..types import Face
from .staleness import ViewPolicy

log = logging.getLogger("pifr")

#: ``(input index, templates (dim,) float32, image hash, their view records)`` of one photo.
Embedded = Tuple[int, List[np.ndarray], str, List[Optional[str]]]


@dataclass(frozen=True)
class EnrollReport:
    """What :meth:`Gallery.enroll` did: templates added, and per-image failures and duplicates (by input index)."""

    identity: str
    added: int
    failures: Tuple[Tuple[int, str], ...] = ()
    duplicates: Tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures and not self.duplicates


def _pixels_hash(arr: np.ndarray) -> str:
    return hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()


def embed_face(arr: np.ndarray, face: Face, policy: str, views: ViewPolicy, device: Any
               ) -> Tuple[List[np.ndarray], float, List[Optional[str]]]:
    """The templates of ``face`` in ``arr`` under ``policy`` (``"never"``, ``"auto"``,
    ``"always"``, or ``"both"`` = the raw and the frontalized template) with ``views``' embedder,
    frontalizer and rule: unit ``(dim,)`` float32 vectors, the threshold shift the first needs
    (non-zero when ``"auto"`` fused it: :func:`pifr.frontalization.threshold_shift`), and per
    template the mode that fused it from a view (``None``: raw)."""
    from ..embedders import get_embedder

    emb = get_embedder(views.embedder, device)
    gen = None
    if policy != "never":
        gen = frontal_view(views.frontalizer, device)
    modes = ("never", "always") if policy == "both" else (policy,)
    out = [embed_face_policy(arr, face, emb, m, gen, views.yaw_threshold, views.fusion_weight) for m in modes]
    shift = threshold_shift(emb.name, gen) if policy == "auto" and out[0][1] else 0.0
    return [v.astype(np.float32) for v, _ in out], shift, [m if used else None for m, (_, used) in zip(modes, out)]


def embed_image(img: ImageLike, policy: str, views: ViewPolicy, detector: Optional[str], device: Any
                ) -> Tuple[List[np.ndarray], str, float, List[Optional[str]], Optional[float]]:
    """:func:`embed_face` for the largest face in ``img``, with the image's hash (sha256 of its
    decoded pixels) after the shift, and the face's yaw (degrees) last."""
    from ..detection import detect_one

    arr = load_image(img)
    face = detect_one(arr, detector=detector, device=device)
    vs, shift, fused = embed_face(arr, face, policy, views, device)
    return vs, _pixels_hash(arr), shift, fused, face.yaw


def embed_event(items: Sequence[Any], policy: str, views: ViewPolicy, detector: Optional[str], device: Any
                ) -> Tuple[np.ndarray, float, int]:
    """One probe for one person seen several times: each item an image (its largest face) or an
    ``(image, Face)`` pair (a face already found, e.g. a tracked face), embedded under ``policy``,
    pooled (:func:`pifr.pooling.pool_faces`). An item that fails is left out (logged) while others
    remain. Returns ``(unit (dim,) embedding, threshold shift, faces pooled)``: the shift is the
    largest a pooled face needs under ``"auto"`` plus, for two faces or more, the embedder's
    measured event shift (:func:`pifr.frontalization.event_threshold_shift`).

    Raises:
        InvalidArgumentError: no items. NoFaceError: no item gave a face.
    """
    from ..detection import detect_one
    from ..errors import InvalidArgumentError, NoFaceError
    from ..frontalization import event_threshold_shift
    from ..pooling import pool_faces

    if len(items) == 0:
        raise InvalidArgumentError("an event needs at least one image")
    vecs, yaws, shifts, errors = [], [], [], []
    for i, item in enumerate(items):
        try:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Face):
                arr, face = load_image(item[0]), item[1]
            else:
                arr = load_image(item)
                face = detect_one(arr, detector=detector, device=device)
            vs, shift, _ = embed_face(arr, face, policy, views, device)
        except PifrError as e:
            log.warning("event item %d left out (%s: %s)", i, type(e).__name__, e)
            errors.append(e)
            continue
        vecs.append(vs[0])
        yaws.append(face.yaw)
        shifts.append(shift)
    if not vecs:
        raise NoFaceError(f"none of the event's {len(items)} images gave a face ({type(errors[0]).__name__}: {errors[0]})")
    shift = max(shifts) + (event_threshold_shift(views.embedder) if len(vecs) > 1 else 0.0)
    return pool_faces(np.stack(vecs), yaws), shift, len(vecs)


def as_images(images: Any) -> Sequence[ImageLike]:
    """A single path, bytes, array or PIL image as a list of one image; a sequence as it is."""
    if isinstance(images, (str, bytes, os.PathLike, np.ndarray)) or type(images).__module__.startswith(("PIL.", "torch")):
        return [images]
    return images


def embed_new(images: Sequence[ImageLike], policy: str, views: ViewPolicy, detector: Optional[str], device: Any,
              known: Set[str], record_yaw: bool) -> Tuple[List[Embedded], List[Tuple[int, str]], List[int]]:
    """Embed each image not already among the ``known`` hashes (nor earlier in ``images``):
    ``(embedded, failures as (index, "Error: message"), duplicate indices)``. ``record_yaw``: a
    face left raw is recorded with its yaw (``"auto"`` enrolment, :mod:`pifr.gallery.staleness`)."""
    known = set(known)
    done: List[Embedded] = []
    failures: List[Tuple[int, str]] = []
    dups: List[int] = []
    for i, img in enumerate(images):
        try:
            vs, h, _, fused, yaw = embed_image(img, policy, views, detector, device)
            records = [views.record(m, yaw if record_yaw else None) for m in fused]
        except PifrError as e:
            failures.append((i, f"{type(e).__name__}: {e}"))
            continue
        if h in known:
            dups.append(i)
            continue
        known.add(h)
        done.append((i, vs, h, records))
    return done, failures, dups
