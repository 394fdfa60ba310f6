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


class InvalidArgumentError(PifrError, ValueError):
    """An argument's value is out of range or meaningless (NaN threshold, k < 1, a str where a list belongs)."""


class NoFaceError(PifrError):
    """No face was found where one was required."""


class UnknownModelError(PifrError, ValueError):
    """A model, embedder, detector or template name is not registered."""


class InvalidPolicyError(PifrError, ValueError):
    """A frontalization policy is invalid: unknown mode (modes are case-sensitive), or a yaw
    threshold or fusion weight out of range."""


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


class DeviceError(PifrError, ValueError):
    """The requested torch device is not valid or not present here (e.g. ``"cuda"`` without a GPU)."""


class GalleryError(PifrError):
    """A gallery operation failed (empty gallery, bad file, mismatched embedder)."""


class TrainingError(PifrError, ValueError):
    """A training or validation run was set up wrongly: unknown option, empty or overlapping
    identity splits, a missing pack or init file."""


class FitError(PifrError, ValueError):
    """The 3D face fit cannot handle this face (too small, turned too far up or down)."""


class EmbedderConfigError(PifrError, ValueError):
    """An embedder registration (:func:`pifr.register_embedder` or the ``$PIFR_EMBEDDERS`` file) is invalid."""


class NoThresholdError(PifrError, ValueError):
    """A decision was asked of an embedder that has no calibrated threshold, and none was given."""
