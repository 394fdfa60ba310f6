"""From photos to a gallery's templates, through the face pipeline (:mod:`pifr.pipeline`): the
largest face of each photo under the gallery's policy, with its treatment record, its yaw and the
hash of its pixels (a photo is enrolled once)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, List, Sequence, Set, Tuple

from ..errors import PifrError
from ..image import ImageLike
from ..pipeline import FaceEmbedding, Pipeline

log = logging.getLogger("pifr")


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


def as_images(images: Any) -> Sequence[ImageLike]:
    """A single path, bytes, array or PIL image as a list of one image; a sequence as it is."""
    import numpy as np

    if isinstance(images, (str, bytes, os.PathLike, np.ndarray)) or type(images).__module__.startswith(("PIL.", "torch")):
        return [images]
    return images


def embed_new(pipe: Pipeline, images: Sequence[ImageLike], known: Set[str]
              ) -> Tuple[List[Tuple[int, FaceEmbedding]], List[Tuple[int, str]], List[int]]:
    """Embed each image whose pixels are not among the ``known`` hashes (nor earlier in
    ``images``), ``pipe.batch_size`` images at a time: ``(embedded as (index, FaceEmbedding),
    failures as (index, "Error: message"), duplicate indices)``."""
    known = set(known)
    done: List[Tuple[int, FaceEmbedding]] = []
    failures: List[Tuple[int, str]] = []
    dups: List[int] = []
    step = pipe.batch_size
    for k in range(0, len(images), step):
        chunk = list(images[k:k + step])
        names = [f"image {k + j}" for j in range(len(chunk))]
        for j, r in enumerate(pipe.embed_images(chunk, names=names, hash_pixels=True)):
            i = k + j
            if isinstance(r, PifrError):
                failures.append((i, f"{type(r).__name__}: {r}"))
            elif r.image_sha256 in known:
                dups.append(i)
            else:
                known.add(r.image_sha256)  # type: ignore[arg-type]
                done.append((i, r))
    return done, failures, dups
