"""1:1 verification: are two photos the same person?

Both sides go through one :class:`pifr.pipeline.Pipeline` (image → face → fit → views →
embedding) under one :class:`pifr.policy.Policy`; this module makes the decision.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import InvalidArgumentError, InvalidPolicyError
from .pipeline import Subject
from .policy import DEFAULT_FRONTALIZE
from .types import Verification


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
            renders pooled (the rules of :mod:`pifr.policy`); near-frontal
            faces are untouched), ``"never"``
            (raw embeddings) or ``"always"`` (the frontal view alone: no threshold is measured for
            it, so ``threshold=`` is required).
        frontalizer: where the frontal view comes from: ``None``/``"3d"`` the 3D render,
            ``"refined"`` / ``"refined:<refiner.safetensors>"`` that render through a learned refiner
            (:func:`pifr.views.parse_view`), or a TP-GAN ``generator.safetensors``.
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
    from .pipeline import Pipeline

    t0 = time.perf_counter()
    if threshold is not None and not np.isfinite(threshold):  # NaN would answer DIFFERENT for every pair, silently
        raise InvalidArgumentError(f"threshold must be a finite number, got {threshold!r}")
    if frontalize == "always" and threshold is None:
        raise InvalidPolicyError('frontalize="always" compares frontal views only, and no decision threshold is '
                                 'measured for that; pass threshold=, or use "auto" (measured) or "never"')
    pipe = Pipeline(embedder, frontalize=frontalize, frontalizer=frontalizer, yaw_threshold=yaw_threshold,
                    fusion_weight=fusion_weight, detector=detector, device=device)
    # Before any work: a registered model without a calibrated threshold raises NoThresholdError here.
    thr = float(threshold) if threshold is not None else pipe.embedder.threshold
    sides = [pipe.embed_event(src, f"the {which} image") for which, src in (("first", a), ("second", b))]
    score = float(np.dot(sides[0].embedding, sides[1].embedding))
    if threshold is None:
        # Fusion raises impostor scores a little; the measured shift keeps the embedder's FAR.
        thr += pipe.policy.threshold_shift(any(s.fused for s in sides))
        if any(len(s.faces) > 1 for s in sides):
            thr += pipe.policy.event_threshold_shift  # pooled frames: the shift measured for events
    # The face shown for each side is its most frontal one.
    best = [min((f.face for f in s.faces), key=lambda f: abs(f.yaw) if f.yaw is not None else 0.0) for s in sides]
    return Verification(
        same=score >= thr, score=score, threshold=thr, embedder=pipe.embedder.name,
        faces=(best[0], best[1]), frontalized=(sides[0].fused, sides[1].fused), seconds=time.perf_counter() - t0,
        frames=(len(sides[0].faces), len(sides[1].faces)),
    )
