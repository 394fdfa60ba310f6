"""1:1 verification: are two photos the same person?

Data flows image → face → aligned crop → (frontalized crop) → embedding → decision.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import UnknownModelError
from .image import ImageLike, load_image
from .types import Face, Verification

FRONTALIZE_MODES = ("never", "always", "auto")
# The "auto" rule, chosen on CFP 351-400 (tuning split) by `python benchmarks/frontalization.py
# --generator G --no-3d` over |yaw| > 30/45/60 and w = 0.25/0.5/0.75/1, best rank-1 + FP accuracy,
# for the best generator trained so far (width 0.25, 2,000 CPU steps; docs/frontalization.md):
#   dlib_resnet  raw 72.5 % rank-1 / 88.71 % FP acc; frontalized only 60.5 / 83.86;
#                |yaw| > 45, w = 0.25: 73.0 / 89.71 (chosen; MobileFaceNet's best was |yaw| > 30,
#                w = 0.25: 67.0 / 86.14 against raw 69.0 / 87.14).
# No generator helps yet, which is why verify() defaults to frontalize="never"; a small w keeps
# "auto" close to raw until one does.
#: |yaw| above which ``frontalize="auto"`` sends a face through the frontalizer (degrees).
AUTO_YAW_THRESHOLD = 45.0
#: Weight of the frontalized embedding in ``frontalize="auto"``: a face above the yaw threshold is
#: embedded as normalise((1 − w)·raw + w·frontalized); 1 means "frontalized only".
AUTO_FUSION_WEIGHT = 0.25


def fuse_embeddings(raw: np.ndarray, frontalized: np.ndarray, weight: float) -> np.ndarray:
    """normalise((1 − weight)·raw + weight·frontalized) for unit ``(dim,)`` vectors; weight 1 is
    the frontalized embedding alone."""
    if weight >= 1.0:
        return frontalized
    v = (1.0 - weight) * raw + weight * frontalized
    return (v / np.linalg.norm(v)).astype(np.float32)


def embed_face_policy(arr: np.ndarray, face: Face, emb: Any, frontalize: str, frontalizer: Any,
                      yaw_threshold: float, fusion_weight: float = AUTO_FUSION_WEIGHT) -> "tuple[np.ndarray, bool]":
    """Embedding of ``face`` under the frontalization policy; returns ``(unit vector, frontalized?)``.

    ``"always"`` embeds the frontalized face alone; ``"auto"`` frontalizes faces with
    |yaw| > ``yaw_threshold`` and fuses: normalise((1 − w)·raw + w·frontalized). For a probe
    against fixed gallery vectors, that ranks exactly like the score fusion
    (1 − w)·cos(raw, g) + w·cos(frontalized, g).
    """
    use = frontalize == "always" or (frontalize == "auto" and face.yaw is not None and abs(face.yaw) > yaw_threshold)
    w = 1.0 if frontalize == "always" else float(fusion_weight)
    if not use:
        return emb.embed_crops(emb.align(arr, face)[None])[0], False
    from .alignment import TPGAN_128, align_with_landmarks
    from .frontalization import to_template

    crop, lm = align_with_landmarks(arr, face, TPGAN_128)
    frontal = frontalizer.frontalize_crops(crop[None], lm[None], [face.yaw or 0.0])[0]
    v = emb.embed_crops(to_template(frontal, emb.template)[None])[0]
    if w < 1.0:
        v = fuse_embeddings(emb.embed_crops(emb.align(arr, face)[None])[0], v, w)
    return v, True


def verify(a: ImageLike, b: ImageLike, *, embedder: Optional[str] = None, threshold: Optional[float] = None,
           detector: Optional[str] = None, frontalize: str = "never", frontalizer: Optional[Union[str, Path]] = None,
           yaw_threshold: float = AUTO_YAW_THRESHOLD, fusion_weight: float = AUTO_FUSION_WEIGHT,
           device: Any = None) -> Verification:
    """Decide whether the largest face in ``a`` and the largest face in ``b`` are the same person.

    Args:
        a, b: anything :func:`pifr.load_image` accepts.
        embedder: registry name (default :data:`pifr.embedders.DEFAULT_EMBEDDER`).
        threshold: cosine-similarity threshold; default: the embedder's calibrated one.
        detector: detector name (default :data:`pifr.detection.DEFAULT_DETECTOR`).
        frontalize: ``"never"`` (default), ``"always"``, or ``"auto"`` (faces with |yaw| above
            ``yaw_threshold`` degrees go through the TP-GAN frontalizer first and are embedded as
            normalise((1 − w)·raw + w·frontalized) with w = ``fusion_weight``).
        frontalizer: generator weights (``generator.safetensors``) when no frontalizer is installed.
        device: torch device (``None``: CUDA if available).

    Returns:
        :class:`~pifr.types.Verification` with the decision, cosine score, threshold, the two
        faces (with yaw in degrees), which were frontalized, and the time taken.

    Raises:
        InvalidImageError: an input is not a usable image.
        NoFaceError: no face in one of the images (the message says which).
        WeightsNotFoundError: frontalization asked for but no generator weights available.
        NoThresholdError: no ``threshold`` given and the embedder has none calibrated (a registered ONNX model).
    """
    from .detection import detect_one
    from .embedders import DEFAULT_EMBEDDER, get_embedder

    if frontalize not in FRONTALIZE_MODES:
        raise UnknownModelError(f"frontalize must be one of {FRONTALIZE_MODES}, got {frontalize!r}")
    t0 = time.perf_counter()
    emb = get_embedder(embedder or DEFAULT_EMBEDDER, device)
    # Before any work: a registered model without a calibrated threshold raises NoThresholdError here.
    thr = emb.threshold if threshold is None else float(threshold)
    gen = None
    if frontalize != "never":
        from .frontalization import get_frontalizer

        gen = get_frontalizer(frontalizer, device)
    faces, vecs, fronts = [], [], []
    for which, src in (("first", a), ("second", b)):
        arr = load_image(src)
        face = detect_one(arr, detector=detector, device=device, purpose=f" in the {which} image")
        v, f = embed_face_policy(arr, face, emb, frontalize, gen, yaw_threshold, fusion_weight)
        faces.append(face)
        vecs.append(v)
        fronts.append(f)
    score = float(np.dot(vecs[0], vecs[1]))
    return Verification(
        same=score >= thr, score=score, threshold=thr, embedder=emb.name,
        faces=(faces[0], faces[1]), frontalized=(fronts[0], fronts[1]), seconds=time.perf_counter() - t0,
    )
