"""Where a gallery lives between runs: the :class:`GalleryStore` interface, the
:class:`GalleryState` that stores exchange, and :class:`FileStore`, a pickle-free file replaced
atomically and edited under an inter-process :func:`file_lock`.

File format (schema 2; schema 1 files from older pifr are still read): an ``np.savez`` archive
read with ``allow_pickle=False`` — ``header`` (a JSON string: magic, schema, embedder and its
weights' sha256, dim, threshold and its mode, far_per_probe, calibrated_far, the frontalization
policy), ``embeddings`` (N, dim) float32, and variable-width UTF-8 strings as a byte array plus
int64 offsets (``labels_*``, ``hashes_*``, and the optional per-template treatment records
``view_ids`` / ``views_utf8`` / ``views_offsets`` and face yaws ``yaws`` (N,) float32, NaN unknown:
a pifr without them ignores them, so the schema stays 2; records written before treatments were
fingerprints are read through :func:`pifr.gallery.staleness.legacy_record`).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from ..errors import GalleryError, InvalidArgumentError, PifrError
from .operating_point import DEFAULT_FAR_PER_PROBE, _check_far, check_threshold

log = logging.getLogger("pifr")

SCHEMA_VERSION = 2  # 2: variable-width UTF-8 labels and hashes, threshold mode; 1 is still read
#: Templates must be unit vectors to within this (a loaded file is checked: a ×1000 template would
#: score far above any threshold).
UNIT_TOLERANCE = 1e-3
_MAGIC = "pifr-gallery"
_MODES = ("never", "always", "auto")
#: The frontalizers a saved gallery records by name (a weights path read back from stored data
#: would let the data choose what loads).
_BUILTIN_VIEWS = ("3d", "refined")
_VIEW_ARRAYS = ("view_ids", "views_utf8", "views_offsets")
_HEADER_TYPES = {"embedder": str, "embedder_sha256": str, "dim": int, "threshold": (int, float)}


@dataclass(frozen=True, eq=False)
class GalleryState:
    """A gallery's content and settings as a store holds them (no embedder, no search index).

    Attributes:
        embedder: embedder name; embedder_sha256: its weights' sha256 ("" when unknown).
        embeddings: ``(N, dim)`` float32 templates, unit rows (L2 norm 1 within :data:`UNIT_TOLERANCE`).
        labels: N identities, one per template (non-empty, no control characters: :func:`check_identity`).
        hashes: N template sources: the sha256 of the decoded image (hex), or ``"embedding:…"`` for
            templates given as vectors; an image's templates share its hash (duplicate check).
        views: N treatment records (:mod:`pifr.gallery.staleness`; ``None``: unknown).
        yaws: N face yaws in degrees (NaN: unknown), or ``()``: all unknown.
        operating_threshold: the cosine threshold in force when the state was taken, in [0, 1].
        threshold: the fixed (given or calibrated) cosine threshold, or ``None``: the default
            operating point, which follows the gallery's size (then ``operating_threshold`` is
            only informational).
        far_per_probe: false-accept rate per probe of the default operating point, in (0, 1).
        calibrated_far: the rate ``threshold`` was calibrated for (``None``: given or default).
        frontalize: probe policy, ``"never"``, ``"auto"`` or ``"always"``.
        yaw_threshold: ``"auto"``'s |yaw| in degrees, fusion_weight: its weight in [0, 1]
            (``None``: the rule measured for the embedder).
        frontalizer: a built-in view's name (``"3d"``, ``"refined"``) or ``None``; never a path.
    """

    embedder: str
    embedder_sha256: str
    embeddings: np.ndarray
    labels: Tuple[str, ...]
    hashes: Tuple[str, ...]
    views: Tuple[Optional[str], ...]
    operating_threshold: float
    threshold: Optional[float] = None
    far_per_probe: float = DEFAULT_FAR_PER_PROBE
    calibrated_far: Optional[float] = None
    frontalize: str = "never"
    yaw_threshold: Optional[float] = None
    fusion_weight: Optional[float] = None
    frontalizer: Optional[str] = None
    yaws: Tuple[float, ...] = ()

    @property
    def dim(self) -> int:
        """Template width."""
        return int(self.embeddings.shape[1])


class GalleryStore(Protocol):
    """Where a gallery is kept: a file (:class:`FileStore`) or a database. ``str(store)`` names it
    in messages. Every method raises :class:`pifr.GalleryError` on failure."""

    def load(self) -> GalleryState:
        """The stored gallery, checked (unit finite templates, valid names and settings);
        GalleryError when there is none or it is damaged."""
        ...

    def save(self, state: GalleryState) -> None:
        """Replace the stored gallery with ``state`` atomically: a reader sees the old or the new one whole."""
        ...

    def lock(self) -> ContextManager[None]:
        """An exclusive lock across processes for a load–modify–save (blocks until free; freed
        when the holder dies). Readers need not take it."""
        ...

    def version(self) -> Optional[str]:
        """An opaque token that changes whenever the stored gallery is replaced; ``None`` when
        nothing is stored yet."""
        ...


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


class FileStore:
    """A gallery in one pickle-free file (module doc), replaced atomically by :meth:`save`.

    Args:
        path: the gallery file.
        pair_threshold: embedder name → its 1:1 threshold, needed only to read schema 1 files
            (they stored that threshold when none was chosen); default: the embedder's on the CPU.
    """

    def __init__(self, path: Union[str, Path], *, pair_threshold: Optional[Callable[[str], float]] = None) -> None:
        self.path = Path(path)
        self._pair_threshold = pair_threshold

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"FileStore({str(self.path)!r})"

    def version(self) -> Optional[str]:
        """Inode, size and modification time (:meth:`save` replaces the file, so they change);
        ``None`` when the path is no regular file (missing, or a folder)."""
        try:
            if not self.path.is_file():
                return None
            st = os.stat(self.path)
        except OSError:  # removed in between: nothing stored
            return None
        return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"

    def lock(self) -> ContextManager[None]:
        if not self.path.parent.is_dir():
            raise GalleryError(f"{self.path}: folder {self.path.parent} does not exist")
        return file_lock(self.path)

    def save(self, state: GalleryState) -> None:
        """Write atomically: a temporary file in the same folder, flushed to disk, then renamed over the path.

        Raises:
            GalleryError: the folder is missing or not writable, or the disk is full (the
            temporary file is removed; an existing gallery at the path is untouched).
        """
        path = self.path
        if not path.parent.is_dir():
            raise GalleryError(f"{path}: folder {path.parent} does not exist")
        if path.is_dir():
            raise GalleryError(f"{path}: is a folder, not a gallery file")
        header = {"magic": _MAGIC, "schema": SCHEMA_VERSION, "embedder": state.embedder,
                  "embedder_sha256": state.embedder_sha256, "dim": state.dim, "threshold": state.operating_threshold,
                  "threshold_mode": "fixed" if state.threshold is not None else "default",
                  "far_per_probe": state.far_per_probe, "calibrated_far": state.calibrated_far,
                  "frontalize": state.frontalize, "yaw_threshold": state.yaw_threshold,
                  "fusion_weight": state.fusion_weight, "frontalizer": state.frontalizer,
                  "saved": time.strftime("%Y-%m-%dT%H:%M:%S"), "templates": len(state.labels)}
        labels, label_off = _pack_strings(state.labels)
        hashes, hash_off = _pack_strings(state.hashes)
        kinds = list(dict.fromkeys(v for v in state.views if v is not None))
        ids = {v: i for i, v in enumerate(kinds)}
        view_ids = np.array([-1 if v is None else ids[v] for v in state.views], np.int32)
        views, view_off = _pack_strings(kinds)
        buf = io.BytesIO()
        np.savez(buf, header=np.array(json.dumps(header)), embeddings=state.embeddings,
                 labels_utf8=labels, labels_offsets=label_off, hashes_utf8=hashes, hashes_offsets=hash_off,
                 view_ids=view_ids, views_utf8=views, views_offsets=view_off,
                 yaws=np.array(state.yaws if state.yaws else [np.nan] * len(state.labels), np.float32))
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

    def load(self) -> GalleryState:
        """Read a file written by :meth:`save` (schema 2, or 1 from older pifr).

        Raises:
            GalleryError: missing, corrupt, tampered (non-unit or non-finite templates, bad names,
            missing or mistyped header fields) or unknown-schema file.
        """
        path = self.path
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
            views, yaws = _read_views(arrays, len(labels), path)
        except KeyError as e:
            raise GalleryError(f"{path}: array {e} is missing") from e
        fixed = header["threshold"]
        if schema == 1:
            # Schema 1 stored the embedder's 1:1 threshold when none was chosen: that one (and not
            # a calibrated or given value) becomes the size-following default.
            try:
                pair = self._schema1_pair_threshold(header["embedder"])
            except PifrError as e:
                raise GalleryError(f"{path}: {e}") from e
            if header.get("calibrated_far") is None and abs(fixed - pair) < 1e-9:
                fixed = None
        elif header["threshold_mode"] == "default":
            fixed = None
        if emb.dtype.kind != "f" or emb.ndim != 2 or len(emb) != len(labels) or len(hashes) != len(labels):
            raise GalleryError(f"{path}: inconsistent arrays (embeddings {emb.dtype} {emb.shape}, {len(labels)} labels, "
                               f"{len(hashes)} hashes)")
        emb = emb.astype(np.float32)
        _check_unit(emb, GalleryError, f"{path}: templates")
        for name in set(labels):
            try:
                check_identity(name)
            except InvalidArgumentError as e:
                raise GalleryError(f"{path}: {e}") from e
        return GalleryState(
            embedder=header["embedder"], embedder_sha256=header["embedder_sha256"], embeddings=emb,
            labels=tuple(labels), hashes=tuple(hashes), views=tuple(views), yaws=tuple(yaws),
            operating_threshold=float(header["threshold"]), threshold=fixed,
            far_per_probe=header.get("far_per_probe", DEFAULT_FAR_PER_PROBE),
            calibrated_far=header.get("calibrated_far") if fixed is not None else None,
            frontalize=header.get("frontalize", "never"), yaw_threshold=header.get("yaw_threshold"),
            fusion_weight=header.get("fusion_weight"), frontalizer=header.get("frontalizer"))

    def _schema1_pair_threshold(self, embedder: str) -> float:
        if self._pair_threshold is not None:
            return float(self._pair_threshold(embedder))
        from ..embedders import get_embedder

        return float(get_embedder(embedder).threshold)


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


def _read_views(arrays: Dict[str, np.ndarray], n: int, path: Path) -> Tuple[List[Optional[str]], List[float]]:
    """Each template's treatment record and face yaw (:mod:`pifr.gallery.staleness`); unknown
    (``None``, NaN) for a file without them."""
    from .staleness import legacy_record

    have = [k for k in _VIEW_ARRAYS if k in arrays]
    if not have:  # a file from a pifr that did not record provenance
        return [None] * n, [float("nan")] * n
    if len(have) < len(_VIEW_ARRAYS):  # save() writes all three: some missing is damage, not "unknown"
        raise GalleryError(f"{path}: view provenance arrays {sorted(set(_VIEW_ARRAYS) - set(have))} are missing")
    ids = arrays["view_ids"]
    kinds = _unpack_strings(arrays["views_utf8"], arrays["views_offsets"], f"{path}: views")
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) != n or (n and (ids.min() < -1 or ids.max() >= len(kinds))):
        raise GalleryError(f"{path}: inconsistent view_ids ({ids.dtype} {ids.shape} for {n} templates, {len(kinds)} views)")
    records, yaws = zip(*[legacy_record(None if i < 0 else kinds[i]) for i in ids.tolist()]) if n else ((), ())
    if "yaws" in arrays:
        y = arrays["yaws"]
        if y.ndim != 1 or y.dtype.kind != "f" or len(y) != n:
            raise GalleryError(f"{path}: inconsistent yaws ({y.dtype} {y.shape} for {n} templates)")
        yaws = tuple(a if np.isnan(b) else float(b) for a, b in zip(yaws, y.tolist()))
    return list(records), list(yaws)


StoreLike = Union[str, os.PathLike, GalleryStore]


def as_store(where: StoreLike, pair_threshold: Optional[Callable[[str], float]] = None) -> GalleryStore:
    """``where`` as a store: a path becomes a :class:`FileStore` (with ``pair_threshold``), a store stays itself."""
    if isinstance(where, (str, os.PathLike)):
        return FileStore(where, pair_threshold=pair_threshold)
    return where


def store_at(path: StoreLike, device: Any = None) -> GalleryStore:
    """``path`` as a store; a file's schema 1 content is read with the embedder's 1:1 threshold on ``device``."""
    def pair_threshold(name: str) -> float:
        from ..embedders import get_embedder

        return float(get_embedder(name, device).threshold)

    return as_store(path, pair_threshold)
