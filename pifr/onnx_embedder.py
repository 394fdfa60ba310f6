"""ONNX embedders at run time: a registered model (:mod:`pifr.onnx_registry`) loaded in
onnxruntime behind the same interface as the built-in embedders (:class:`pifr.embedders.Embedder`):
its input's name, layout (NCHW or NHWC), size and batch read from the model, the registration's
alignment template and pixel normalisation applied, the output L2-normalised.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

from .alignment import align, check_crops
from .errors import (
    DependencyError,
    NoThresholdError,
    ShapeError,
    WeightsFormatError,
    WeightsNotFoundError,
)
from .onnx_registry import _LOCK, Registration, registered
from .onnx_registry import _reset as _reset_registry
from .types import Face

log = logging.getLogger("pifr")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise DependencyError("ONNX embedders need onnxruntime: pip install onnxruntime (or onnxruntime-gpu)") from e
    return onnxruntime


def external_data_files(path: Path) -> List[Path]:
    """The files holding a model's tensors outside the ``.onnx`` file (torch's newer exporter writes
    ``model.onnx.data`` beside it): the recorded sha256 must cover them too. Read with the ``onnx``
    package where installed; otherwise torch's ``<file>.data`` naming is assumed. Cached per file state."""
    st = path.stat()
    return list(_external_data_files(str(path), st.st_size, st.st_mtime))


@functools.lru_cache(maxsize=64)
def _external_data_files(path_str: str, size: int, mtime: float) -> Tuple[Path, ...]:
    path = Path(path_str)
    try:
        import onnx
    except ImportError:
        guess = path.with_name(path.name + ".data")
        return (guess,) if guess.is_file() else ()
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - onnxruntime reports the unreadable file in its own words next
        log.debug("%s: onnx could not parse it (%s)", path, e)
        return ()
    locs = {kv.value for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
            for kv in t.external_data if kv.key == "location"}
    return tuple(path.parent / loc for loc in sorted(locs))


def model_sha256(path: Path) -> str:
    """sha256 of the ``.onnx`` file; for a model with external data, sha256 over the file's and
    each data file's sha256 (so a changed weight file changes it too)."""
    from .weights import _sha_cached

    def one(p: Path) -> str:
        st = p.stat()
        return _sha_cached(str(p), st.st_size, st.st_mtime)

    sha = one(path)
    ext = external_data_files(path)
    if not ext:
        return sha
    missing = [str(p) for p in ext if not p.is_file()]
    if missing:
        raise WeightsNotFoundError(f"{path}: its external data file(s) {missing} are missing")
    h = hashlib.sha256(sha.encode())
    for p in ext:
        h.update(f"{p.name}:{one(p)}".encode())
    return h.hexdigest()


