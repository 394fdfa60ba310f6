"""Exact nearest-template search over a gallery's templates, with numpy or with faiss behind one
interface (:class:`TemplateIndex`): both give the same identities and scores, ties included.

Scores are cosine similarities of unit vectors; an identity's score is its best template's.
faiss (``pip install pifr[faiss]``, a flat inner-product index) is used from
:data:`FAISS_MIN_TEMPLATES` templates where it is installed (a gallery's ``search_backend`` "auto"),
or always ("faiss") or never ("numpy"); on 2 CPU cores it was no faster than numpy up to 1M
templates (benchmarks/gallery.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..errors import InvalidArgumentError

log = logging.getLogger("pifr")

#: From this many templates the "auto" backend searches with faiss (exact inner product) instead of
#: numpy; measured on 2 CPU cores, exact faiss was no faster than numpy up to 1M templates (benchmarks/gallery.py).
FAISS_MIN_TEMPLATES = 1_000_000
SEARCH_BACKENDS = ("auto", "numpy", "faiss")


@dataclass(frozen=True)
class Match:
    """One candidate of :meth:`Gallery.identify`: ``accepted`` is ``score >= threshold``, or
    ``None`` when the gallery has no threshold (a registered model nobody calibrated: it ranks,
    it does not decide)."""

    identity: str
    score: float
    accepted: Optional[bool]

    def to_dict(self) -> dict:
        return {"identity": self.identity, "score": round(self.score, 5), "accepted": self.accepted}


class TemplateIndex(Protocol):
    """Exact top-``kk`` templates by inner product."""

    def search(self, query: np.ndarray, kk: int) -> Tuple[np.ndarray, np.ndarray]:
        """``query``: ``(dim,)`` float32. Returns the ``kk`` best templates' scores ``(kk,)``
        float32, best first, and their row indices ``(kk,)``; ``kk`` ≤ the number of templates."""
        ...


class NumpyIndex:
    """A matrix–vector product over ``(N, dim)`` float32 templates; equal scores keep row order."""

    def __init__(self, templates: np.ndarray) -> None:
        self._emb = templates

    def search(self, query: np.ndarray, kk: int) -> Tuple[np.ndarray, np.ndarray]:
        all_scores = (self._emb @ query).astype(np.float32)
        idx = np.argpartition(-all_scores, kk - 1)[:kk] if kk < len(all_scores) else np.arange(len(all_scores))
        idx = idx[np.argsort(-all_scores[idx], kind="stable")]
        return all_scores[idx], idx


class FaissIndex:
    """A faiss flat inner-product index of ``(N, dim)`` float32 templates (copied into faiss)."""

    def __init__(self, templates: np.ndarray, faiss: Any) -> None:
        self._index = faiss.IndexFlatIP(templates.shape[1])
        self._index.add(np.ascontiguousarray(templates))

    def search(self, query: np.ndarray, kk: int) -> Tuple[np.ndarray, np.ndarray]:
        scores, idx = self._index.search(query.reshape(1, -1), kk)
        return scores[0], idx[0]


class TemplateSearch:
    """One gallery's search structure: numpy, or a faiss index built once per change of the
    templates (:meth:`invalidate`). Not locked: the gallery calls :meth:`index` under its lock."""

    def __init__(self) -> None:
        self._faiss: Optional[FaissIndex] = None
        self._no_faiss = False  # faiss found missing once: later searches go straight to numpy
        self._backend = "auto"

    @property
    def backend(self) -> str:
        """One of :data:`SEARCH_BACKENDS`; all give the same identities and scores."""
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in SEARCH_BACKENDS:
            raise InvalidArgumentError(f"search backend must be one of {SEARCH_BACKENDS}, got {value!r}")
        self._backend = value

    def invalidate(self) -> None:
        """The templates changed: the next faiss search rebuilds its index."""
        self._faiss = None

    def index(self, templates: np.ndarray) -> TemplateIndex:
        """The index for ``templates`` ``(N, dim)`` float32: faiss when the backend asks for it and
        it is installed (an optional extra: numpy gives the same exact results), else numpy."""
        use_faiss = self._backend == "faiss" or (self._backend == "auto" and len(templates) >= FAISS_MIN_TEMPLATES)
        if use_faiss and not self._no_faiss:
            if self._faiss is None:
                try:
                    import faiss
                except ImportError:
                    # Once per gallery: every search would otherwise retry the import and log again.
                    log.warning("faiss is not installed (pip install faiss-cpu): searching %d templates with numpy",
                                len(templates))
                    self._no_faiss = True
                    return NumpyIndex(templates)
                self._faiss = FaissIndex(templates, faiss)
            return self._faiss
        return NumpyIndex(templates)


def check_k(k: Any) -> int:
    """``k`` is a positive integer (not a bool). Raises InvalidArgumentError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer, got {k!r}")
    return int(k)


def nearest_identities(index: TemplateIndex, labels: Sequence[str], query: np.ndarray, k: int) -> List[Tuple[str, float]]:
    """The ``k`` best identities for a unit ``(dim,)`` float32 ``query``, each with its best
    template's score, by descending score (equal scores: by name). ``labels``: the identity of
    each of the index's N templates (N ≥ 1)."""
    names = np.asarray(labels)
    # The k best identities' best templates are among the k × (max templates per identity) best templates.
    per_id = int(np.unique(names, return_counts=True)[1].max())
    scores, idx = index.search(query, min(len(names), k * per_id))
    out: Dict[str, float] = {}
    for s, i in zip(scores, idx):
        name = str(names[i])
        if name not in out:
            out[name] = float(s)
            if len(out) == k:
                break
    return sorted(out.items(), key=lambda t: (-t[1], t[0]))
