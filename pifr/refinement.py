"""Render refinement: a learned network (:mod:`pifr.models.refiner`) turns a 3D render of a face
into a photo-like image.

Data flow: photo → face → 3D fit → render in the 128×128 TP-GAN crop (:mod:`pifr.rotation`) →
**refiner** (this module) → embedder. The refiner was trained on that crop only, so its inputs
are always TP-GAN crops; callers that want another template warp its output afterwards.

This module works on arrays and never imports :mod:`pifr.rotation` (which imports it): the
render → refined step has one direction.

Weights come from the registry (an entry of task ``"refiner"`` in ``weights/manifest.json``,
file ``refiner.safetensors``) or an explicit file written by
:func:`pifr.models.refiner.save_refiner`.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ._device import resolve_device
from .alignment import TPGAN_128
from .errors import PifrError, ShapeError, WeightsFormatError, WeightsNotFoundError

log = logging.getLogger("pifr")

#: The registry task of refiner weights.
REFINER_TASK = "refiner"
#: The crop the refiner reads and writes (the TP-GAN crop's size, pixels).
REFINER_SIZE = TPGAN_128.size
#: Faces per forward pass by default: ~2 MB of input each, small enough for any CPU.
DEFAULT_BATCH = 16


class RenderRefiner:
    """A loaded refiner network on one device. Build with :func:`get_refiner`.

    Attributes:
        name: ``"refiner:<file name>"``, what produced a refined image.
        path: the weights file.
        device: the torch device the network runs on.
        meta: the file's own record (training data, steps, figures), as saved.
    """

    def __init__(self, net: Any, path: Path, device: Any, meta: Optional[Dict[str, object]] = None,
                 batch_size: int = DEFAULT_BATCH) -> None:
        self.net = net.eval().to(device)
        self.path = Path(path)
        self.device = device
        self.meta: Dict[str, object] = dict(meta or {})
        self.batch_size = max(1, int(batch_size))
        self.name = f"refiner:{self.path.name}"

    def __repr__(self) -> str:
        return f"RenderRefiner({self.name!r}, device={str(self.device)!r})"

    def refine(self, images: np.ndarray, masks: np.ndarray, landmarks: np.ndarray,
               batch_size: Optional[int] = None) -> np.ndarray:
        """Refine renders in the TP-GAN crop.

        Args:
            images: ``(N, 128, 128, 3)`` uint8 RGB renders, black outside the face.
            masks: ``(N, 128, 128)`` bool, the pixels the render covers.
            landmarks: ``(N, 68, 2)`` the rendered pose's 68 landmarks in crop pixels.
            batch_size: faces per forward pass (default: this refiner's ``batch_size``).

        Returns:
            ``(N, 128, 128, 3)`` uint8 RGB refined images (the whole crop, not only the mask).

        Raises:
            ShapeError: arrays of the wrong shape or dtype.
        """
        import torch

        images, masks, landmarks = np.asarray(images), np.asarray(masks), np.asarray(landmarks)
        n = len(images)
        s = REFINER_SIZE
        if images.shape != (n, s, s, 3) or images.dtype != np.uint8:
            raise ShapeError(f"images must be (N, {s}, {s}, 3) uint8 TP-GAN crops, got {images.shape} {images.dtype}")
        if masks.shape != (n, s, s):
            raise ShapeError(f"masks must be (N, {s}, {s}) to match {n} images, got {masks.shape}")
        if landmarks.shape != (n, 68, 2) or not np.isfinite(landmarks).all():
            raise ShapeError(f"landmarks must be finite (N, 68, 2) crop pixels to match {n} images, got {landmarks.shape}")
        out = np.zeros((n, s, s, 3), np.uint8)
        step = max(1, int(batch_size or self.batch_size))
        with torch.inference_mode():
            for k in range(0, n, step):
                x = torch.from_numpy(np.ascontiguousarray(images[k:k + step])).to(self.device)
                x = x.permute(0, 3, 1, 2).float() / 127.5 - 1
                m = torch.from_numpy(np.ascontiguousarray(masks[k:k + step], dtype=np.float32)).to(self.device)[:, None]
                lm = torch.from_numpy(np.ascontiguousarray(landmarks[k:k + step], dtype=np.float32)).to(self.device)
                y = self.net(x, m, lm)["img128"]
                out[k:k + step] = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return out

    def refine_rotated(self, rotated: Sequence[Any], batch_size: Optional[int] = None) -> List[np.ndarray]:
        """Refine renders of :func:`pifr.rotation.render_pose` (anything with ``image``, ``mask``,
        ``landmarks`` and ``template``), which must be in the TP-GAN crop; returns one
        ``(128, 128, 3)`` uint8 image per render.

        Raises:
            ShapeError: a render placed in another template (the refiner never saw one).
        """
        if not rotated:
            return []
        other = sorted({str(r.template) for r in rotated} - {TPGAN_128.name})
        if other:
            raise ShapeError(f"the refiner reads renders in the TP-GAN crop ({TPGAN_128.name}) only, got {other}; "
                             f"render into {TPGAN_128.name} and warp the refined image afterwards")
        out = self.refine(np.stack([r.image for r in rotated]), np.stack([r.mask for r in rotated]),
                          np.stack([r.landmarks for r in rotated]), batch_size)
        return list(out)


def _registered() -> List[Any]:
    """Registered refiner specs, the one named ``"refiner"`` first."""
    from .weights import list_weights

    return sorted(list_weights(REFINER_TASK), key=lambda s: s.name != "refiner")


def refiner_available() -> bool:
    """Whether :func:`get_refiner` with no weights would find a file: a refiner is registered in
    the weights manifest and its file is in one of the search locations. Loads nothing, checks
    no checksum and never raises."""
    try:
        from .weights import candidates

        return any(p.is_file() for spec in _registered() for p in candidates(spec))
    except (PifrError, OSError, ValueError) as e:  # an unreadable manifest means "no refiner"
        log.debug("no refiner available: %s", e)
        return False


def _locate(weights: Optional[str]) -> "tuple[Optional[Any], Path]":
    """``(registry spec or None, file)`` for ``weights`` (``None``: the registered refiner). Finds
    the file only; :func:`_load` verifies the registered file's checksum.

    Raises:
        WeightsNotFoundError: none registered or installed, or no such file.
    """
    if weights is None:
        from .weights import resolve

        specs = _registered()
        if not specs:
            raise WeightsNotFoundError("no refiner weights are registered in weights/manifest.json yet; "
                                       "pass weights=<refiner.safetensors> written by save_refiner")
        # Unverified here: hashing on every call would cost; the load below verifies once per file version.
        return specs[0], resolve(specs[0], verify=False)[1]
    path = Path(weights)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: no such refiner file")
    return None, path


def _file_identity(path: Path) -> "tuple[str, int, int, int]":
    """``(resolved path, inode, mtime in ns, size in bytes)``: changes when the file is rewritten
    in place or replaced by a rename, so a cache keyed on it never serves stale weights."""
    try:
        st = path.stat()
        return str(path.resolve()), st.st_ino, st.st_mtime_ns, st.st_size
    except OSError as e:  # removed between the look-up and here
        raise WeightsNotFoundError(f"{path}: cannot read the refiner file ({e.strerror or e})") from e


def _load(weights: Optional[str], device: Any) -> RenderRefiner:
    spec, path = _locate(weights)
    if spec is not None:
        from .weights import resolve

        # A corrupt registered file raises its own WeightsError (checksum included).
        _, path = resolve(spec, path)
    from .models.refiner import read_refiner

    try:
        net, meta = read_refiner(path)
    except Exception as e:  # noqa: BLE001 - a header safetensors cannot parse, a foreign file, a bad config: all format errors
        raise WeightsFormatError(f"{path}: not a refiner weights file ({type(e).__name__}: {e})") from e
    log.info("refiner %s loaded (%s, meta keys %s)", path, net.config, sorted(meta))
    return RenderRefiner(net, path, device, meta)


@functools.lru_cache(maxsize=4)
def _cached(weights: Optional[str], identity: "tuple[str, int, int, int]", device: str) -> RenderRefiner:
    # ``identity`` only keys the cache (see _file_identity): a rewritten file misses and is read again.
    return _load(weights, device)


def get_refiner(weights: Optional[Union[str, Path]] = None, device: Any = None) -> RenderRefiner:
    """The refiner, loaded once per (weights, device) and version of its file: a file rewritten
    at the same path (a new modification time, size or inode) is read again on the next call;
    an unchanged one returns the same object.

    Args:
        weights: a refiner ``.safetensors`` file; ``None``: the registered one.
        device: torch device (``None``: CUDA if available).

    Raises:
        WeightsNotFoundError: none registered or installed (``weights=None``), or no such file.
        WeightsChecksumError: the registered file's sha256 differs from the manifest's.
        WeightsFormatError: the file is not a refiner file or does not fit its own config.
    """
    dev = resolve_device(device)
    key = None if weights is None else str(weights)
    _, path = _locate(key)
    return _cached(key, _file_identity(path), str(dev))
