"""1:1 verification: are two photos the same person?

Data flows image → face → aligned crop → (frontalized crop) → embedding → decision. The
frontalization policy it applies lives in :mod:`pifr.frontalization`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import InvalidPolicyError
from .frontalization import DEFAULT_FRONTALIZE, embed_face_policy, frontal_view, threshold_shift, validate_policy
from .image import ImageLike, load_image
from .types import Verification


def verify(a: ImageLike, b: ImageLike, *, embedder: Optional[str] = None, threshold: Optional[float] = None,
           detector: Optional[str] = None, frontalize: str = DEFAULT_FRONTALIZE, frontalizer: Optional[Union[str, Path]] = None,
           yaw_threshold: Optional[float] = None, fusion_weight: Optional[float] = None,
           device: Any = None) -> Verification:
    """Decide whether the largest face in ``a`` and the largest face in ``b`` are the same person.

    Args:
        a, b: anything :func:`pifr.load_image` accepts.
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
    from .detection import detect_one
    from .embedders import DEFAULT_EMBEDDER, get_embedder

    frontalize, yaw_threshold, fusion_weight = validate_policy(frontalize, yaw_threshold, fusion_weight)
    if threshold is not None and not np.isfinite(threshold):  # NaN would answer DIFFERENT for every pair, silently
        from .errors import InvalidArgumentError

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
    faces, vecs, fronts = [], [], []
    for which, src in (("first", a), ("second", b)):
        arr = load_image(src)
        face = detect_one(arr, detector=detector, device=device, purpose=f" in the {which} image")
        v, f = embed_face_policy(arr, face, emb, frontalize, gen, yaw_threshold, fusion_weight)
        faces.append(face)
        vecs.append(v)
        fronts.append(f)
    score = float(np.dot(vecs[0], vecs[1]))
    if threshold is None and frontalize == "auto" and any(fronts):
        # Fusion raises impostor scores a little; the measured shift keeps the embedder's FAR.
        thr += threshold_shift(emb.name, gen)
    return Verification(
        same=score >= thr, score=score, threshold=thr, embedder=emb.name,
        faces=(faces[0], faces[1]), frontalized=(fronts[0], fronts[1]), seconds=time.perf_counter() - t0,
    )
