"""Typed exceptions. Everything pifr raises on purpose derives from :class:`PifrError`.

Errors caused by the caller's input also derive from :class:`ValueError` so that
generic ``except ValueError`` handlers keep working.
"""
from __future__ import annotations


class PifrError(Exception):
    """Base class of every error pifr raises on purpose."""


class InvalidImageError(PifrError, ValueError):
    """The image could not be read or is not a usable picture (corrupt, empty, wrong type)."""


class ImageTooLargeError(InvalidImageError):
    """The image has more pixels than allowed (decompression-bomb guard)."""


class ShapeError(PifrError, ValueError):
    """An array or tensor has the wrong shape, dtype or value range."""


class NoFaceError(PifrError):
    """No face was found where one was required."""


class UnknownModelError(PifrError, ValueError):
    """A model, embedder, detector or template name is not registered."""


class WeightsError(PifrError):
    """Base class of weight-file problems."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A registered weight file is not present in any search location."""


class WeightsChecksumError(WeightsError):
    """A weight file exists but its sha256 differs from the registry's."""


class WeightsFormatError(WeightsError):
    """A weight file could not be parsed or does not match the architecture."""


class DependencyError(PifrError, ImportError):
    """An optional dependency needed for the requested feature is not installed."""


class GalleryError(PifrError):
    """A gallery operation failed (empty gallery, bad file, mismatched embedder)."""


class EmbedderConfigError(PifrError, ValueError):
    """An embedder registration (:func:`pifr.register_embedder` or the ``$PIFR_EMBEDDERS`` file) is invalid."""


class NoThresholdError(PifrError, ValueError):
    """A decision was asked of an embedder that has no calibrated threshold, and none was given."""
