"""Which of a gallery's templates were fused from a view that this pifr makes differently now.

Each template carries a view record (stored with the gallery, see :mod:`pifr.gallery.storage`):

* ``"raw"`` — the embedding of the photo itself;
* ``"external"`` — given to :meth:`Gallery.add_embeddings` (how it was made is unknown);
* ``"<mode>:<fingerprint>"`` — fused from a view under ``mode`` (``"auto"`` or ``"always"``),
  ``fingerprint`` being :func:`pifr.frontalization.view_fingerprint` when it was enrolled;
* ``"auto-raw:<|yaw|>"`` — a face that ``"auto"`` left raw, with its |yaw| in degrees (stale once
  the rule in force would fuse that yaw);
* ``None`` — unknown: a file from a pifr that did not record it (never counted stale).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

from ..errors import PifrError
from ..frontalization import auto_fuses_above, view_fingerprint

log = logging.getLogger("pifr")


@dataclass(frozen=True)
class ViewPolicy:
    """How a gallery fuses faces now: its embedder, frontalizer and ``"auto"`` rule parameters
    (``None``: the rule measured for the embedder)."""

    embedder: str
    frontalizer: Optional[str]
    yaw_threshold: Optional[float]
    fusion_weight: Optional[float]

    def fingerprint(self, mode: str) -> Optional[str]:
        """How a face is fused under ``mode`` now (:func:`pifr.frontalization.view_fingerprint`)."""
        return view_fingerprint(self.embedder, self.frontalizer, mode, self.yaw_threshold, self.fusion_weight)

    def record(self, mode: Optional[str], auto_yaw: Optional[float] = None) -> Optional[str]:
        """The view record of a template ``mode`` fused now (``None``: raw; left raw by ``"auto"``
        when ``auto_yaw``, the face's yaw in degrees, is given)."""
        if mode is None:
            return "raw" if auto_yaw is None else f"auto-raw:{abs(auto_yaw):.1f}"
        fp = self.fingerprint(mode)
        return None if fp is None else f"{mode}:{fp}"

    def stale(self, templates: Iterable[Tuple[str, Optional[str]]]) -> Dict[str, int]:
        """Stale templates counted by identity, from ``(identity, view record)`` pairs (see
        :attr:`pifr.gallery.Gallery.stale_templates`). Never raises for a policy whose views
        cannot be made here: those templates are not judged."""
        pairs = list(templates)
        now: Dict[str, Tuple[bool, Optional[str]]] = {}
        out: Dict[str, int] = {}
        above = None  # the |yaw| past which "auto" fuses now, for the templates it left raw
        if any((v or "").startswith("auto-raw:") for _, v in pairs):
            try:
                above = auto_fuses_above(self.embedder, self.frontalizer, self.yaw_threshold, self.fusion_weight)
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
                    now[mode] = (True, self.fingerprint(mode))
                except PifrError as e:  # e.g. a generator file that is gone: its probes cannot be made either
                    log.debug("view fingerprint for %s templates unknown: %s", mode, e)
                    now[mode] = (False, None)
            known, current = now[mode]
            if known and fp != current:  # current None: the policy no longer fuses at all
                out[label] = out.get(label, 0) + 1
        return out


def warn_stale(where: str, stale: Dict[str, int]) -> None:
    """Log that the gallery at ``where`` holds ``stale`` templates (by identity) and what to do.
    A warning, not an error: the gallery still works, and frontal photos' templates are raw."""
    if stale:
        log.warning("%s: %d templates of %d identities were fused from a view that this pifr makes differently now "
                    "(another frontalization rule, 3D fit, refiner or generator), so they no longer match how probes "
                    "are made; if the gallery was enrolled with a frontalizer weights file (or with \"refined\" by a pifr "
                    "that did not record it), load it with the same frontalizer=; "
                    "else re-enrolling those photos (remove(), then enroll(): the same pixels are otherwise "
                    "skipped as duplicates) rebuilds them (Gallery.stale_templates lists them)",
                    where, sum(stale.values()), len(stale))


def saved_frontalizer(saved: Optional[str], where: str) -> Optional[str]:
    """The frontalizer for a gallery saved with the built-in view ``saved`` (``None``: none
    recorded): ``"refined"`` falls back to the plain 3D render (``None``) where no refiner is
    installed, with a warning naming ``where``; its fused templates are then listed stale."""
    if saved == "refined":
        from ..refinement import refiner_available

        if not refiner_available():
            log.warning("%s: enrolled with the refined view, but no refiner is installed here: probes use the "
                        "plain 3D render (install the refiner, or pass frontalizer=)", where)
            return None
    return saved
