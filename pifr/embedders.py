"""Face embedders: aligned crop → L2-normalised identity vector.

Every embedder has the same small protocol (:class:`Embedder`): a registry name, the
alignment template it expects, the output dimension, a differentiable ``module`` (a torch
network taking ``(B, 3, S, S)`` RGB in [0, 255]) and :meth:`Embedder.embed_crops`. ONNX models
registered with :func:`pifr.register_embedder` (:mod:`pifr.onnx_registry`, run by :mod:`pifr.onnx_embedder`) follow it too, without ``module``.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ._device import resolve_device
from .alignment import ARCFACE_112, DLIB_150, TPGAN_128, AlignmentTemplate, align, check_crops
from .errors import UnknownModelError
from . import onnx_registry
from .types import EmbedderInfo, Face

log = logging.getLogger("pifr")

#: Chosen on CFP identities 351–400 (tuning split) by ``python benchmarks/embedder_choice.py``: the
#: best profile DIR at FAR 1 % per probe among candidates within 0.5 point of the best frontal rank-1
#: and at most 2× the previous default's verify latency (docs/embedders.md has the table).
DEFAULT_EMBEDDER = "sface"

#: facenet-pytorch's InceptionResnetV1 is fed 160 px crops: the ArcFace template scaled up.
FACENET_160 = AlignmentTemplate("facenet_160", 160, tuple((x * 160 / 112, y * 160 / 112) for x, y in ARCFACE_112.points))


def _build_dlib() -> Any:
    from .models.dlib_resnet import DlibResNet

    return DlibResNet()


def _build_mobilefacenet() -> Any:
    from .models.mobilefacenet import MobileFaceNet

    return MobileFaceNet()


def _build_mobilefacenet_prelu() -> Any:
    from .models.mobilefacenet import MobileFaceNetPReLU

    return MobileFaceNetPReLU()


def _build_sface() -> Any:
    from .models.sface import SFace

    return SFace()


def _build_facenet() -> Any:
    from .models.facenet import FaceNet

    return FaceNet()


def _build_lightcnn() -> Any:
    from .models.lightcnn import LightCNNFromRGB

    return LightCNNFromRGB()


@dataclass(frozen=True)
class _Entry:
    """One row of the embedder table: the single place that says what a network expects (its
    alignment template, hence input size; the pixel normalisation is inside its ``forward``) and
    at which threshold its scores mean "same person"."""

    name: str
    #: Registry name of its weight file (``weights/manifest.json``).
    weights: str
    template: AlignmentTemplate
    dim: int
    build: Callable[[], Any]
    #: Cosine-similarity threshold (same if score ≥ threshold); see docs/embedders.md for how each was set.
    threshold: float
    #: Prefix of the module the weight keys belong to, and weight keys to drop (training heads).
    target: str = ""
    ignore: tuple = ()

    def load_network(self, weights: Optional[str] = None, path: Optional[str] = None) -> "tuple[Any, Any]":
        """A fresh network with its weights loaded: the registered file ``weights`` (default: its
        own), or the file at ``path``. Returns ``(module, WeightSpec)``; the module is in train
        mode on the CPU.

        Raises:
            WeightsNotFoundError / WeightsChecksumError / WeightsFormatError."""
        from .weights import load_into

        module = self.build()
        target = getattr(module, self.target) if self.target else module
        spec = load_into(target, weights or self.weights, path, ignore=self.ignore)
        return module, spec


# Thresholds: best-accuracy cosine threshold on LFW pairsDevTrain (the tuning split), from
# `python benchmarks/calibrate.py` — see docs/embedders.md. User-supplied models carry none measured
# here; their value is a placeholder the user should calibrate and is flagged as such.
_EMBEDDERS: Dict[str, _Entry] = {
    "dlib_resnet": _Entry("dlib_resnet", "dlib_resnet", DLIB_150, 128, _build_dlib, threshold=0.9069),
    "mobilefacenet": _Entry("mobilefacenet", "mobilefacenet", ARCFACE_112, 128, _build_mobilefacenet, threshold=0.2738),
    "sface": _Entry("sface", "sface", ARCFACE_112, 128, _build_sface, threshold=0.3470),
    "mobilefacenet_casia": _Entry("mobilefacenet_casia", "mobilefacenet_casia", ARCFACE_112, 128,
                                  _build_mobilefacenet_prelu, threshold=0.3206),
    "facenet_vggface2": _Entry("facenet_vggface2", "facenet_vggface2", FACENET_160, 512, _build_facenet,
                               threshold=0.5, target="net", ignore=("logits.",)),
    "lightcnn29_v2": _Entry("lightcnn29_v2", "lightcnn29_v2", TPGAN_128, 256, _build_lightcnn,
                            threshold=0.5, target="net", ignore=("fc2.",)),
}
# Registered ONNX models may not take a built-in's name (pifr.onnx_registry refuses it).
onnx_registry.BUILTIN_NAMES.update(_EMBEDDERS)
_UNCALIBRATED = {"facenet_vggface2", "lightcnn29_v2"}


class Embedder:
    """A loaded embedder. Build with :func:`get_embedder`."""

    def __init__(self, entry: _Entry, device: Any = None, weights_path: Optional[str] = None) -> None:
        import torch

        self.name = entry.name
        self.template = entry.template
        self.dim = entry.dim
        self.threshold = entry.threshold
        self.device = resolve_device(device)
        module, self.spec = entry.load_network(path=weights_path)
        self.module = module.eval().to(self.device)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._torch = torch

    def embed_crops(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """``crops``: ``(N, S, S, 3)`` uint8 RGB aligned to :attr:`template` → ``(N, dim)`` float32, unit L2 norm."""
        crops = check_crops(crops, self.template, self.name)
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(crops[i : i + batch_size])).to(self.device)
                e = self.module(x.permute(0, 3, 1, 2).float())
                out.append(torch.nn.functional.normalize(e.float(), dim=1).cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, self.dim), np.float32)

    def align(self, img: np.ndarray, face: Face) -> np.ndarray:
        return align(img, face, self.template)

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, template={self.template.name}, dim={self.dim}, device={self.device})"


@functools.lru_cache(maxsize=16)
def _cached(name: str, device: Any, weights_path: Optional[str]) -> Embedder:
    return Embedder(_EMBEDDERS[name], device=device, weights_path=weights_path)


def embedder_spec(name: str) -> _Entry:
    """The registry row of embedder ``name`` (template, dim, threshold, weights name, builder),
    e.g. to build an uncached copy (:class:`Embedder`) or a network loaded with other weights
    (``embedder_spec(n).load_network(...)``).

    Raises:
        UnknownModelError: not a registered embedder.
    """
    if name not in _EMBEDDERS:
        raise UnknownModelError(f"unknown embedder {name!r}; known: {sorted(_EMBEDDERS)}")
    return _EMBEDDERS[name]


def get_embedder(name: str = DEFAULT_EMBEDDER, device: Any = None, weights_path: Optional[str] = None) -> Embedder:
    """The embedder ``name`` on ``device``, loaded once and cached.

    ``name`` may also be a model registered with :func:`pifr.register_embedder` (an
    :class:`pifr.onnx_embedder.OnnxEmbedder`, same interface; ``weights_path`` does not apply).

    Raises:
        UnknownModelError: not a registered embedder.
        WeightsNotFoundError / WeightsChecksumError / WeightsFormatError: its weights are missing or wrong.
    """
    if name not in _EMBEDDERS:
        # Models registered with pifr.register_embedder or $PIFR_EMBEDDERS (pifr/onnx_registry.py).
        from .onnx_embedder import get_registered
        from .onnx_registry import registered

        if name in registered():
            if weights_path is not None:
                from .errors import EmbedderConfigError

                raise EmbedderConfigError(f"{name!r} is a registered ONNX model: its file is the registration's, not weights_path")
            return get_registered(name, device)  # type: ignore[return-value]
        raise UnknownModelError(f"unknown embedder {name!r}; known: {sorted(_EMBEDDERS) + sorted(registered())}")
    dev = resolve_device(device)
    return _cached(name, str(dev), None if weights_path is None else str(weights_path))


def list_embedders() -> List[EmbedderInfo]:
    """Every registered embedder, with whether its weights are present here and pass their sha256
    check (nothing is loaded; ``reason`` names the error otherwise)."""
    from .errors import WeightsError
    from .weights import resolve

    out = []
    for e in _EMBEDDERS.values():
        try:
            # verify=True: a file that fails its sha256 is not "available" (the hash is cached by size and mtime).
            resolve(e.weights, verify=True)
            ok, why = True, ""
        except WeightsError as err:
            ok, why = False, f"{type(err).__name__}: {err}"
        if e.name in _UNCALIBRATED:
            why = (why + " " if why else "") + "(threshold not calibrated here: call Gallery.calibrate or pass threshold=)"
        out.append(EmbedderInfo(e.name, e.weights, e.template.name, e.dim, e.threshold, ok, e.name not in _UNCALIBRATED, why))
    from .onnx_registry import infos

    return out + infos()
