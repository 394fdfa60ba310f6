"""Gallery for access control: enroll known people, identify faces open-set at a stated
false-accept rate, persist atomically in a pickle-free file.

    g = pifr.Gallery()                              # default embedder; FAR ≤ 1 % per probe by default
    g.enroll("alice", ["a1.jpg", "a2.jpg"])        # per-image failures are reported, not raised
    g.calibrate(target_far=1e-3, impostor_scores=s) # or: a threshold from your own impostor data
    g.identify("door.jpg", k=3)                     # [Match(identity, score, accepted), ...]
    g.save("staff.gallery"); pifr.Gallery.load("staff.gallery")
    with pifr.Gallery.edit("staff.gallery", create=True) as g:   # load–modify–save under a file lock
        g.enroll("bob", ["b1.jpg"])

Unless a threshold is given or calibrated, the threshold follows the gallery's size so that a
stranger is accepted as *anyone* with probability at most :data:`DEFAULT_FAR_PER_PROBE` (1 %),
from impostor tables measured per embedder on named tuning data (:mod:`~pifr.gallery.operating_point`).
Searches are exact, with numpy or faiss (:mod:`~pifr.gallery.search`). Templates and probes are
made by the face pipeline (:mod:`pifr.pipeline`) under the gallery's policy (:mod:`pifr.policy`).

The package: :mod:`~pifr.gallery.storage` (the :class:`GalleryStore` interface, the file, locking),
:mod:`~pifr.gallery.search`, :mod:`~pifr.gallery.operating_point`, :mod:`~pifr.gallery.staleness`,
:mod:`~pifr.gallery.enrollment`; :class:`Gallery` here ties them together.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import GalleryError, InvalidArgumentError, InvalidPolicyError, NoThresholdError, PifrError
from ..image import ImageLike, load_image
from ..pipeline import Pipeline
from ..policy import DEFAULT_FRONTALIZE, resolve_policy
from ..types import Face
from .operating_point import (DEFAULT_FAR_PER_PROBE, OperatingPoint, _check_far, calibrated_threshold, check_threshold,
                              default_operating_point, impostor_tables, warn_about)
from .enrollment import EnrollReport, as_images, embed_new
from .search import FAISS_MIN_TEMPLATES, Match, TemplateSearch, check_k as _check_k, nearest_identities
from .staleness import EXTERNAL, saved_frontalizer, stale_counts, warn_stale
from .storage import (_BUILTIN_VIEWS, SCHEMA_VERSION, UNIT_TOLERANCE, FileStore, GalleryState, GalleryStore, StoreLike,
                      _check_unit, check_identity, file_lock, store_at as _store)

__all__ = ["Gallery", "Match", "EnrollReport", "OperatingPoint", "default_operating_point", "impostor_tables",
           "check_threshold", "check_identity", "file_lock", "GalleryStore", "GalleryState", "FileStore",
           "FAISS_MIN_TEMPLATES", "DEFAULT_FAR_PER_PROBE", "UNIT_TOLERANCE", "SCHEMA_VERSION"]

class Gallery:
    """An in-memory gallery of face templates with an operating threshold.

    Args:
        embedder: embedder name (its weights' sha256 is stored with the gallery).
        threshold: a fixed operating cosine threshold in [0, 1]. Default: the gallery's default
            operating point, which follows its size so that a stranger is accepted with
            probability at most ``far_per_probe`` (module doc; a probe fused under ``"auto"`` gets
            its rule's measured threshold shift); for an embedder without a shipped impostor table,
            or ``frontalize="always"``, the embedder's 1:1 threshold.
        far_per_probe: the per-probe false-accept rate of the default operating point.
        detector: detector name for enrollment and probes.
        frontalize: probe policy, as in :func:`pifr.verify` (``"never"``, ``"auto"``, ``"always"``).
        frontalizer: generator weights when frontalizing and none is installed.
        yaw_threshold, fusion_weight: the ``"auto"`` policy's parameters, as in :func:`pifr.verify`
            (``None``: the rule measured for the embedder; saved with the gallery).

    Raises:
        InvalidPolicyError: unknown ``frontalize`` mode, or yaw threshold / weight out of range.
        InvalidArgumentError: a NaN, negative or above-1 threshold, or a ``far_per_probe`` outside (0, 1).
        DeviceError: ``device`` is not present here.
    """

    def __init__(self, embedder: Optional[str] = None, *, threshold: Optional[float] = None, detector: Optional[str] = None,
                 frontalize: str = DEFAULT_FRONTALIZE, frontalizer: Optional[str] = None,
                 yaw_threshold: Optional[float] = None, fusion_weight: Optional[float] = None, device: Any = None,
                 far_per_probe: float = DEFAULT_FAR_PER_PROBE) -> None:
        from ..embedders import DEFAULT_EMBEDDER, get_embedder

        from ..views import parse_view

        self._emb_name = embedder or DEFAULT_EMBEDDER
        # Checked now (a bad mode or value is the caller's error, before any model loads).
        resolve_policy(self._emb_name, frontalize, parse_view(frontalizer)[0], yaw_threshold=yaw_threshold,
                       fusion_weight=fusion_weight)
        self._fixed: Optional[float] = None if threshold is None else check_threshold(threshold)
        self.far_per_probe = _check_far(far_per_probe, "far_per_probe")
        self._device = device
        emb = get_embedder(self._emb_name, device)
        self.embedder_sha256 = getattr(getattr(emb, "spec", None), "sha256", "") or ""
        self.dim = emb.dim
        try:
            self._pair_threshold = float(emb.threshold)
        except NoThresholdError:
            # A registered model nobody calibrated: it ranks; it decides only with a threshold given
            # here, calibrated, or from an impostor table its registration carries.
            self._pair_threshold = float("nan")
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
        self._views: List[Optional[str]] = []  # per template: its treatment record (pifr.gallery.staleness)
        self._yaws: List[float] = []  # per template: its face's yaw in degrees (NaN: unknown)
        self._pipe: Optional[Pipeline] = None
        self._search = TemplateSearch()
        self._warned_unmeasured = False

    # ------------------------------------------------------------------ operating point
    def operating_point(self) -> Optional[OperatingPoint]:
        """The default operating point for the current number of templates, or ``None`` when the
        threshold is fixed (given or calibrated) or no shipped table applies (another embedder's
        weights, or ``frontalize="always"``, whose scores the raw-embedding tables do not describe)."""
        with self._lock:
            # "auto" probes keep the raw tables: fused ones get the rule's measured threshold shift.
            if self._fixed is not None or self.frontalize == "always":
                return None
            op = default_operating_point(self._emb_name, len(self._labels), self.far_per_probe, self.embedder_sha256)
        if (op is None or not op.measured) and not self._warned_unmeasured:
            self._warned_unmeasured = True
            warn_about(op, self._emb_name, self.frontalize, self._pair_threshold)
        return op

    @property
    def threshold(self) -> float:
        """The operating cosine threshold now (see the class doc)."""
        if self._fixed is not None:
            return self._fixed
        op = self.operating_point()
        if op is None and self._pair_threshold != self._pair_threshold:  # NaN: nothing measured
            raise NoThresholdError(f"embedder {self._emb_name!r} has no threshold: this gallery ranks (Match.accepted "
                                   "is None) but cannot decide; pass threshold=, calibrate(), or register the model "
                                   "with its threshold or impostor table")
        return self._pair_threshold if op is None else op.threshold

    @threshold.setter
    def threshold(self, value: Optional[float]) -> None:
        """Fix the threshold (``None``: back to the default operating point)."""
        with self._lock:
            self._fixed = None if value is None else check_threshold(value)
            self.calibrated_far = None

    @property
    def threshold_source(self) -> str:
        """``"default"`` (follows the size, from the shipped tables), ``"calibrated"``, ``"fixed"``
        (given), or ``"embedder"`` (no table applies: the embedder's 1:1 threshold)."""
        if self._fixed is not None:
            return "calibrated" if self.calibrated_far is not None else "fixed"
        return "default" if self.operating_point() is not None else "embedder"

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
            return dict(Counter(self._labels))

    @property
    def search_backend(self) -> str:
        """How :meth:`search_embedding` searches: ``"auto"`` (faiss from ``FAISS_MIN_TEMPLATES``
        templates where installed), ``"numpy"`` or ``"faiss"`` — the same results; not saved."""
        return self._search.backend

    @search_backend.setter
    def search_backend(self, value: str) -> None:
        self._search.backend = value

    @property
    def stale_templates(self) -> Dict[str, int]:
        """Templates made otherwise than the gallery's policy would make a probe of the same photo
        now (a re-tuned rule, another 3D fit network, refiner or generator, or a rule that now
        fuses a face it left raw: :mod:`pifr.gallery.staleness`), counted by identity; re-enrolling
        those photos (:meth:`remove`, then :meth:`enroll`) rebuilds them. :meth:`add_embeddings`
        templates and those from files of older pifr (provenance unknown) are never counted."""
        from ..views import parse_view, view_key

        with self._lock:
            triples = list(zip(self._labels, self._views, self._yaws))
        policy = resolve_policy(self._emb_name, self.frontalize, parse_view(self.frontalizer)[0],
                                yaw_threshold=self.yaw_threshold, fusion_weight=self.fusion_weight)
        return stale_counts(triples, policy, lambda: view_key(self.frontalizer))

    def pipeline(self) -> Pipeline:
        """The face pipeline that makes this gallery's templates and probes (built once)."""
        if self._pipe is None:
            self._pipe = Pipeline(self._emb_name, frontalize=self.frontalize, frontalizer=self.frontalizer,
                                  yaw_threshold=self.yaw_threshold, fusion_weight=self.fusion_weight,
                                  detector=self.detector, device=self._device)
        return self._pipe

    # ------------------------------------------------------------------ mutation
    def enroll(self, identity: str, images: Sequence[ImageLike]) -> EnrollReport:
        """Add templates for each usable image, made under the gallery's ``frontalize`` policy, the
        images going through the face pipeline in batches. Bad images and images already enrolled
        (same decoded pixels, for any identity) are reported by index and skipped; the rest are
        kept. The duplicate check holds across threads enrolling at once: it is made again when
        the templates are added, under the gallery's lock.

        Raises:
            InvalidArgumentError: a bad identity (empty, control characters). A single path,
            bytes, array or PIL image is taken as a list of one image.
        """
        check_identity(identity)
        images = as_images(images)
        with self._lock:
            known = set(self._hashes)
        done, failures, dups = embed_new(self.pipeline(), images, known)
        with self._lock:
            # Another thread may have enrolled the same pixels since `known` was read.
            now = set(self._hashes)
            kept = []
            for i, r in done:
                if r.image_sha256 in now:
                    dups.append(i)
                    continue
                now.add(r.image_sha256)  # type: ignore[arg-type]
                kept.append(r)
            if kept:
                self._append(np.stack([r.embedding for r in kept]).astype(np.float32), [identity] * len(kept),
                             [r.image_sha256 for r in kept], [r.treatment for r in kept],  # type: ignore[misc]
                             [float("nan") if r.face.yaw is None else float(r.face.yaw) for r in kept])
        return EnrollReport(identity, len(kept), tuple(failures), tuple(sorted(dups)))

    def _append(self, e: np.ndarray, labels: List[str], hashes: List[str], views: List[Optional[str]],
                yaws: List[float]) -> None:
        """Add checked templates ``e`` ``(n, dim)`` float32 with their records (caller holds the lock)."""
        self._emb = np.concatenate([self._emb, e], 0)
        self._labels += labels
        self._hashes += hashes
        self._views += views
        self._yaws += yaws
        self._search.invalidate()

    def add_embeddings(self, identity: Union[str, Sequence[str]], embeddings: np.ndarray) -> None:
        """Add precomputed, L2-normalised ``(N, dim)`` templates (e.g. from :func:`pifr.embed_many`),
        all of ``identity``, or one identity per row when ``identity`` is a sequence of N names
        (a bulk load in one call).

        Raises:
            InvalidArgumentError: bad identity, wrong width, non-finite or non-unit vectors.
            GalleryError: as many names as rows are needed.
        """
        if not isinstance(identity, (list, tuple)):
            check_identity(identity)  # one name: a str, else a typed error (not an iteration over it)
        names = [identity] if isinstance(identity, str) else list(identity)
        for name in dict.fromkeys(names):
            check_identity(name)
        e = np.asarray(embeddings, np.float32)
        if e.ndim not in (1, 2) or e.shape[-1] != self.dim:
            raise InvalidArgumentError(f"embeddings must be (N, {self.dim}), got shape {e.shape}")
        e = e.reshape(-1, self.dim)
        _check_unit(e, InvalidArgumentError, "embeddings")
        if isinstance(identity, str):
            names = names * len(e)
        if len(names) != len(e):
            raise GalleryError(f"{len(names)} identities for {len(e)} embeddings")
        with self._lock:
            n0 = len(self._hashes)
            # Not an image hash: it only has to be unique and small (never the identity's name).
            hashes = [f"embedding:{n0 + i}:{hashlib.sha256(v.tobytes()).hexdigest()[:16]}" for i, v in enumerate(e)]
            # How the caller made them is unknown: never counted stale.
            self._append(e, names, hashes, [EXTERNAL] * len(e), [float("nan")] * len(e))

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
            self._views = [self._views[i] for i in keep]
            self._yaws = [self._yaws[i] for i in keep]
            self._search.invalidate()
            return n

    # ------------------------------------------------------------------ search
    def search_embedding(self, query: np.ndarray, k: int = 1, *, threshold_shift: float = 0.0) -> List[Match]:
        """Top-``k`` identities for a unit ``(dim,)`` query vector (an identity's score = its best
        template). ``threshold_shift`` is added to the operating threshold for this query (a probe
        fused under ``"auto"``; :meth:`identify` passes it).

        Raises:
            InvalidArgumentError: ``k`` < 1 or a query that is not a finite ``(dim,)`` vector.
            GalleryError: the gallery is empty.
        """
        k = _check_k(k)
        qv = np.asarray(query, np.float32)
        if qv.size != self.dim or not np.all(np.isfinite(qv)):
            raise InvalidArgumentError(f"query must be a finite ({self.dim},) vector, got shape {qv.shape}")
        with self._lock:
            if not self._labels:
                raise GalleryError("the gallery is empty: enroll someone first")
            labels = list(self._labels)
            try:
                thr: Optional[float] = self.threshold + float(threshold_shift)
            except NoThresholdError:
                thr = None  # ranking only
            index = self._search.index(self._emb)
        return [Match(n, s, None if thr is None else s >= thr) for n, s in nearest_identities(index, labels, qv.reshape(-1), k)]

    def probe_embedding(self, img: Union[ImageLike, Sequence[Any]]) -> Tuple[np.ndarray, float]:
        """``(unit (dim,) embedding, threshold shift)`` of a probe as :meth:`identify` makes it: one
        image, or a list of one person's frames (images or ``(image, Face)`` pairs) pooled as one
        event (:meth:`pifr.pipeline.Pipeline.embed_event`); pass both to :meth:`search_embedding`."""
        event = self.pipeline().embed_event(img, "the probe")
        return event.embedding, event.threshold_shift

    def identify(self, img: Union[ImageLike, Sequence[Any]], k: int = 1) -> List[Match]:
        """Ranked candidates for the largest face in ``img``; ``accepted`` marks scores at or
        above the operating threshold (an unknown face has no accepted match). ``img`` may be a
        list of one person's frames (one door event: images, or ``(image, Face)`` pairs of a
        tracked face): pooled into one probe, decided once, at the threshold plus the shift measured
        for pooled probes, so the FAR per probe holds per event; a bad frame is left out.

        Raises:
            GalleryError: the gallery is empty. NoFaceError / InvalidImageError: bad probe.
            InvalidArgumentError: ``k`` < 1, or an empty list.
        """
        _check_k(k)
        if not self._labels:
            raise GalleryError("the gallery is empty: enroll someone first")
        v, shift = self.probe_embedding(img)
        return self.search_embedding(v, k, threshold_shift=shift)

    def identify_face(self, img: ImageLike, face: Face, k: int = 1) -> List[Match]:
        """:meth:`identify` for a face already found in ``img`` (e.g. each of
        :func:`pifr.detect`'s faces in a video frame): the gallery's probe policy and its
        threshold shift apply as in :meth:`identify`.

        Raises:
            GalleryError: the gallery is empty. InvalidImageError: bad image. FitError: the 3D fit
            refused a face the policy frontalizes. InvalidArgumentError: ``k`` < 1.
        """
        _check_k(k)
        if not self._labels:
            raise GalleryError("the gallery is empty: enroll someone first")
        r = self.pipeline().embed_one((load_image(img), face), "the probe")
        return self.search_embedding(r.embedding, k, threshold_shift=r.threshold_shift)

    def verify(self, identity: str, img: Union[ImageLike, Sequence[Any]]) -> Match:
        """1:1 check of ``img`` (or a list of one person's frames, as in :meth:`identify`) against
        one enrolled identity; ``accepted`` is ``None`` when the gallery has no threshold."""
        with self._lock:
            sel = [i for i, l in enumerate(self._labels) if l == identity]
            if not sel:
                raise GalleryError(f"identity {identity!r} is not enrolled")
            emb = self._emb[sel]
        v, shift = self.probe_embedding(img)
        s = float((emb @ v).max())
        try:
            return Match(identity, s, s >= self.threshold + shift)
        except NoThresholdError:
            return Match(identity, s, None)

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
        comparison (as in :func:`pifr.verify`). Returns the threshold (now fixed: it no longer
        follows the gallery's size); records the FAR it targets.

        Raises:
            InvalidArgumentError: ``target_far`` outside (0, 1), no (or non-finite) impostor scores,
            ``gallery_size`` < 1, or an unknown ``per``.
        """
        thr = calibrated_threshold(target_far, impostor_scores, embeddings=embeddings, labels=labels, per=per,
                                   gallery_size=gallery_size, identities=len(self.identities))
        with self._lock:
            self._fixed = thr
            self.calibrated_far = float(target_far)
        return thr

    # ------------------------------------------------------------------ persistence
    def state(self) -> GalleryState:
        """A snapshot of the gallery's templates and settings, as a :class:`GalleryStore` saves it."""
        with self._lock:
            return GalleryState(
                embedder=self._emb_name, embedder_sha256=self.embedder_sha256, embeddings=self._emb,
                labels=tuple(self._labels), hashes=tuple(self._hashes), views=tuple(self._views), yaws=tuple(self._yaws),
                operating_threshold=self.threshold, threshold=self._fixed, far_per_probe=self.far_per_probe,
                calibrated_far=self.calibrated_far, frontalize=self.frontalize, yaw_threshold=self.yaw_threshold,
                fusion_weight=self.fusion_weight,
                # Only a built-in view's name: a weights path read back from a file would let the file choose what loads.
                frontalizer=self.frontalizer if self.frontalizer in _BUILTIN_VIEWS else None)

    def save(self, path: StoreLike) -> None:
        """Write the gallery to ``path`` (a file, or any :class:`GalleryStore`). A file is written
        atomically: a temporary file in the same folder, flushed to disk, then renamed over ``path``.

        Raises:
            GalleryError: the folder is missing or not writable, or the disk is full (the
            temporary file is removed; an existing gallery at ``path`` is untouched).
        """
        store = _store(path)
        store.save(self.state())

    @classmethod
    def load(cls, path: StoreLike, *, device: Any = None, detector: Optional[str] = None,
             frontalizer: Optional[str] = None) -> "Gallery":
        """Read a gallery written by :meth:`save` (a file of schema 2, or 1 from older pifr; or any
        :class:`GalleryStore`). Logs a warning when templates were fused from a view made
        differently from how this pifr makes it now (:attr:`stale_templates`).

        ``frontalizer``: as for :class:`Gallery`; ``None`` takes the one the gallery was saved with
        when that was a built-in view (``"3d"``, ``"refined"``) — a weights file is never recorded,
        so pass it again.

        Raises:
            GalleryError: missing, corrupt, tampered (non-unit or non-finite templates, bad names,
            missing or mistyped header fields) or unknown-schema file, or made with an embedder
            whose weights differ from the ones installed here.
        """
        store = _store(path, device)
        state = store.load()
        return cls._from_state(state, str(store), device=device, detector=detector, frontalizer=frontalizer)

    @classmethod
    def _from_state(cls, state: GalleryState, where: str, *, device: Any, detector: Optional[str],
                    frontalizer: Optional[str]) -> "Gallery":
        """A gallery holding ``state`` (read from ``where``, named in errors and warnings)."""
        if frontalizer is None:
            frontalizer = saved_frontalizer(state.frontalizer, where)
        try:
            g = cls(state.embedder, threshold=state.threshold, detector=detector, frontalize=state.frontalize,
                    frontalizer=frontalizer, yaw_threshold=state.yaw_threshold, fusion_weight=state.fusion_weight,
                    device=device, far_per_probe=state.far_per_probe)
        except InvalidPolicyError as e:
            raise GalleryError(f"{where}: invalid frontalization policy in the header ({e})") from e
        except (GalleryError, InvalidArgumentError) as e:
            raise GalleryError(f"{where}: {e}") from e
        except PifrError as e:  # unknown embedder, missing weights: say which file needs them
            raise GalleryError(f"{where}: made with embedder {state.embedder!r}, which cannot be loaded here "
                               f"({type(e).__name__}: {e})") from e
        if state.embedder_sha256 and g.embedder_sha256 != state.embedder_sha256:
            raise GalleryError(f"{where}: made with {state.embedder} weights {state.embedder_sha256[:12]}…, "
                               f"but the installed ones are {g.embedder_sha256[:12]}…: re-enroll")
        emb = np.asarray(state.embeddings, np.float32)
        if emb.shape != (len(state.labels), g.dim) or not len(state.hashes) == len(state.views) == len(state.labels):
            raise GalleryError(f"{where}: inconsistent arrays (embeddings {emb.dtype} {emb.shape}, {len(state.labels)} "
                               f"labels, {len(state.hashes)} hashes)")
        g._emb, g._labels, g._hashes, g._views = emb, list(state.labels), list(state.hashes), list(state.views)
        g._yaws = [float(y) for y in state.yaws] if state.yaws else [float("nan")] * len(emb)
        if len(g._yaws) != len(emb):
            raise GalleryError(f"{where}: {len(g._yaws)} yaws for {len(emb)} templates")
        g.calibrated_far = state.calibrated_far if state.threshold is not None else None
        warn_stale(where, g.stale_templates)
        return g

    @classmethod
    @contextlib.contextmanager
    def edit(cls, path: StoreLike, *, create: bool = False, embedder: Optional[str] = None,
             **kwargs: Any) -> Iterator["Gallery"]:
        """Load ``path`` (or, with ``create``, start a new gallery if there is none), hand it over,
        and save it when the block ends without an exception — all under the store's lock
        (:func:`file_lock` for a file), so concurrent editors (two ``pifr enroll`` runs) take turns
        and no one's change is lost (an example in the module doc).

        ``kwargs`` go to :meth:`load` (``device``, ``detector``, ``frontalizer``); ``embedder``
        only applies to a new gallery. Raises GalleryError (missing file without ``create``,
        unreadable file, failed save).
        """
        store = _store(path, kwargs.get("device"))
        with store.lock():
            if store.version() is not None:
                g = cls.load(store, **kwargs)
            elif create:
                g = cls(embedder, **kwargs)
            else:
                raise GalleryError(f"{store}: no such gallery file")
            yield g
            g.save(store)
