"""Gallery for access control: enroll known people, identify faces open-set at a stated
false-accept rate, persist atomically in a pickle-free file.

    g = pifr.Gallery()                              # default embedder; FAR ≤ 1 % per probe by default
    g.enroll("alice", ["a1.jpg", "a2.jpg"])        # per-image failures are reported, not raised
    g.calibrate(target_far=1e-3, impostor_scores=s) # or: a threshold from your own impostor data
    g.identify("door.jpg", k=3)                     # [Match(identity, score, accepted), ...]
    g.save("staff.gallery"); pifr.Gallery.load("staff.gallery")
    with pifr.Gallery.edit("staff.gallery", create=True) as g:   # load–modify–save under a file lock
        g.enroll("bob", ["b1.jpg"])

Default operating point: unless a threshold is given or calibrated, the threshold follows the
gallery's size so that a stranger is accepted as *anyone* with probability at most
:data:`DEFAULT_FAR_PER_PROBE` (1 %). It is read from impostor-score tables measured per embedder on
named tuning data (``pifr/data/impostor_tables.json``, written by ``benchmarks/impostor_tables.py``):
with ``T`` templates, each 1:1 comparison may falsely match with rate ``p = 1 − (1 − FAR)^(1/T)``,
and the threshold is the table's score for ``p``. Counting every template as an independent trial
is conservative: two photos of one enrolled person give correlated scores.

Scores are cosine similarities; an identity's score is the best over its templates. Searches
are exact: numpy, or from :data:`FAISS_MIN_TEMPLATES` templates a faiss flat inner-product index
where faiss is installed (`pip install pifr[faiss]`; the same results, and on 2 CPU cores no faster
up to 1M templates: benchmarks/gallery.py).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import os
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import GalleryError, InvalidArgumentError, InvalidPolicyError, NoThresholdError, PifrError
from .frontalization import (DEFAULT_FRONTALIZE, auto_fuses_above, embed_face_policy, frontal_view, threshold_shift,
                             validate_policy, view_fingerprint)
from .image import ImageLike, load_image
from .types import Face

log = logging.getLogger("pifr")

SCHEMA_VERSION = 2  # 2: variable-width UTF-8 labels and hashes, threshold mode; 1 is still read
# Schema 2 files may hold the optional arrays view_ids / views_utf8 / views_offsets (each template's
# view provenance, see Gallery._views); the schema stays 2 because a pifr without them ignores them.
#: From this many templates identify() searches with faiss (exact inner product) instead of numpy;
#: measured on 2 CPU cores, exact faiss was no faster than numpy up to 1M templates (benchmarks/gallery.py).
FAISS_MIN_TEMPLATES = 1_000_000
#: The false-accept rate per probe that a gallery's default threshold holds for its current size.
DEFAULT_FAR_PER_PROBE = 0.01
#: Templates must be unit vectors to within this (a loaded file is checked: a ×1000 template would
#: score far above any threshold).
UNIT_TOLERANCE = 1e-3
_MAGIC = "pifr-gallery"
_TABLES = Path(__file__).with_name("data") / "impostor_tables.json"
_MODES = ("never", "always", "auto")


@functools.lru_cache(maxsize=1)
def impostor_tables() -> Dict[str, dict]:
    """The shipped impostor-score tables, by embedder name (see the module doc); ``{}`` if absent."""
    try:
        return json.loads(_TABLES.read_text())
    except FileNotFoundError:
        return {}


@dataclass(frozen=True)
class OperatingPoint:
    """A default threshold and where it comes from.

    Attributes:
        threshold: cosine threshold (accept when score ≥ threshold).
        far_per_probe: the per-probe false-accept rate it is set for.
        far_per_comparison: the 1:1 rate that needs, ``1 − (1 − far_per_probe)^(1/comparisons)``.
        comparisons: templates a probe is compared with.
        measured: ``False`` when the 1:1 rate is below what the table's data can resolve (the
            threshold is then just above the highest impostor score seen, and its FAR is unmeasured).
        source: the table's data and command.
    """

    threshold: float
    far_per_probe: float
    far_per_comparison: float
    comparisons: int
    measured: bool
    source: str


def default_operating_point(embedder: str, comparisons: int, far_per_probe: float = DEFAULT_FAR_PER_PROBE,
                            weights_sha256: Optional[str] = None) -> Optional[OperatingPoint]:
    """The threshold that holds ``far_per_probe`` for a probe compared with ``comparisons``
    templates, from the shipped impostor table of ``embedder`` (``None`` if there is none, or if
    it was measured with other weights than ``weights_sha256``).

    The table lists, for 1:1 false-accept rates ``p`` 20 per decade, the lowest threshold with at
    most ``p`` of the tuning impostor pairs at or above it; the row with the largest ``p`` not above
    the rate needed is used, so the threshold errs strict.
    """
    _check_far(far_per_probe, "far_per_probe")
    t = impostor_tables().get(embedder)
    if t is None or (weights_sha256 and t.get("weights_sha256") and t["weights_sha256"] != weights_sha256):
        return None
    n = max(1, int(comparisons))
    p = -math.expm1(math.log1p(-far_per_probe) / n)  # 1 − (1 − FAR)^(1/n), accurate for small rates
    rows = t["far_per_pair_to_threshold"]  # [[p, threshold], ...] p descending; the last: above every impostor
    measured = [r for r in rows[:-1] if r[0] <= p]
    thr, ok = (float(measured[0][1]), True) if measured else (float(rows[-1][1]), False)
    return OperatingPoint(min(thr, 1.0), far_per_probe, p, n, ok,
                          f"{t['data']} ({t['impostor_pairs']:,} impostor pairs; {t['command']})")


def _check_far(far: Any, what: str) -> float:
    try:
        f = float(far)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{what} must be a number in (0, 1), got {far!r}") from e
    if not 0.0 < f < 1.0:  # also rejects NaN
        raise InvalidArgumentError(f"{what} must lie in (0, 1), got {far!r}")
    return f


def check_threshold(threshold: Any) -> float:
    """A gallery threshold is a finite cosine in [0, 1]: NaN would accept no one silently and a
    negative one nearly everyone. Returns it as a float. Raises InvalidArgumentError."""
    try:
        t = float(threshold)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"threshold must be a number in [0, 1], got {threshold!r}") from e
    if not 0.0 <= t <= 1.0:  # also rejects NaN
        raise InvalidArgumentError(f"threshold must be a finite cosine similarity in [0, 1], got {threshold!r}")
    return t


def check_identity(identity: Any) -> str:
    """An identity is a non-empty string without control, format or line-separator characters
    (a tab or newline would forge extra lines or columns in ``pifr gallery list``). Raises
    InvalidArgumentError."""
    if not isinstance(identity, str) or not identity.strip():
        raise InvalidArgumentError(f"identity must be a non-empty string, got {identity!r}")
    bad = sorted({c for c in identity if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")})
    if bad:
        raise InvalidArgumentError(f"identity {identity[:40]!r} contains control characters {bad!r}")
    return identity


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _pack_strings(items: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Strings → (UTF-8 bytes as uint8, int64 offsets of length N + 1): each string costs its own
    length, where a fixed-width numpy string array costs the longest one in every record."""
    enc = [x.encode("utf-8") for x in items]
    offsets = np.zeros(len(enc) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in enc]) if enc else []
    return np.frombuffer(b"".join(enc), np.uint8).copy(), offsets


