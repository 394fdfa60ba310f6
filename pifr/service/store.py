"""Where the gallery lives: a small interface (snapshot / add templates / remove subject / version)
with the gallery file as the default backend and PostgreSQL (:mod:`pifr.service.postgres`) as the other.

A *snapshot* is an in-memory :class:`pifr.Gallery` that identify searches; a store hands out the
newest one, reloading when another process changed the data. Writes never go through a snapshot:
each is one atomic step on the backend (file: reload–modify–save under the gallery's
inter-process lock; PostgreSQL: one transaction), so two servers on one gallery lose nothing.

The helpers here fill a Gallery's template arrays directly (``_append``, and ``_emb``,
``_labels``, ``_hashes``, ``_views``, ``_yaws``): the service is part of pifr and moves templates
between galleries without re-embedding them.
"""
from __future__ import annotations

import abc
import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import GalleryError
from ..gallery import Gallery, file_lock

log = logging.getLogger("pifr.service")


@dataclass(frozen=True)
class Template:
    """One template to store: from input image ``image`` (its index in the request), the unit
    vector, the decoded pixels' hash (duplicates are refused by it), its treatment record
    (:mod:`pifr.gallery.staleness`) and its face's yaw in degrees (NaN: unknown)."""

    image: int
    vector: np.ndarray
    hash: str
    view: Optional[str]
    yaw: float = float("nan")


@dataclass(frozen=True)
class AddResult:
    """What a store kept: ``added`` templates; ``duplicates``: input image indices already stored."""

    added: int
    duplicates: Tuple[int, ...]


def gallery_config(g: Gallery) -> dict:
    """What a gallery needs to make templates and probes the same way (its embedder and policy)."""
    return {"embedder": g.embedder, "detector": g.detector, "frontalize": g.frontalize, "frontalizer": g.frontalizer,
            "yaw_threshold": g.yaw_threshold, "fusion_weight": g.fusion_weight}


def append_templates(g: Gallery, name: str, templates: Sequence[Template]) -> AddResult:
    """Add ``templates`` of ``name`` to ``g``, skipping any whose hash ``g`` already holds (any
    subject) or that repeats one earlier in the list."""
    with g._lock:
        known = set(g._hashes)
        keep: List[Template] = []
        dups = []
        for t in templates:
            if t.hash in known:
                dups.append(t.image)
                continue
            known.add(t.hash)
            keep.append(t)
        if keep:
            g._append(np.stack([t.vector for t in keep]).astype(np.float32), [name] * len(keep),
                      [t.hash for t in keep], [t.view for t in keep], [float(t.yaw) for t in keep])
    return AddResult(len(keep), tuple(sorted(set(dups))))


def fill_gallery(g: Gallery, emb: np.ndarray, labels: List[str], hashes: List[str], views: List[Optional[str]],
                 yaws: Sequence[Optional[float]]) -> Gallery:
    """Replace ``g``'s templates (a snapshot built from another backend's rows; a yaw ``None`` is unknown)."""
    with g._lock:
        g._emb = np.zeros((0, g.dim), np.float32)
        g._labels, g._hashes, g._views, g._yaws = [], [], [], []
        g._append(np.asarray(emb, np.float32).reshape(-1, g.dim), list(labels), list(hashes), list(views),
                  [float("nan") if y is None else float(y) for y in yaws])
    return g


class Store(abc.ABC):
    """The service's gallery backend. Thread-safe."""

    #: Shown by /healthz and the start-up log (no credentials).
    description: str = ""

    @abc.abstractmethod
    def version(self) -> Hashable:
        """Changes whenever any process changed the gallery (cheap: called before each request)."""

    @abc.abstractmethod
    def snapshot(self) -> Gallery:
        """The newest gallery (reloaded when :meth:`version` moved); do not modify it."""

    @abc.abstractmethod
    def add_templates(self, name: str, templates: Sequence[Template]) -> AddResult:
        """Store ``templates`` of subject ``name`` atomically (all or none, duplicates skipped)."""

    @abc.abstractmethod
    def remove_subject(self, name: str) -> int:
        """Remove every template of ``name`` atomically; returns how many (0: unknown subject)."""

    def close(self) -> None:
        """Release connections."""


class FileStore(Store):
    """The gallery file (:meth:`Gallery.save`'s atomic format).

    Writes: under :func:`pifr.gallery.file_lock` the file is reloaded, changed and saved
    (temporary file, fsync, rename), so concurrent servers and ``pifr enroll`` runs take turns
    and a server killed mid-write leaves the previous complete file. Reads: the file's inode,
    mtime and size are checked before each request and the snapshot reloaded when they moved.

    Args:
        path: the gallery file (created at the first enrolment when absent).
        far: the per-probe false-accept rate the default threshold holds.
        embedder: the embedder of a new gallery (``None``: pifr's default).
    """

    def __init__(self, path: Any, far: float, embedder: Optional[str] = None) -> None:
        self.path = Path(path)
        self.far = float(far)
        self.embedder = embedder
        if not self.path.parent.is_dir():
            raise GalleryError(f"{self.path}: folder {self.path.parent} does not exist")
        self.description = f"file {self.path}"
        self._lock = threading.Lock()
        self._version: Hashable = None
        self._snap: Optional[Gallery] = None
        self._sweep()
        self.snapshot()  # a bad file fails at start, not at the first request

    def _sweep(self) -> None:
        """Remove temporary files that a writer killed mid-save left (``Gallery.save`` names them
        ``.<name>.<pid>.<thread>.tmp``; only those of processes no longer running here)."""
        for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            try:
                pid = int(tmp.name[len(self.path.name) + 2:].split(".")[0])
                os.kill(pid, 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    log.info("removed %s, left by a writer that died mid-save", tmp)
            except (ValueError, PermissionError):
                continue

    def version(self) -> Hashable:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> Gallery:
        g = Gallery.load(self.path) if self.path.is_file() else Gallery(self.embedder)
        g.far_per_probe = self.far
        return g

    def snapshot(self) -> Gallery:
        v = self.version()
        snap = self._snap
        if snap is not None and v == self._version:
            return snap
        with self._lock:
            if self._snap is None or self.version() != self._version:
                v = self.version()
                self._snap, self._version = self._load(), v
                log.info("gallery %s loaded: %d subjects, %d templates", self.path, len(self._snap), self._snap.templates)
            return self._snap

    def _edit(self, change):  # noqa: ANN001, ANN202
        with file_lock(self.path):
            g = self._load()
            out, dirty = change(g)
            if dirty:
                g.save(self.path)
                with self._lock:  # our own write is the newest state: no reload needed
                    self._snap, self._version = g, self.version()
        return out

    def add_templates(self, name: str, templates: Sequence[Template]) -> AddResult:
        def change(g: Gallery) -> Tuple[AddResult, bool]:
            r = append_templates(g, name, templates)
            return r, r.added > 0

        return self._edit(change)

    def remove_subject(self, name: str) -> int:
        def change(g: Gallery) -> Tuple[int, bool]:
            n = g.remove(name) if name in g.template_counts() else 0
            return n, n > 0

        return self._edit(change)
