"""pifr — pose-invariant face recognition.

Public API (models load lazily, on first use, once):

    >>> import pifr
    >>> r = pifr.verify("a.jpg", "b.jpg")
    >>> r.same, r.score, r.threshold, r.yaw

Importing pifr loads no model and does not import torch.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .alignment import ARCFACE_112, DLIB_150, TPGAN_128, AlignmentTemplate, align
from .errors import (
    DependencyError,
    FitError,
    DeviceError,
    EmbedderConfigError,
    GalleryError,
    ImageTooLargeError,
    InvalidArgumentError,
    InvalidImageError,
    InvalidPolicyError,
    NoFaceError,
    NoThresholdError,
    PifrError,
    ShapeError,
    TrainingError,
    UnknownModelError,
    WeightsChecksumError,
    WeightsError,
    WeightsFormatError,
    WeightsNotFoundError,
)
from .image import load_image
from .types import Face, Verification

__all__ = [
    "__version__", "load_image", "detect", "align", "estimate_yaw", "embed", "embed_many", "verify", "frontalize",
    "Frontalized", "rotate", "Rotated", "Gallery", "Match",
    "list_embedders", "list_detectors", "get_embedder", "register_embedder",
    "Face", "Verification", "AlignmentTemplate", "TPGAN_128", "ARCFACE_112", "DLIB_150",
    "PifrError", "InvalidImageError", "ImageTooLargeError", "ShapeError", "NoFaceError", "UnknownModelError",
    "WeightsError", "WeightsNotFoundError", "WeightsChecksumError", "WeightsFormatError", "DependencyError", "GalleryError",
    "InvalidPolicyError", "TrainingError", "FitError", "InvalidArgumentError", "DeviceError",
    "EmbedderConfigError", "NoThresholdError",
]

# Functions whose modules import torch are bound on first access, keeping `import pifr` fast.
_LAZY = {
    "detect": ("detection", "detect"),
    "list_detectors": ("detection", "list_detectors"),
    "estimate_yaw": ("detection", "estimate_yaw"),
    "embed": ("pipeline", "embed"),
    "embed_many": ("pipeline", "embed_many"),
    "get_embedder": ("embedders", "get_embedder"),
    "list_embedders": ("embedders", "list_embedders"),
    "register_embedder": ("onnx_registry", "register_embedder"),
    "verify": ("verification", "verify"),
    "frontalize": ("frontalization", "frontalize"),
    "rotate": ("rotation", "rotate"),
    "Rotated": ("rotation", "Rotated"),
    "Frontalized": ("frontalization", "Frontalized"),
    "Gallery": ("gallery", "Gallery"),
    "Match": ("gallery", "Match"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{mod}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pifr' has no attribute {name!r}")