_FLOATS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxEmbedder:
    """A registered ONNX model behind the :class:`pifr.embedders.Embedder` interface (``name``,
    ``template``, ``dim``, ``threshold``, ``spec`` with the file's sha256, :meth:`align`,
    :meth:`embed_crops`). ``module`` is ``None``: an ONNX model is not a torch network, so it
    cannot serve as a training loss. Build with :func:`pifr.get_embedder`."""

    module = None

    def __init__(self, reg: Registration, device: Any = None) -> None:
        from ._device import resolve_device
        from .weights import WeightSpec

        ort = _ort()
        self.registration = reg
        self.name = reg.name
        self.template = reg.template
        self.path = Path(reg.path)
        self.device = resolve_device(device)
        if not self.path.is_file():
            raise WeightsNotFoundError(f"embedder {reg.name!r}: {self.path}: no such file")
        self.sha256 = model_sha256(self.path)
        opts = ort.SessionOptions()
        # onnxruntime ignores OMP_NUM_THREADS; follow torch's thread count so a benchmark's limit holds for both.
        import torch

        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.info("%s: onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); running on CPU", self.path)
        try:
            self._sess = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - every parser failure is a bad file to the caller
            raise WeightsFormatError(f"{self.path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
        self._check_io()
        self.dim = int(self._run(np.full((1, self.template.size, self.template.size, 3), 128, np.uint8)).shape[1])
        # The input contract (template, mean/std, channels) lives in the registration, its one source.
        self.spec = WeightSpec(reg.name, "embedder", "onnx", str(self.path), self.sha256, "onnx", "user")

    # -------------------------------------------------------------- contract checks
    def _check_io(self) -> None:
        ins = self._sess.get_inputs()
        if len(ins) != 1:
            raise WeightsFormatError(f"{self.path}: expected one input (an image batch), the model has {len(ins)}: "
                                     f"{[i.name for i in ins]}")
        inp = ins[0]
        self._input = inp.name
        if inp.type not in _FLOATS:
            raise WeightsFormatError(f"{self.path}: input {inp.name!r} is {inp.type}, expected a float tensor")
        self._in_dtype = _FLOATS[inp.type]
        shape = list(inp.shape)
        if len(shape) != 4:
            raise WeightsFormatError(f"{self.path}: input {inp.name!r} has shape {shape}, expected 4-D (batch, 3, H, W)")
        s = self.template.size
        # Layout from where the 3 channels sit; a symbolic dimension ("N", None) is dynamic.
        self._nhwc = shape[1] != 3 and shape[3] == 3
        hw = shape[1:3] if self._nhwc else shape[2:4]
        if (shape[3] if self._nhwc else shape[1]) != 3:
            raise WeightsFormatError(f"{self.path}: input {inp.name!r} has shape {shape}: no 3-channel axis")
        if any(isinstance(d, int) and d != s for d in hw):
            raise ShapeError(f"{self.path}: input {inp.name!r} is {hw[0]}x{hw[1]}, but template {self.template.name} "
                             f"makes {s}x{s} crops: register it with the template it was trained on")
        self.batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        outs = self._sess.get_outputs()
        out = outs[0]
        self._output = out.name
        if out.type not in _FLOATS:
            raise WeightsFormatError(f"{self.path}: output {out.name!r} is {out.type}, expected a float embedding")
        if out.shape is not None and len(out.shape) != 2:
            raise WeightsFormatError(f"{self.path}: output {out.name!r} has shape {out.shape}, expected 2-D (batch, dim)")

    def _run(self, crops: np.ndarray) -> np.ndarray:
        """Raw outputs ``(N, dim)`` for uint8 RGB crops ``(N, S, S, 3)``, in chunks the model accepts."""
        r = self.registration
        x = crops.astype(np.float32)
        if r.channels == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(r.mean, np.float32)) / np.asarray(r.std, np.float32)
        if not self._nhwc:
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=self._in_dtype)
        step = self.batch or len(x)
        out = []
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            n = len(chunk)
            if self.batch and n < self.batch:  # a fixed batch above 1: pad the last chunk, drop the padding
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - n, 0)], 0)
            try:
                y = self._sess.run([self._output], {self._input: chunk})[0]
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
                raise WeightsFormatError(f"{self.path}: inference failed on a {chunk.shape} batch "
                                         f"({type(e).__name__}: {e})") from e
            y = np.asarray(y)
            if y.ndim != 2 or y.shape[0] != len(chunk) or not np.issubdtype(y.dtype, np.floating):
                raise WeightsFormatError(f"{self.path}: output {self._output!r} is {y.dtype} {y.shape} for a batch of "
                                         f"{len(chunk)}, expected a 2-D float (batch, dim) embedding")
            out.append(y[:n])
        return np.concatenate(out, 0)

    # -------------------------------------------------------------- Embedder interface
    @property
    def calibrated(self) -> bool:
        return self.registration.threshold is not None

    @property
    def threshold(self) -> float:
        """The calibrated cosine threshold. Raises :class:`NoThresholdError` when none was measured:
        pifr invents no threshold for a model it did not calibrate."""
        if self.registration.threshold is None:
            raise NoThresholdError(
                f"embedder {self.name!r} ({self.path.name}) has no calibrated threshold, so pifr cannot decide "
                f"same/different with it: pass threshold= (pifr verify --threshold), or measure one with "
                f"`python benchmarks/calibrate.py --embedder {self.name}` (stored with its registration)")
        return self.registration.threshold

    def embed_crops(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """``crops``: ``(N, S, S, 3)`` uint8 RGB aligned to :attr:`template` → ``(N, dim)`` float32, unit L2 norm.

        Raises:
            ShapeError: wrong crop shape. WeightsFormatError: the model's output is not a finite 2-D float array.
        """
        crops = check_crops(crops, self.template, self.name)
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        step = self.batch or max(1, batch_size)
        y = np.concatenate([self._run(crops[i:i + step]) for i in range(0, len(crops), step)], 0).astype(np.float32)
        bad = ~np.isfinite(y).all(1)
        if bad.any():
            raise WeightsFormatError(f"{self.path}: the model output NaN or infinite values for {int(bad.sum())} of {len(y)} crops")
        norm = np.linalg.norm(y, axis=1, keepdims=True)
        return y / np.maximum(norm, 1e-12)

    def align(self, img: np.ndarray, face: Face) -> np.ndarray:
        return align(img, face, self.template)

    def __repr__(self) -> str:
        b = self.batch or "dynamic"
        return f"OnnxEmbedder({self.name!r}, {self.path}, template={self.template.name}, dim={self.dim}, batch={b}, device={self.device})"


@functools.lru_cache(maxsize=16)
def _cached(reg: Registration, device: str, stamp: tuple) -> OnnxEmbedder:
    return OnnxEmbedder(reg, device)


def get_registered(name: str, device: Any = None) -> Optional[OnnxEmbedder]:
    """The loaded ONNX embedder ``name`` (cached per registration, device and file state), or
    ``None`` if no such name is registered."""
    reg = registered().get(name)
    if reg is None:
        return None
    from ._device import resolve_device

    p = Path(reg.path)
    if not p.is_file():
        raise WeightsNotFoundError(f"embedder {name!r}: {p}: no such file"
                                   + (f" (registered in {reg.config})" if reg.config else ""))
    # Keyed by the files' state too: a model replaced on disk under the same name is loaded afresh.
    stamp = tuple((q.stat().st_size, q.stat().st_mtime) for q in [p] + external_data_files(p) if q.is_file())
    return _cached(reg, str(resolve_device(device)), stamp)


def _reset() -> None:
    """Forget every registration and loaded model; ``$PIFR_EMBEDDERS`` is read again on next use (tests)."""
    with _LOCK:
        _reset_registry()
        _cached.cache_clear()


__all__ = ["OnnxEmbedder", "get_registered"]