def _unpack_strings(blob: np.ndarray, offsets: np.ndarray, what: str) -> List[str]:
    if blob.dtype != np.uint8 or blob.ndim != 1 or offsets.ndim != 1 or offsets.dtype.kind not in "iu":
        raise GalleryError(f"{what}: wrong array types")
    o = offsets.astype(np.int64)
    if len(o) < 1 or o[0] != 0 or o[-1] != len(blob) or np.any(np.diff(o) < 0):
        raise GalleryError(f"{what}: inconsistent offsets")
    raw = blob.tobytes()
    try:
        return [raw[a:b].decode("utf-8") for a, b in zip(o[:-1], o[1:])]
    except UnicodeDecodeError as e:
        raise GalleryError(f"{what}: not UTF-8 ({e})") from e


@contextlib.contextmanager
def file_lock(path: Union[str, Path]) -> Iterator[None]:
    """Hold an exclusive inter-process lock for the gallery file ``path`` (``flock`` on
    ``<path>.lock`` beside it; blocks until the holder lets go).

    Why a lock file and not SQLite: the gallery stays one atomically replaced, pickle-free file
    (a reader never needs the lock), and the kernel drops the lock when a holder dies, so a killed
    ``pifr enroll`` never leaves the gallery locked. The lock file stays (deleting it would race).
    POSIX only, and only as reliable as ``flock`` on the file system (not NFS).
    """
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        log.warning("no fcntl on this platform: %s is edited without an inter-process lock", path)
        yield
        return
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise GalleryError(f"{path}: cannot create the lock file {lock} ({e.strerror})") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
        from .embedders import DEFAULT_EMBEDDER, get_embedder

        frontalize, yaw_threshold, fusion_weight = validate_policy(frontalize, yaw_threshold, fusion_weight)
        self._fixed: Optional[float] = None if threshold is None else check_threshold(threshold)
        self.far_per_probe = _check_far(far_per_probe, "far_per_probe")
        self._emb_name = embedder or DEFAULT_EMBEDDER
        self._device = device
        emb = get_embedder(self._emb_name, device)
        self.embedder_sha256 = getattr(getattr(emb, "spec", None), "sha256", "") or ""
        self.dim = emb.dim
        try:
            self._pair_threshold = float(emb.threshold)
        except NoThresholdError:
            # A registered model nobody calibrated: usable only with a threshold given here.
            if self._fixed is None:
                raise
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
        # Per template: "raw", "external" (add_embeddings), "<mode>:<view_fingerprint>" for one fused
        # from a view, "auto-raw:<|yaw|>" for one "auto" left raw (stale once a rule would fuse that
        # yaw), or None (unknown: a file from a pifr that did not record it).
        self._views: List[Optional[str]] = []
        self._index: Any = None  # faiss index, rebuilt lazily
        self._no_faiss = False  # faiss found missing once: later searches go straight to numpy
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
        if op is None and not self._warned_unmeasured:
            self._warned_unmeasured = True
            log.warning("no shipped impostor table for %s%s: this gallery uses the 1:1 verification threshold %.4f, "
                        "whose false-accept rate per probe grows with the gallery's size; call calibrate() or pass threshold=",
                        self._emb_name, "" if self.frontalize == "never" else f" with frontalize={self.frontalize!r}",
                        self._pair_threshold)
        if op is not None and not op.measured and not self._warned_unmeasured:
            self._warned_unmeasured = True
            log.warning("gallery of %d templates: FAR %.1e per comparison is below what the %s impostor table resolves; "
                        "the threshold %.4f is above every impostor seen, its FAR is not measured (calibrate() on more data)",
                        op.comparisons, op.far_per_comparison, self._emb_name, op.threshold)
        return op

    @property
    def threshold(self) -> float:
        """The operating cosine threshold now (see the class doc)."""
        if self._fixed is not None:
            return self._fixed
        op = self.operating_point()
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
            counts: Dict[str, int] = {}
            for name in self._labels:
                counts[name] = counts.get(name, 0) + 1
            return counts

    @property
    def stale_templates(self) -> Dict[str, int]:
        """Templates fused from a view that this pifr, with this gallery's embedder, frontalizer
        and rule, makes differently now (a re-tuned rule, another 3D fit network, refiner or
        generator: :func:`pifr.frontalization.view_fingerprint`), counted by identity. Probes are
        fused the new way, so these no longer match how a probe of the same photo would be made;
        re-enrolling those photos (:meth:`remove`, then :meth:`enroll`) rebuilds them. Raw
        templates, :meth:`add_embeddings` ones and those from files of older pifr (provenance
        unknown) are never counted — except a turned face that ``"auto"`` left raw and would fuse
        now (a rule with a lower yaw threshold, or one for an embedder that had none)."""
        with self._lock:
            pairs = list(zip(self._labels, self._views))
        now: Dict[str, Tuple[bool, Optional[str]]] = {}
        out: Dict[str, int] = {}
        above = None  # the |yaw| past which "auto" fuses now, for the templates it left raw
        if any((v or "").startswith("auto-raw:") for _, v in pairs):
            try:
                above = auto_fuses_above(self._emb_name, self.frontalizer, self.yaw_threshold, self.fusion_weight)
            except PifrError as e:
                log.debug("auto rule for raw templates unknown: %s", e)
        for label, view in pairs:
            mode, _, fp = (view or "").partition(":")
            if mode == "auto-raw":
                try:
                    yaw = float(fp)
                except ValueError:  # an odd string in a file: unknown, as elsewhere
                    continue
                if above is not None and yaw > above:
                    out[label] = out.get(label, 0) + 1
                continue
            if mode not in ("auto", "always"):
                continue
            if mode not in now:
                try:
                    now[mode] = (True, self._fingerprint(mode))
                except PifrError as e:  # e.g. a generator file that is gone: its probes cannot be made either
                    log.debug("view fingerprint for %s templates unknown: %s", mode, e)
                    now[mode] = (False, None)
            known, current = now[mode]
            if known and fp != current:  # current None: the policy no longer fuses at all
                out[label] = out.get(label, 0) + 1
        return out

    # ------------------------------------------------------------------ embedding
    def _embed(self, img: ImageLike, policy: Optional[str] = None
               ) -> Tuple[List[np.ndarray], str, float, List[Optional[str]], Optional[float]]:
        """Templates of the largest face in ``img`` under ``policy`` (default: the gallery's
        probe policy; ``"both"`` = the raw and the frontalized template), the image's hash, the
        threshold shift the first template needs (non-zero when ``"auto"`` fused it:
        :func:`pifr.frontalization.threshold_shift`), per template the mode that fused it from a
        view (``None``: raw), and the face's yaw (degrees)."""
        from .detection import detect_one

        arr = load_image(img)
        face = detect_one(arr, detector=self.detector, device=self._device)
        vs, shift, fused = self._embed_face(arr, face, policy)
        return vs, _pixels_hash(arr), shift, fused, face.yaw

    def _embed_face(self, arr: np.ndarray, face: Face, policy: Optional[str] = None
                    ) -> Tuple[List[np.ndarray], float, List[Optional[str]]]:
        """The templates of ``face`` in ``arr`` under ``policy`` (default: the gallery's), the
        threshold shift the first needs, and per template the mode that fused it (``None``: raw)."""
        from .embedders import get_embedder

        policy = policy or self.frontalize
        emb = get_embedder(self._emb_name, self._device)
        gen = None
        if policy != "never":
            gen = frontal_view(self.frontalizer, self._device)
        modes = ("never", "always") if policy == "both" else (policy,)
        out = [embed_face_policy(arr, face, emb, m, gen, self.yaw_threshold, self.fusion_weight) for m in modes]
        shift = threshold_shift(emb.name, gen) if policy == "auto" and out[0][1] else 0.0
        return [v.astype(np.float32) for v, _ in out], shift, [m if used else None for m, (_, used) in zip(modes, out)]

    def _fingerprint(self, mode: str) -> Optional[str]:
        """How this gallery fuses a face under ``mode`` now (:func:`pifr.frontalization.view_fingerprint`)."""
        return view_fingerprint(self._emb_name, self.frontalizer, mode, self.yaw_threshold, self.fusion_weight)

    def _view_of(self, mode: Optional[str], auto_yaw: Optional[float] = None) -> Optional[str]:
        """The provenance to store for a template ``mode`` fused now (``None``: raw; left raw by
        ``"auto"`` when ``auto_yaw``, the face's yaw in degrees, is given)."""
        if mode is None:
            return "raw" if auto_yaw is None else f"auto-raw:{abs(auto_yaw):.1f}"
        fp = self._fingerprint(mode)
        return None if fp is None else f"{mode}:{fp}"

    # ------------------------------------------------------------------ mutation
    def enroll(self, identity: str, images: Sequence[ImageLike], *, templates: Optional[str] = None) -> EnrollReport:
        """Add templates for each usable image. Bad images and images already enrolled (same
        decoded pixels, for any identity) are reported by index and skipped; the rest are kept.
        The duplicate check holds across threads enrolling at once: it is made again when the
        templates are added, under the gallery's lock.

        ``templates``: ``None`` follows the gallery's ``frontalize`` policy; ``"both"`` stores the
        raw and the frontalized template of every image (needs a frontalizer), so frontalized and
        raw probes each meet their kind.

        Raises:
            InvalidArgumentError: a bad identity (empty, control characters). A single path,
            bytes, array or PIL image is taken as a list of one image.
        """
        check_identity(identity)
        if isinstance(images, (str, bytes, os.PathLike, np.ndarray)) or type(images).__module__.startswith(("PIL.", "torch")):
            images = [images]
        if templates not in (None, "both"):
            raise GalleryError("templates must be None or 'both'")
        done: List[Tuple[int, List[np.ndarray], str, List[Optional[str]]]] = []
        failures, dups = [], []
        with self._lock:
            known = set(self._hashes)
        for i, img in enumerate(images):
            try:
                vs, h, _, fused, yaw = self._embed(img, templates)
                auto_yaw = yaw if (templates is None and self.frontalize == "auto") else None
                views = [self._view_of(m, auto_yaw) for m in fused]
            except PifrError as e:
                failures.append((i, f"{type(e).__name__}: {e}"))
                continue
            if h in known:
                dups.append(i)
                continue
            known.add(h)
            done.append((i, vs, h, views))
        added = 0
        with self._lock:
            # Another thread may have enrolled the same pixels since `known` was read.
            now = set(self._hashes)
            vecs, hashes, all_views = [], [], []
            for i, vs, h, views in done:
                if h in now:
                    dups.append(i)
                    continue
                now.add(h)
                vecs += vs
                hashes += [h] * len(vs)
                all_views += views
            if vecs:
                self._emb = np.concatenate([self._emb, np.stack(vecs).astype(np.float32)], 0)
                self._labels += [identity] * len(vecs)
                self._hashes += hashes
                self._views += all_views
                self._index = None
            added = len(vecs)
        return EnrollReport(identity, added, tuple(failures), tuple(sorted(dups)))

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
            self._emb = np.concatenate([self._emb, e], 0)
            self._labels += names
            # Not an image hash: it only has to be unique and small (never the identity's name).
            self._hashes += [f"embedding:{n0 + i}:{hashlib.sha256(v.tobytes()).hexdigest()[:16]}"
                             for i, v in enumerate(e)]
            self._views += ["external"] * len(e)  # how the caller made them is unknown: never counted stale
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
            self._views = [self._views[i] for i in keep]
            self._index = None
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
            emb, labels, thr = self._emb, np.array(self._labels), self.threshold + float(threshold_shift)
            index = self._faiss_index() if len(labels) >= FAISS_MIN_TEMPLATES else None
        q = qv.reshape(1, -1)
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
            InvalidArgumentError: ``k`` < 1.
        """
        _check_k(k)
        if not self._labels:
            raise GalleryError("the gallery is empty: enroll someone first")
        vs, _, shift, _, _ = self._embed(img)
        return self.search_embedding(vs[0], k, threshold_shift=shift)

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
        vs, shift, _ = self._embed_face(load_image(img), face)
        return self.search_embedding(vs[0], k, threshold_shift=shift)

    def verify(self, identity: str, img: ImageLike) -> Match:
        """1:1 check of ``img`` against one enrolled identity."""
        with self._lock:
            sel = [i for i, l in enumerate(self._labels) if l == identity]
            if not sel:
                raise GalleryError(f"identity {identity!r} is not enrolled")
            emb = self._emb[sel]
        vs, _, shift, _, _ = self._embed(img)
        s = float((emb @ vs[0]).max())
        return Match(identity, s, s >= self.threshold + shift)

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
        target_far = _check_far(target_far, "target_far")
        if per not in ("probe", "comparison"):
            raise InvalidArgumentError("per must be 'probe' or 'comparison'")
        if impostor_scores is None:
            if embeddings is None or labels is None:
                raise InvalidArgumentError("give impostor_scores, or embeddings and labels")
            e = np.asarray(embeddings, np.float32)
            lab = np.asarray(labels)
            if e.ndim != 2 or len(e) != len(lab):
                raise InvalidArgumentError(f"embeddings (N, dim) and N labels needed, got {e.shape} and {lab.shape}")
            sims = e @ e.T
            iu = np.triu_indices(len(e), 1)
            diff = lab[iu[0]] != lab[iu[1]]
            impostor_scores = sims[iu][diff]
        scores = np.asarray(impostor_scores, np.float64).ravel()
        if scores.size == 0:
            raise InvalidArgumentError("no impostor scores to calibrate on (need pairs of different people)")
        if not np.all(np.isfinite(scores)):
            raise InvalidArgumentError("impostor scores contain NaN or infinite values")
        rate = target_far
        if per == "probe":
            if gallery_size is not None and (isinstance(gallery_size, bool) or not isinstance(gallery_size, (int, np.integer))
                                             or gallery_size < 1):
                raise InvalidArgumentError(f"gallery_size must be a positive integer, got {gallery_size!r}")
            n = int(gallery_size) if gallery_size is not None else max(1, len(self.identities))
            rate = -math.expm1(math.log1p(-target_far) / n)
        s = np.sort(scores)[::-1]
        if len(s) < 1 / rate:
            log.warning("calibrating a per-comparison FAR of %.1e from only %d impostor scores: the threshold is "
                        "the highest impostor score seen, and the true FAR is not measured", rate, len(s))
        n_allowed = int(np.floor(rate * len(s)))
        # Accept scores >= thr: the (n_allowed)-th highest impostor must fall just below it.
        thr = float(np.nextafter(s[n_allowed], np.inf)) if n_allowed < len(s) else float(s[-1])
        thr = min(max(thr, 0.0), 1.0)  # a cosine threshold; below 0 would accept nearly every face
        with self._lock:
            self._fixed = thr
            self.calibrated_far = float(target_far)
        return thr

    # ------------------------------------------------------------------ persistence
    def _header(self) -> dict:
        return {"magic": _MAGIC, "schema": SCHEMA_VERSION, "embedder": self._emb_name, "embedder_sha256": self.embedder_sha256,
                "dim": self.dim, "threshold": self.threshold, "threshold_mode": "fixed" if self._fixed is not None else "default",
                "far_per_probe": self.far_per_probe, "calibrated_far": self.calibrated_far,
                "frontalize": self.frontalize, "yaw_threshold": self.yaw_threshold, "fusion_weight": self.fusion_weight,
                # Only a built-in view's name: a weights path read back from a file would let the file choose what loads.
                "frontalizer": self.frontalizer if self.frontalizer in _BUILTIN_VIEWS else None,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S"), "templates": len(self._labels)}

    def save(self, path: Union[str, Path]) -> None:
        """Write atomically: a temporary file in the same folder, flushed to disk, then renamed over ``path``.

        Raises:
            GalleryError: the folder is missing or not writable, or the disk is full (the
            temporary file is removed; an existing gallery at ``path`` is untouched).
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise GalleryError(f"{path}: folder {path.parent} does not exist")
        if path.is_dir():
            raise GalleryError(f"{path}: is a folder, not a gallery file")
        with self._lock:
            header = self._header()
            labels, label_off = _pack_strings(self._labels)
            hashes, hash_off = _pack_strings(self._hashes)
            kinds = list(dict.fromkeys(v for v in self._views if v is not None))
            ids = {v: i for i, v in enumerate(kinds)}
            view_ids = np.array([-1 if v is None else ids[v] for v in self._views], np.int32)
            views, view_off = _pack_strings(kinds)
            buf = io.BytesIO()
            np.savez(buf, header=np.array(json.dumps(header)), embeddings=self._emb,
                     labels_utf8=labels, labels_offsets=label_off, hashes_utf8=hashes, hashes_offsets=hash_off,
                     view_ids=view_ids, views_utf8=views, views_offsets=view_off)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise GalleryError(f"{path}: cannot write the gallery ({e.strerror or e})") from e

    @classmethod
    def load(cls, path: Union[str, Path], *, device: Any = None, detector: Optional[str] = None,
             frontalizer: Optional[str] = None) -> "Gallery":
        """Read a gallery written by :meth:`save` (schema 2, or 1 from older pifr). Logs a warning
        when templates were fused from a view made differently from how this pifr makes it now
        (:attr:`stale_templates`).

        ``frontalizer``: as for :class:`Gallery`; ``None`` takes the one the gallery was saved with
        when that was a built-in view (``"3d"``, ``"refined"``) — a weights file is never recorded,
        so pass it again.

        Raises:
            GalleryError: missing, corrupt, tampered (non-unit or non-finite templates, bad names,
            missing or mistyped header fields) or unknown-schema file, or made with an embedder
            whose weights differ from the ones installed here.
        """
        path = Path(path)
        if not path.is_file():
            raise GalleryError(f"{path}: no such gallery file")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            header = json.loads(str(arrays["header"]))
        except Exception as e:  # noqa: BLE001 - every parse failure is a corrupt file to the caller
            raise GalleryError(f"{path}: not a readable pifr gallery ({type(e).__name__}: {e})") from e
        if not isinstance(header, dict) or header.get("magic") != _MAGIC:
            raise GalleryError(f"{path}: not a pifr gallery file")
        schema = header.get("schema")
        if schema not in (1, SCHEMA_VERSION):
            raise GalleryError(f"{path}: gallery schema {schema!r} is not supported (this pifr reads 1 and {SCHEMA_VERSION})")
        _check_header(header, path)
        try:
            emb = arrays["embeddings"]
            if schema == 1:
                labels = [str(x) for x in arrays["labels"]]
                hashes = [str(x) for x in arrays["hashes"]]
            else:
                labels = _unpack_strings(arrays["labels_utf8"], arrays["labels_offsets"], f"{path}: labels")
                hashes = _unpack_strings(arrays["hashes_utf8"], arrays["hashes_offsets"], f"{path}: hashes")
            views = _read_views(arrays, len(labels), path)
        except KeyError as e:
            raise GalleryError(f"{path}: array {e} is missing") from e
        fixed = header["threshold"]
        if schema == 1:
            # Schema 1 stored the embedder's 1:1 threshold when none was chosen: that one (and not
            # a calibrated or given value) becomes the size-following default.
            from .embedders import get_embedder

            try:
                pair = get_embedder(header["embedder"], device).threshold
            except PifrError as e:
                raise GalleryError(f"{path}: {e}") from e
            if header.get("calibrated_far") is None and abs(fixed - pair) < 1e-9:
                fixed = None
        elif header["threshold_mode"] == "default":
            fixed = None
        if frontalizer is None and header.get("frontalizer") is not None:
            from .refinement import refiner_available

            frontalizer = header["frontalizer"]
            if frontalizer == "refined" and not refiner_available():
                # Loadable and usable still: the plain render, its fused templates listed stale.
                frontalizer = None
                log.warning("%s: enrolled with the refined view, but no refiner is installed here: probes use the "
                            "plain 3D render (install the refiner, or pass frontalizer=)", path)
        try:
            g = cls(header["embedder"], threshold=fixed, detector=detector, frontalize=header.get("frontalize", "never"),
                    frontalizer=frontalizer,
                    yaw_threshold=header.get("yaw_threshold"),
                    fusion_weight=header.get("fusion_weight"), device=device,
                    far_per_probe=header.get("far_per_probe", DEFAULT_FAR_PER_PROBE))
        except InvalidPolicyError as e:
            raise GalleryError(f"{path}: invalid frontalization policy in the header ({e})") from e
        except (GalleryError, InvalidArgumentError) as e:
            raise GalleryError(f"{path}: {e}") from e
        except PifrError as e:  # unknown embedder, missing weights: say which file needs them
            raise GalleryError(f"{path}: made with embedder {header['embedder']!r}, which cannot be loaded here "
                               f"({type(e).__name__}: {e})") from e
        if header["embedder_sha256"] and g.embedder_sha256 != header["embedder_sha256"]:
            raise GalleryError(f"{path}: made with {header['embedder']} weights {header['embedder_sha256'][:12]}…, "
                               f"but the installed ones are {g.embedder_sha256[:12]}…: re-enroll")
        if emb.dtype.kind != "f" or emb.shape != (len(labels), g.dim) or len(hashes) != len(labels):
            raise GalleryError(f"{path}: inconsistent arrays (embeddings {emb.dtype} {emb.shape}, {len(labels)} labels, "
                               f"{len(hashes)} hashes)")
        emb = emb.astype(np.float32)
        _check_unit(emb, GalleryError, f"{path}: templates")
        for name in set(labels):
            try:
                check_identity(name)
            except InvalidArgumentError as e:
                raise GalleryError(f"{path}: {e}") from e
        g._emb, g._labels, g._hashes, g._views = emb, labels, hashes, views
        g.calibrated_far = header.get("calibrated_far") if fixed is not None else None
        stale = g.stale_templates
        if stale:
            # A warning, not an error: the gallery still works, and frontal photos' templates are raw.
            log.warning("%s: %d templates of %d identities were fused from a view that this pifr makes differently now "
                        "(another frontalization rule, 3D fit, refiner or generator), so they no longer match how probes "
                        "are made; if the gallery was enrolled with a frontalizer weights file (or with \"refined\" by a pifr "
                        "that did not record it), load it with the same frontalizer=; "
                        "else re-enrolling those photos (remove(), then enroll(): the same pixels are otherwise "
                        "skipped as duplicates) rebuilds them (Gallery.stale_templates lists them)",
                        path, sum(stale.values()), len(stale))
        return g

    @classmethod
    @contextlib.contextmanager
    def edit(cls, path: Union[str, Path], *, create: bool = False, embedder: Optional[str] = None,
             **kwargs: Any) -> Iterator["Gallery"]:
        """Load ``path`` (or, with ``create``, start a new gallery if there is none), hand it over,
        and save it when the block ends without an exception — all under :func:`file_lock`, so
        concurrent editors (two ``pifr enroll`` runs) take turns and no one's change is lost.

            with Gallery.edit("staff.gallery", create=True) as g:
                g.enroll("alice", ["a1.jpg"])

        ``kwargs`` go to :meth:`load` (``device``, ``detector``, ``frontalizer``); ``embedder``
        only applies to a new gallery. Raises GalleryError (missing file without ``create``,
        unreadable file, failed save).
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise GalleryError(f"{path}: folder {path.parent} does not exist")
        with file_lock(path):
            if path.is_file():
                g = cls.load(path, **kwargs)
            elif create:
                g = cls(embedder, **kwargs)
            else:
                raise GalleryError(f"{path}: no such gallery file")
            yield g
            g.save(path)


_HEADER_TYPES = {"embedder": str, "embedder_sha256": str, "dim": int, "threshold": (int, float)}


def _check_header(header: dict, path: Path) -> None:
    """Every field load() reads is there with the right type (a tampered or hand-edited header
    is a GalleryError, never a KeyError deep inside)."""
    need = dict(_HEADER_TYPES)
    if header.get("schema") == SCHEMA_VERSION:
        need["threshold_mode"] = str
    for key, typ in need.items():
        if key not in header:
            raise GalleryError(f"{path}: header has no {key!r}")
        if not isinstance(header[key], typ) or isinstance(header[key], bool):
            raise GalleryError(f"{path}: header field {key!r} has the wrong type ({type(header[key]).__name__})")
    try:
        check_threshold(header["threshold"])
        if header.get("calibrated_far") is not None:
            _check_far(header["calibrated_far"], "calibrated_far")
        if "far_per_probe" in header:
            _check_far(header["far_per_probe"], "far_per_probe")
    except InvalidArgumentError as e:
        raise GalleryError(f"{path}: header: {e}") from e
    if header.get("threshold_mode", "fixed") not in ("fixed", "default"):
        raise GalleryError(f"{path}: header threshold_mode {header['threshold_mode']!r} is not 'fixed' or 'default'")
    if header.get("frontalize", "never") not in _MODES:
        raise GalleryError(f"{path}: header frontalize {header.get('frontalize')!r} is not one of {_MODES}")
    if header.get("frontalizer") is not None and header["frontalizer"] not in _BUILTIN_VIEWS:
        raise GalleryError(f"{path}: header frontalizer {header['frontalizer']!r} is not one of {_BUILTIN_VIEWS} or null")


_VIEW_ARRAYS = ("view_ids", "views_utf8", "views_offsets")
#: The frontalizers a saved gallery records by name (see ``Gallery._header``).
_BUILTIN_VIEWS = ("3d", "refined")


def _read_views(arrays: Dict[str, np.ndarray], n: int, path: Path) -> List[Optional[str]]:
    """Each template's view provenance (see ``Gallery._views``); all ``None`` for a file without it."""
    have = [k for k in _VIEW_ARRAYS if k in arrays]
    if not have:  # a file from a pifr that did not record provenance
        return [None] * n
    if len(have) < len(_VIEW_ARRAYS):  # save() writes all three: some missing is damage, not "unknown"
        raise GalleryError(f"{path}: view provenance arrays {sorted(set(_VIEW_ARRAYS) - set(have))} are missing")
    ids = arrays["view_ids"]
    kinds = _unpack_strings(arrays["views_utf8"], arrays["views_offsets"], f"{path}: views")
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) != n or (n and (ids.min() < -1 or ids.max() >= len(kinds))):
        raise GalleryError(f"{path}: inconsistent view_ids ({ids.dtype} {ids.shape} for {n} templates, {len(kinds)} views)")
    return [None if i < 0 else kinds[i] for i in ids.tolist()]


def _check_unit(e: np.ndarray, err: type, what: str) -> None:
    """Rows of ``e`` are finite unit vectors (within :data:`UNIT_TOLERANCE`), else ``err``."""
    if not np.all(np.isfinite(e)):
        raise err(f"{what}: contain NaN or infinite values")
    if len(e):
        norms = np.linalg.norm(e.astype(np.float64), axis=1)
        worst = float(np.max(np.abs(norms - 1.0)))
        if worst > UNIT_TOLERANCE:
            raise err(f"{what}: not unit vectors (a norm of {norms[np.argmax(np.abs(norms - 1.0))]:.4g}); "
                      "templates must be L2-normalised")
