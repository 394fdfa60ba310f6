"""Gallery for access control: enroll known people, identify faces open-set at a calibrated
false-accept rate, persist atomically in a pickle-free file.

    g = pifr.Gallery()                              # default embedder
    g.enroll("alice", ["a1.jpg", "a2.jpg"])        # per-image failures are reported, not raised
    g.calibrate(target_far=1e-3, impostor_scores=s) # threshold for a chosen FAR
    g.identify("door.jpg", k=3)                     # [Match(identity, score, accepted), ...]
    g.save("staff.gallery"); pifr.Gallery.load("staff.gallery")

Scores are cosine similarities; an identity's score is the best over its templates. Searches
are exact: numpy, or from :data:`FAISS_MIN_TEMPLATES` templates a faiss flat inner-product index
where faiss is installed (`pip install pifr[faiss]`; the same results, and on 2 CPU cores no faster
up to 1M templates: benchmarks/gallery.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import GalleryError, InvalidPolicyError, PifrError
from .frontalization import AUTO_FUSION_WEIGHT, AUTO_YAW_THRESHOLD, embed_face_policy, get_frontalizer, validate_policy
from .image import ImageLike, load_image

log = logging.getLogger("pifr")

SCHEMA_VERSION = 1
#: From this many templates identify() searches with faiss (exact inner product) instead of numpy;
#: measured on 2 CPU cores, exact faiss was no faster than numpy up to 1M templates (benchmarks/gallery.py).
FAISS_MIN_TEMPLATES = 1_000_000
_MAGIC = "pifr-gallery"


@dataclass(frozen=True)
class Match:
    """One candidate of :meth:`Gallery.identify`: ``accepted`` is ``score >= threshold``."""

    identity: str
    score: float
    accepted: bool

    def to_dict(self) -> dict:
        return {"identity": self.identity, "score": round(self.score, 5), "accepted": self.accepted}


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


class Gallery:
    """An in-memory gallery of face templates with an operating threshold.

    Args:
        embedder: embedder name (its weights' sha256 is stored with the gallery).
        threshold: operating cosine threshold; default: the embedder's verification threshold.
        detector: detector name for enrollment and probes.
        frontalize: probe policy, as in :func:`pifr.verify` (``"never"``, ``"auto"``, ``"always"``).
        frontalizer: generator weights when frontalizing and none is installed.
        yaw_threshold, fusion_weight: the ``"auto"`` policy's parameters, as in :func:`pifr.verify`
            (saved with the gallery).

    Raises:
        InvalidPolicyError: unknown ``frontalize`` mode, or threshold / weight out of range.
    """

    def __init__(self, embedder: Optional[str] = None, *, threshold: Optional[float] = None, detector: Optional[str] = None,
                 frontalize: str = "never", frontalizer: Optional[str] = None,
                 yaw_threshold: float = AUTO_YAW_THRESHOLD, fusion_weight: float = AUTO_FUSION_WEIGHT,
                 device: Any = None) -> None:
        from .embedders import DEFAULT_EMBEDDER, get_embedder

        frontalize, yaw_threshold, fusion_weight = validate_policy(frontalize, yaw_threshold, fusion_weight)

        self._emb_name = embedder or DEFAULT_EMBEDDER
        self._device = device
        emb = get_embedder(self._emb_name, device)
        self.embedder_sha256 = emb.spec.sha256 or ""
        self.dim = emb.dim
        self.threshold = float(emb.threshold if threshold is None else threshold)
        self.calibrated_far: Optional[float] = None
        self.detector = detector
        self.frontalize = frontalize
        self.frontalizer = frontalizer
        self.yaw_threshold = yaw_threshold
        self.fusion_weight = fusion_weight
        self._lock = threading.RLock()
        self._emb = np.zeros((0, self.dim), np.float32)
        self._labels: List[str] = []
        self._hashes: List[str] = []
        self._index: Any = None  # faiss index, rebuilt lazily
        self._no_faiss = False  # faiss found missing once: later searches go straight to numpy

    # ------------------------------------------------------------------ basic facts
    @property
    def embedder(self) -> str:
        return self._emb_name

    @property
    def identities(self) -> List[str]:
        with self._lock:
            return sorted(set(self._labels))

    def __len__(self) -> int:
        return len(self.identities)

    @property
    def templates(self) -> int:
        return len(self._labels)

    def template_counts(self) -> Dict[str, int]:
        """How many templates each enrolled identity has, by identity name."""
        with self._lock:
            counts: Dict[str, int] = {}
            for name in self._labels:
                counts[name] = counts.get(name, 0) + 1
            return counts

    # ------------------------------------------------------------------ embedding
    def _embed(self, img: ImageLike, policy: Optional[str] = None) -> Tuple[List[np.ndarray], str]:
        """Templates of the largest face in ``img`` under ``policy`` (default: the gallery's
        probe policy; ``"both"`` = the raw and the frontalized template) and the image's hash."""
        from .detection import detect_one
        from .embedders import get_embedder

        policy = policy or self.frontalize
        arr = load_image(img)
        face = detect_one(arr, detector=self.detector, device=self._device)
        emb = get_embedder(self._emb_name, self._device)
        gen = None
        if policy != "never":
            gen = get_frontalizer(self.frontalizer, self._device)
        modes = ("never", "always") if policy == "both" else (policy,)
        vecs = [embed_face_policy(arr, face, emb, m, gen, self.yaw_threshold, self.fusion_weight)[0].astype(np.float32)
                for m in modes]
        return vecs, _pixels_hash(arr)

    # ------------------------------------------------------------------ mutation
    def enroll(self, identity: str, images: Sequence[ImageLike], *, templates: Optional[str] = None) -> EnrollReport:
        """Add templates for each usable image. Bad images and images already enrolled (same
        decoded pixels, for any identity) are reported by index and skipped; the rest are kept.

        ``templates``: ``None`` follows the gallery's ``frontalize`` policy; ``"both"`` stores the
        raw and the frontalized template of every image (needs a frontalizer), so frontalized and
        raw probes each meet their kind."""
        if not identity or not isinstance(identity, str):
            raise GalleryError("identity must be a non-empty string")
        if isinstance(images, (str, bytes, os.PathLike, np.ndarray)):
            images = [images]
        if templates not in (None, "both"):
            raise GalleryError("templates must be None or 'both'")
        vecs, hashes, failures, dups = [], [], [], []
        with self._lock:
            known = set(self._hashes)
        for i, img in enumerate(images):
            try:
                vs, h = self._embed(img, templates)
            except PifrError as e:
                failures.append((i, f"{type(e).__name__}: {e}"))
                continue
            if h in known or h in hashes:
                dups.append(i)
                continue
            vecs += vs
            hashes += [h] * len(vs)
        with self._lock:
            if vecs:
                self._emb = np.concatenate([self._emb, np.stack(vecs)], 0)
                self._labels += [identity] * len(vecs)
                self._hashes += hashes
                self._index = None
        return EnrollReport(identity, len(vecs), tuple(failures), tuple(dups))

    def add_embeddings(self, identity: Union[str, Sequence[str]], embeddings: np.ndarray) -> None:
        """Add precomputed, L2-normalised ``(N, dim)`` templates (e.g. from :func:`pifr.embed_many`),
        all of ``identity``, or one identity per row when ``identity`` is a sequence of N names
        (a bulk load in one call)."""
        e = np.asarray(embeddings, np.float32).reshape(-1, self.dim)
        names = [identity] * len(e) if isinstance(identity, str) else [str(x) for x in identity]
        if len(names) != len(e):
            raise GalleryError(f"{len(names)} identities for {len(e)} embeddings")
        with self._lock:
            n0 = len(self._hashes)
            self._emb = np.concatenate([self._emb, e], 0)
            self._labels += names
            self._hashes += [f"embedding:{name}:{n0 + i}" for i, name in enumerate(names)]
            self._index = None

    def remove(self, identity: str) -> int:
        """Remove every template of ``identity``; returns how many. Raises GalleryError if unknown."""
        with self._lock:
            keep = [i for i, l in enumerate(self._labels) if l != identity]
            n = len(self._labels) - len(keep)
            if n == 0:
                raise GalleryError(f"identity {identity!r} is not enrolled")
            self._emb = self._emb[keep]
            self._labels = [self._labels[i] for i in keep]
            self._hashes = [self._hashes[i] for i in keep]
            self._index = None
            return n

    # ------------------------------------------------------------------ search
    def search_embedding(self, query: np.ndarray, k: int = 1) -> List[Match]:
        """Top-``k`` identities for a unit ``(dim,)`` query vector (an identity's score = its best template)."""
        with self._lock:
            if not self._labels:
                raise GalleryError("the gallery is empty: enroll someone first")
            emb, labels, thr = self._emb, np.array(self._labels), self.threshold
            index = self._faiss_index() if len(labels) >= FAISS_MIN_TEMPLATES else None
        q = np.asarray(query, np.float32).reshape(1, -1)
        # The k best identities' best templates are among the k × (max templates per identity) best templates.
        per_id = int(np.unique(labels, return_counts=True)[1].max())
        kk = min(len(labels), k * per_id)
        if index is not None:
            scores, idx = index.search(q, kk)
            scores, idx = scores[0], idx[0]
        else:
            all_scores = (emb @ q[0]).astype(np.float32)
            idx = np.argpartition(-all_scores, kk - 1)[:kk] if kk < len(all_scores) else np.arange(len(all_scores))
            idx = idx[np.argsort(-all_scores[idx], kind="stable")]
            scores = all_scores[idx]
        out: Dict[str, float] = {}
        for s, i in zip(scores, idx):
            name = labels[i]
            if name not in out:
                out[name] = float(s)
                if len(out) == k:
                    break
        return [Match(n, s, s >= thr) for n, s in sorted(out.items(), key=lambda t: (-t[1], t[0]))]

    def _faiss_index(self) -> Any:
        """The faiss index of the templates, or ``None`` without faiss (an optional extra: numpy
        gives the same exact results)."""
        if self._no_faiss:
            return None
        if self._index is None:
            try:
                import faiss
            except ImportError:
                # Once per gallery: every search would otherwise retry the import and log again.
                log.warning("faiss is not installed (pip install faiss-cpu): searching %d templates with numpy",
                            len(self._labels))
                self._no_faiss = True
                return None

            index = faiss.IndexFlatIP(self.dim)
            index.add(np.ascontiguousarray(self._emb))
            self._index = index
        return self._index

    def identify(self, img: ImageLike, k: int = 1) -> List[Match]:
        """Ranked candidates for the largest face in ``img``; ``accepted`` marks scores at or
        above the operating threshold (an unknown face has no accepted match).

        Raises:
            GalleryError: the gallery is empty. NoFaceError / InvalidImageError: bad probe.
        """
        if not self._labels:
            raise GalleryError("the gallery is empty: enroll someone first")
        vs, _ = self._embed(img)
        return self.search_embedding(vs[0], k)

    def verify(self, identity: str, img: ImageLike) -> Match:
        """1:1 check of ``img`` against one enrolled identity."""
        with self._lock:
            sel = [i for i, l in enumerate(self._labels) if l == identity]
            if not sel:
                raise GalleryError(f"identity {identity!r} is not enrolled")
            emb = self._emb[sel]
        vs, _ = self._embed(img)
        s = float((emb @ vs[0]).max())
        return Match(identity, s, s >= self.threshold)

    # ------------------------------------------------------------------ thresholds
    def calibrate(self, target_far: float, impostor_scores: Optional[np.ndarray] = None, *,
                  embeddings: Optional[np.ndarray] = None, labels: Optional[Sequence[Any]] = None,
                  per: str = "probe", gallery_size: Optional[int] = None) -> float:
        """Set the operating threshold for a target false-accept rate from 1:1 impostor scores
        (given directly, or every different-identity pair of labelled ``embeddings``).

        ``per="probe"`` (default): ``target_far`` is the chance that a stranger is accepted as
        *anyone* in a gallery of ``gallery_size`` identities (default: the current size). With
        independent comparisons that needs a per-comparison rate of 1 − (1 − FAR)^(1/N), which is
        what the 1:1 threshold is set to. ``per="comparison"``: ``target_far`` applies to one 1:1
        comparison (as in :func:`pifr.verify`). Returns the threshold; records the FAR it targets.
        """
        if not 0 < target_far < 1:
            raise ValueError("target_far must lie in (0, 1)")
        if per not in ("probe", "comparison"):
            raise ValueError("per must be 'probe' or 'comparison'")
        if impostor_scores is None:
            if embeddings is None or labels is None:
                raise ValueError("give impostor_scores, or embeddings and labels")
            e = np.asarray(embeddings, np.float32)
            lab = np.asarray(labels)
            sims = e @ e.T
            iu = np.triu_indices(len(e), 1)
            diff = lab[iu[0]] != lab[iu[1]]
            impostor_scores = sims[iu][diff]
        rate = target_far
        if per == "probe":
            n = gallery_size if gallery_size is not None else max(1, len(self.identities))
            rate = 1.0 - (1.0 - target_far) ** (1.0 / n)
        s = np.sort(np.asarray(impostor_scores, np.float64))[::-1]
        if len(s) < 1 / rate:
            log.warning("calibrating a per-comparison FAR of %.1e from only %d impostor scores: the threshold is "
                        "the highest impostor score seen, and the true FAR is not measured", rate, len(s))
        n_allowed = int(np.floor(rate * len(s)))
        # Accept scores >= thr: the (n_allowed)-th highest impostor must fall just below it.
        thr = float(np.nextafter(s[n_allowed], np.inf)) if n_allowed < len(s) else float(s[-1])
        with self._lock:
            self.threshold = thr
            self.calibrated_far = float(target_far)
        return thr

    # ------------------------------------------------------------------ persistence
    def _header(self) -> dict:
        return {"magic": _MAGIC, "schema": SCHEMA_VERSION, "embedder": self._emb_name, "embedder_sha256": self.embedder_sha256,
                "dim": self.dim, "threshold": self.threshold, "calibrated_far": self.calibrated_far,
                "frontalize": self.frontalize, "yaw_threshold": self.yaw_threshold, "fusion_weight": self.fusion_weight,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S"), "templates": len(self._labels)}

    def save(self, path: Union[str, Path]) -> None:
        """Write atomically: a temporary file in the same folder, flushed to disk, then renamed over ``path``."""
        path = Path(path)
        with self._lock:
            header = self._header()
            buf = io.BytesIO()
            np.savez(buf, header=np.array(json.dumps(header)), embeddings=self._emb,
                     labels=np.array(self._labels, dtype=str), hashes=np.array(self._hashes, dtype=str))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Union[str, Path], *, device: Any = None, detector: Optional[str] = None,
             frontalizer: Optional[str] = None) -> "Gallery":
        """Read a gallery written by :meth:`save`.

        Raises:
            GalleryError: missing, corrupt or unknown-schema file, or made with an embedder whose
            weights differ from the ones installed here.
        """
        path = Path(path)
        if not path.is_file():
            raise GalleryError(f"{path}: no such gallery file")
        try:
            z = np.load(path, allow_pickle=False)
            header = json.loads(str(z["header"]))
            emb, labels, hashes = z["embeddings"], [str(x) for x in z["labels"]], [str(x) for x in z["hashes"]]
        except Exception as e:  # noqa: BLE001 - every parse failure is a corrupt file to the caller
            raise GalleryError(f"{path}: not a readable pifr gallery ({type(e).__name__}: {e})") from e
        if header.get("magic") != _MAGIC:
            raise GalleryError(f"{path}: not a pifr gallery file")
        if header.get("schema") != SCHEMA_VERSION:
            raise GalleryError(f"{path}: gallery schema {header.get('schema')!r} is not supported (this pifr reads {SCHEMA_VERSION})")
        try:
            g = cls(header["embedder"], threshold=header["threshold"], detector=detector,
                    frontalize=header.get("frontalize", "never"), frontalizer=frontalizer,
                    yaw_threshold=header.get("yaw_threshold", AUTO_YAW_THRESHOLD),
                    fusion_weight=header.get("fusion_weight", AUTO_FUSION_WEIGHT), device=device)
        except InvalidPolicyError as e:
            raise GalleryError(f"{path}: invalid frontalization policy in the header ({e})") from e
        if header["embedder_sha256"] and g.embedder_sha256 != header["embedder_sha256"]:
            raise GalleryError(f"{path}: made with {header['embedder']} weights {header['embedder_sha256'][:12]}…, "
                               f"but the installed ones are {g.embedder_sha256[:12]}…: re-enroll")
        if emb.shape != (len(labels), g.dim) or len(hashes) != len(labels):
            raise GalleryError(f"{path}: inconsistent arrays (embeddings {emb.shape}, {len(labels)} labels)")
        g._emb, g._labels, g._hashes = emb.astype(np.float32), labels, hashes
        g.calibrated_far = header.get("calibrated_far")
        return g
