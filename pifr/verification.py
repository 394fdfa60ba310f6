"""1:1 verification: are two photos the same person?

Data flows image → face → aligned crop → (frontalized crop) → embedding → decision. The
frontalization policy it applies lives in :mod:`pifr.frontalization`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import FitError, InvalidArgumentError, InvalidImageError, InvalidPolicyError, NoFaceError
from .frontalization import DEFAULT_FRONTALIZE, embed_face_policy, event_threshold_shift, frontal_view, threshold_shift, validate_policy
from .image import ImageLike, load_image
from .pooling import pool_faces
from .types import Face, Verification

log = logging.getLogger("pifr")

#: One person's photos: an image, or a list or tuple of images (the frames of one door event).
Subject = Union[ImageLike, Sequence[ImageLike]]


def subject_frames(src: Subject, what: str) -> List[ImageLike]:
    """``src`` as a list of frames: a list or tuple is one person's frames, anything else one image.

    Raises:
        InvalidArgumentError: an empty list."""
    frames = list(src) if isinstance(src, (list, tuple)) else [src]
    if not frames:
        raise InvalidArgumentError(f"{what}: an empty list of images")
    return frames


def embed_subject(src: Subject, what: str, emb: Any, frontalize: str, gen: Any, detector: Optional[str],
                  yaw_threshold: Optional[float], fusion_weight: Optional[float],
                  device: Any = None) -> "Tuple[np.ndarray, List[Face], List[bool]]":
    """One probe embedding ``(dim,)`` for one person: the largest face of each frame under the pose
    policy, pooled (:func:`pifr.pooling.pool_faces`) when there are several. A frame that is not an
    image or shows no face is left out (and logged) when others remain.

    Returns ``(embedding, faces used, which were fused)``.

    Raises:
        InvalidImageError / NoFaceError / FitError: a single image fails, or every frame does.
    """
    from .detection import detect_one

    frames = subject_frames(src, what)
    vecs, faces, fronts, errors = [], [], [], []
    for i, frame in enumerate(frames):
        label = what if len(frames) == 1 else f"{what}, frame {i}"
        try:
            arr = load_image(frame)
            face = detect_one(arr, detector=detector, device=device, purpose=f" in {label}")
            v, fused = embed_face_policy(arr, face, emb, frontalize, gen, yaw_threshold, fusion_weight)
        except (InvalidImageError, NoFaceError, FitError) as e:
            if len(frames) == 1:
                raise
            log.warning("%s: left out (%s: %s)", label, type(e).__name__, e)
            errors.append(e)
            continue
        vecs.append(v)
        faces.append(face)
        fronts.append(fused)
    if not vecs:
        raise NoFaceError(f"{what}: none of its {len(frames)} frames gave a face ({type(errors[0]).__name__}: {errors[0]})")
    return pool_faces(np.stack(vecs), [f.yaw for f in faces]), faces, fronts


def verify(a: Subject, b: Subject, *, embedder: Optional[str] = None, threshold: Optional[float] = None,
           detector: Optional[str] = None, frontalize: str = DEFAULT_FRONTALIZE, frontalizer: Optional[Union[str, Path]] = None,
           yaw_threshold: Optional[float] = None, fusion_weight: Optional[float] = None,
           device: Any = None) -> Verification:
    """Decide whether the largest face in ``a`` and the largest face in ``b`` are the same person.

    Args:
        a, b: anything :func:`pifr.load_image` accepts — or a list of such images of one person
            (frames of one door event): their faces are pooled into one probe
            (:func:`pifr.pooling.pool_faces`) and the threshold moves by the shift measured for
            pooled probes, so the false-accept rate holds per event; a frame without a face is
            left out while others remain.
        embedder: registry name (default :data:`pifr.embedders.DEFAULT_EMBEDDER`).
        threshold: cosine-similarity threshold; default: the embedder's calibrated one.
        detector: detector name (default :data:`pifr.detection.DEFAULT_DETECTOR`).
        frontalize: ``"auto"`` (default: a face turned beyond the embedder's measured yaw
            threshold is embedded as normalise((1 − w)·raw + w·view), the view being its 3D render
            from the front or, where the rule says so, turned only part of the way, or several such
            renders pooled (the rules in :data:`pifr.frontalization.AUTO_RULES`); near-frontal
            faces are untouched), ``"never"``
            (raw embeddings) or ``"always"`` (the frontal view alone: no threshold is measured for
            it, so ``threshold=`` is required).
        frontalizer: where the frontal view comes from: ``None``/``"3d"`` the 3D render,
            ``"refined"`` / ``"refined:<refiner.safetensors>"`` that render through a learned refiner
            (:func:`pifr.frontalization.frontal_view`), or a TP-GAN ``generator.safetensors``.
        yaw_threshold: degrees, 0–90; ``fusion_weight``: in [0, 1]; ``None`` = the measured rule.
        device: torch device (``None``: CUDA if available).

    Returns:
        :class:`~pifr.types.Verification` with the decision, cosine score, threshold, the two
        faces (with yaw in degrees), which were frontalized, and the time taken.

    Raises:
        InvalidImageError: an input is not a usable image.
        NoFaceError: no face in one of the images (the message says which).
        InvalidPolicyError: unknown ``frontalize`` mode, threshold / weight out of range, or
            ``"always"`` without an explicit ``threshold``.
        FitError: the 3D fit refused a face that the policy needs frontalized.
        WeightsNotFoundError: frontalization asked for but no generator weights available.
        NoThresholdError: no ``threshold`` given and the embedder has none calibrated (a registered ONNX model).
    """
    from .embedders import DEFAULT_EMBEDDER, get_embedder

    frontalize, yaw_threshold, fusion_weight = validate_policy(frontalize, yaw_threshold, fusion_weight)
    if threshold is not None and not np.isfinite(threshold):  # NaN would answer DIFFERENT for every pair, silently
        raise InvalidArgumentError(f"threshold must be a finite number, got {threshold!r}")
    t0 = time.perf_counter()
    emb = get_embedder(embedder or DEFAULT_EMBEDDER, device)
    if frontalize == "always" and threshold is None:
        raise InvalidPolicyError('frontalize="always" compares frontal views only, and no decision threshold is '
                                 'measured for that; pass threshold=, or use "auto" (measured) or "never"')
    # Before any work: a registered model without a calibrated threshold raises NoThresholdError here.
    thr = float(threshold) if threshold is not None else emb.threshold
    gen = None
    if frontalize != "never":
        gen = frontal_view(frontalizer, device)
    sides = [embed_subject(src, f"the {which} image", emb, frontalize, gen, detector, yaw_threshold, fusion_weight,
                           device) for which, src in (("first", a), ("second", b))]
    score = float(np.dot(sides[0][0], sides[1][0]))
    if threshold is None and frontalize == "auto" and any(any(f) for _, _, f in sides):
        # Fusion raises impostor scores a little; the measured shift keeps the embedder's FAR.
        thr += threshold_shift(emb.name, gen)
    if threshold is None and any(len(faces) > 1 for _, faces, _ in sides):
        thr += event_threshold_shift(emb.name)  # pooled frames: the shift measured for events
    # The face shown for each side is its most frontal one.
    best = [min(faces, key=lambda f: abs(f.yaw) if f.yaw is not None else 0.0) for _, faces, _ in sides]
    return Verification(
        same=score >= thr, score=score, threshold=thr, embedder=emb.name,
        faces=(best[0], best[1]), frontalized=(any(sides[0][2]), any(sides[1][2])), seconds=time.perf_counter() - t0,
        frames=(len(sides[0][1]), len(sides[1][1])),
    )
