"""1:1 verification: are two photos the same person? Data flows image → face → aligned crop → embedding → decision."""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from .errors import NoFaceError, UnknownModelError
from .image import ImageLike, load_image
from .types import Verification


def verify(a: ImageLike, b: ImageLike, *, embedder: Optional[str] = None, threshold: Optional[float] = None,
           detector: Optional[str] = None, frontalize: str = "never", device: Any = None) -> Verification:
    """Decide whether the largest face in ``a`` and the largest face in ``b`` are the same person.

    Args:
        a, b: anything :func:`pifr.load_image` accepts.
        embedder: registry name (default :data:`pifr.embedders.DEFAULT_EMBEDDER`).
        threshold: cosine-similarity threshold; default: the embedder's calibrated one.
        detector: detector name (default :data:`pifr.detection.DEFAULT_DETECTOR`).
        frontalize: ``"never"`` until the frontalizer ships.
        device: torch device (``None``: CUDA if available).

    Returns:
        :class:`~pifr.types.Verification` with the decision, cosine score, threshold, the two
        faces (with yaw in degrees) and the time taken.

    Raises:
        InvalidImageError: an input is not a usable image.
        NoFaceError: no face in one of the images (the message says which).
    """
    from .detection import DEFAULT_DETECTOR, detect
    from .embedders import DEFAULT_EMBEDDER, get_embedder

    if frontalize != "never":
        raise UnknownModelError(f"frontalize={frontalize!r}: no frontalizer weights are installed yet; use 'never'")
    t0 = time.perf_counter()
    emb = get_embedder(embedder or DEFAULT_EMBEDDER, device)
    faces, vecs = [], []
    for which, src in (("first", a), ("second", b)):
        arr = load_image(src)
        found = detect(arr, detector=detector or DEFAULT_DETECTOR, device=device)
        if not found:
            raise NoFaceError(f"no face found in the {which} image")
        faces.append(found[0])
        vecs.append(emb.embed_crops(emb.align(arr, found[0])[None])[0])
    score = float(np.dot(vecs[0], vecs[1]))
    thr = emb.threshold if threshold is None else float(threshold)
    return Verification(
        same=score >= thr, score=score, threshold=thr, embedder=emb.name,
        faces=(faces[0], faces[1]), frontalized=(False, False), seconds=time.perf_counter() - t0,
    )
