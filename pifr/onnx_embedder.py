"""Bring your own recogniser: ArcFace-class ONNX embedders, run by onnxruntime behind pifr's pipeline.

A registered model is used by name wherever a built-in embedder is (``verify``, ``embed``,
``embed_many``, ``Gallery``, the CLI's ``--embedder``, the benchmarks)::

    pifr.register_embedder("w600k_r50", "models/w600k_r50.onnx", normalization="insightface")
    pifr.verify(a, b, embedder="w600k_r50", threshold=0.3)

or, for every process, from a JSON file named by ``$PIFR_EMBEDDERS`` (read once, on first use of
the registry) — a list of registrations, the keyword arguments of :func:`register_embedder`, paths
relative to the file's folder::

    [
      {"name": "w600k_r50", "path": "w600k_r50.onnx", "normalization": "insightface"},
      {"name": "mfn", "path": "/models/mfn.onnx", "mean": [123.675, 116.28, 103.53],
       "std": [58.395, 57.12, 57.375], "channels": "RGB", "threshold": 0.2738,
       "threshold_source": "benchmarks/calibrate.py ...",
       "auto_rule": {"yaw_threshold": 30, "fusion_weight": 0.5, "view_yaws": [0], "threshold_shift": 0.0},
       "impostor_table": "mfn_impostors.json"}
    ]

Input contract: the input's name, layout (NCHW or NHWC), size and batch (fixed or dynamic) are read
from the model; the alignment template and the pixel normalisation come from the registration — a
named convention (:data:`NORMALIZATIONS`: ``"insightface"`` (x − 127.5) / 127.5, ``"opencv"`` raw
0–255 as OpenCV Zoo's recognisers take it, ``"imagenet"``) or an explicit ``(x − mean) / std`` (per
channel, 0–255 units, in the model's channel order). There is no default: a model fed the wrong
convention gives plausible-looking garbage, never an error, so the registration must say which.
No threshold is invented: until ``benchmarks/calibrate.py --embedder NAME`` has measured one (or the
caller passes ``threshold=``), a decision raises :class:`~pifr.errors.NoThresholdError`.

A registration may also carry what pifr measures for its built-in embedders: an ``"auto"`` rule
(when a turned face is fused with its 3D renders; see :class:`pifr.frontalization.AutoRule`) and an
impostor table (``benchmarks/impostor_tables.py``'s format: ``far_per_pair_to_threshold``), which
gives a :class:`pifr.Gallery` its default operating point.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import numbers
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .alignment import AlignmentTemplate, align, check_crops, get_template
from .errors import (
    DependencyError,
    EmbedderConfigError,
    NoThresholdError,
    ShapeError,
    UnknownModelError,
    WeightsFormatError,
    WeightsNotFoundError,
)
from .types import Face

log = logging.getLogger("pifr")

#: Environment variable naming the JSON registration file.
CONFIG_ENV = "PIFR_EMBEDDERS"
_KEYS = {"name", "path", "template", "normalization", "mean", "std", "channels", "threshold", "threshold_source",
         "auto_rule", "impostor_table"}
#: Named pixel normalisations ``(mean, std, channels)``, 0–255 units: what a family of published
#: recognisers was trained with.
NORMALIZATIONS: Dict[str, Tuple[Tuple[float, float, float], Tuple[float, float, float], str]] = {
    # insightface's ArcFace models (w600k_r50, glint360k …): (x − 127.5) / 127.5, RGB.
    "insightface": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5), "RGB"),
    # OpenCV Zoo's FaceRecognizerSF models (SFace): raw 0–255, RGB (OpenCV swaps its BGR images).
    "opencv": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "RGB"),
    # torchvision's ImageNet statistics (e.g. foamliu's MobileFaceNet), RGB.
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), "RGB"),
}
_AUTO_RULE_KEYS = {"yaw_threshold", "fusion_weight", "view_yaws", "threshold_shift"}


@dataclass(frozen=True)
class Registration:
    """One registered ONNX embedder.

    ``path`` is absolute; ``mean``/``std`` are per channel in 0–255 pixel units, in ``channels``
    order (what the model is fed); ``threshold`` is the cosine threshold (``None``: not calibrated);
    ``config`` is the ``$PIFR_EMBEDDERS`` file it came from (``None``: registered in code)."""

    name: str
    path: str
    template: AlignmentTemplate
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    channels: str
    threshold: Optional[float] = None
    threshold_source: str = ""
    config: Optional[str] = None
    #: ``"auto"`` rule as ``(yaw_threshold, fusion_weight, view_yaws, threshold_shift)``; ``None``: none measured.
    auto_rule: Optional[Tuple[float, float, Tuple[float, ...], float]] = None
    #: ``((far_per_pair, threshold), …)`` sorted by falling FAR; empty: none measured.
    impostor_table: Tuple[Tuple[float, float], ...] = ()


_LOCK = threading.RLock()
_REGISTRY: Dict[str, Registration] = {}
_CONFIG_READ = False


def _triple(name: str, what: str, v: Any) -> Tuple[float, float, float]:
    try:
        t = () if isinstance(v, (str, bytes)) else tuple(float(x) for x in v)
    except (TypeError, ValueError):
        t = ()
    if len(t) != 3 or not all(math.isfinite(x) for x in t):
        raise EmbedderConfigError(f"embedder {name!r}: {what} must be 3 finite numbers (one per channel), got {v!r}")
    return t  # type: ignore[return-value]


#: Names of the built-in embedders, filled in by :mod:`pifr.embedders` when it is imported (it
#: imports this module, not the reverse, so the registry stays one-way).
BUILTIN_NAMES: "set[str]" = set()


def check_not_builtin(name: str) -> None:
    if name in BUILTIN_NAMES:
        raise EmbedderConfigError(f"{name!r} is a built-in embedder (pifr ships it): drop this registration, "
                                  "or register the model under another name")


def _normalization(name: str, normalization: Any, mean: Any, std: Any, channels: Any) -> "tuple[Any, Any, Any]":
    """``(mean, std, channels)`` from a named convention or explicit values; never a silent default."""
    if normalization is not None:
        if mean is not None or std is not None:
            raise EmbedderConfigError(f"embedder {name!r}: give normalization or mean/std, not both")
        if normalization not in NORMALIZATIONS:
            raise EmbedderConfigError(f"embedder {name!r}: unknown normalization {normalization!r}; "
                                      f"known: {sorted(NORMALIZATIONS)} (or give mean and std)")
        m, s, ch = NORMALIZATIONS[normalization]
        return m, s, channels if channels is not None else ch
    if mean is None or std is None:
        raise EmbedderConfigError(
            f"embedder {name!r}: say how the model's pixels are normalised — normalization= one of "
            f"{sorted(NORMALIZATIONS)}, or both mean= and std= (0–255 units, per channel). pifr assumes none: "
            "a model fed the wrong convention gives plausible but meaningless embeddings, with no error")
    return mean, std, channels if channels is not None else "RGB"


def _auto_rule(name: str, rule: Any) -> Optional[Tuple[float, float, Tuple[float, ...], float]]:
    """A registration's ``"auto"`` rule, checked (the policy re-validates it as an AutoRule)."""
    if rule is None:
        return None
    if isinstance(rule, (tuple, list)) and len(rule) == 4:  # already normalised (set_threshold re-makes)
        rule = dict(zip(("yaw_threshold", "fusion_weight", "view_yaws", "threshold_shift"), rule))
    if not isinstance(rule, dict) or not {"yaw_threshold", "fusion_weight"} <= set(rule) or set(rule) - _AUTO_RULE_KEYS:
        raise EmbedderConfigError(f"embedder {name!r}: auto_rule must be an object with yaw_threshold and fusion_weight "
                                  f"(and optionally view_yaws, threshold_shift), got {rule!r}")
    try:
        yaw, w = float(rule["yaw_threshold"]), float(rule["fusion_weight"])
        shift = float(rule.get("threshold_shift", 0.0))
        views = rule.get("view_yaws", (0.0,))
        views = tuple(float(v) for v in (views if isinstance(views, (list, tuple)) else [views]))
    except (TypeError, ValueError):
        raise EmbedderConfigError(f"embedder {name!r}: auto_rule values must be numbers, got {rule!r}") from None
    if not (0 <= yaw <= 90 and 0 <= w <= 1 and -1 < shift < 1 and views and all(0 <= v <= 90 for v in views)):
        raise EmbedderConfigError(f"embedder {name!r}: auto_rule out of range (yaw_threshold 0–90, fusion_weight 0–1, "
                                  f"view_yaws 0–90, |threshold_shift| < 1): {rule!r}")
    return yaw, w, views, shift


def _impostor_table(name: str, table: Any, base: Optional[Path]) -> Tuple[Tuple[float, float], ...]:
    """``((far, threshold), …)`` from a table object or a JSON file (relative to ``base``)."""
    if table is None or table == ():
        return ()
    if isinstance(table, (str, os.PathLike)):
        p = Path(table).expanduser()
        p = p if p.is_absolute() or base is None else base / p
        try:
            table = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise EmbedderConfigError(f"embedder {name!r}: impostor table {p} is not readable JSON ({e})") from None
    rows = table.get("far_per_pair_to_threshold") if isinstance(table, dict) else table
    try:
        out = tuple(sorted(((float(f), float(t)) for f, t in rows), reverse=True))
    except (TypeError, ValueError):
        out = ()
    if len(out) < 2 or not all(0 < f <= 1 and -1 <= t <= 1 for f, t in out):
        raise EmbedderConfigError(f"embedder {name!r}: an impostor table needs two or more [far_per_pair, threshold] "
                                  "rows with far in (0, 1] and threshold in [-1, 1] (benchmarks/impostor_tables.py's format)")
    return out


def _make(name: Any, path: Any, template: Any = "arcface_112", mean: Any = None, std: Any = None,
          channels: Any = None, threshold: Any = None, threshold_source: str = "", config: Optional[str] = None,
          normalization: Any = None, auto_rule: Any = None, impostor_table: Any = None) -> Registration:
    """Validate one registration (reads an impostor table file named by it, not the model). A clash
    with a built-in name is refused by :mod:`pifr.embedders`, the registry that knows them
    (:func:`check_not_builtin`)."""
    if not isinstance(name, str) or not name.strip():
        raise EmbedderConfigError(f"an embedder name must be a non-empty string, got {name!r}")
    check_not_builtin(name)
    mean, std, channels = _normalization(name, normalization, mean, std, channels)
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise EmbedderConfigError(f"embedder {name!r}: path must be a file path, got {path!r}")
    try:
        tpl = get_template(template)
    except UnknownModelError as e:
        raise EmbedderConfigError(f"embedder {name!r}: {e}") from None
    m, s = _triple(name, "mean", mean), _triple(name, "std", std)
    if min(s) <= 0:
        raise EmbedderConfigError(f"embedder {name!r}: std must be positive, got {s}")
    ch = str(channels).upper()
    if ch not in ("RGB", "BGR"):
        raise EmbedderConfigError(f"embedder {name!r}: channels must be 'RGB' or 'BGR', got {channels!r}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not -1.0 <= threshold <= 1.0:
            raise EmbedderConfigError(f"embedder {name!r}: threshold must be a cosine in [-1, 1] or None, got {threshold!r}")
        threshold = float(threshold)
    base = Path(config).parent if config else None
    return Registration(name, str(Path(path).expanduser().absolute()), tpl, m, s, ch, threshold,
                        str(threshold_source or ""), config, _auto_rule(name, auto_rule),
                        _impostor_table(name, impostor_table, base))


def _read_config(path: Path) -> List[Registration]:
    """The registrations in a ``$PIFR_EMBEDDERS`` file (see the module docstring for its format)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmbedderConfigError(f"${CONFIG_ENV}={path}: no such file") from None
    except (OSError, ValueError) as e:
        raise EmbedderConfigError(f"${CONFIG_ENV}={path}: not readable JSON ({e})") from e
    if not isinstance(data, list):
        raise EmbedderConfigError(f"{path}: expected a JSON list of registrations, got {type(data).__name__}")
    out: List[Registration] = []
    for i, e in enumerate(data):
        if not isinstance(e, dict) or "name" not in e or "path" not in e:
            raise EmbedderConfigError(f"{path}: entry {i} must be an object with at least 'name' and 'path'")
        extra = set(e) - _KEYS
        if extra:
            raise EmbedderConfigError(f"{path}: entry {i} ({e['name']!r}) has unknown keys {sorted(extra)}; allowed: {sorted(_KEYS)}")
        p = Path(str(e["path"])).expanduser()
        kw = {k: v for k, v in e.items() if k not in ("name", "path")}
        # Relative paths belong to the config file, not to whatever folder the process runs in.
        out.append(_make(e["name"], p if p.is_absolute() else path.parent / p, config=str(path.absolute()), **kw))
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise EmbedderConfigError(f"{path}: a name is registered twice ({sorted(n for n in set(names) if names.count(n) > 1)})")
    return out


def _ensure_config() -> None:
    """Read ``$PIFR_EMBEDDERS`` once; a broken file raises every time until fixed."""
    global _CONFIG_READ
    with _LOCK:
        if _CONFIG_READ:
            return
        env = os.environ.get(CONFIG_ENV)
        if env:
            for r in _read_config(Path(env).expanduser()):
                _REGISTRY[r.name] = r
            log.info("registered %d embedder(s) from %s", len(_REGISTRY), env)
        _CONFIG_READ = True


def register_embedder(name: str, path: Union[str, os.PathLike], *, normalization: Optional[str] = None,
                      template: Union[str, AlignmentTemplate] = "arcface_112",
                      mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                      channels: Optional[str] = None, threshold: Optional[float] = None,
                      auto_rule: Optional[dict] = None, impostor_table: Any = None) -> Registration:
    """Make the ONNX model at ``path`` usable as embedder ``name`` in this process.

    Args:
        name: registry name (not a built-in one); registering it again replaces it.
        path: the ``.onnx`` file (a relative path is taken from the current folder).
        normalization: the pixel convention the model was trained with, by name
            (:data:`NORMALIZATIONS`: ``"insightface"``, ``"opencv"``, ``"imagenet"``) — or give
            ``mean`` and ``std`` instead. One of the two is required.
        template: the alignment the model was trained on (name or :class:`AlignmentTemplate`);
            its size must equal the model's input size.
        mean, std: per-channel normalisation ``(x − mean) / std`` in 0–255 pixel units, in the
            order of ``channels``.
        channels: ``"RGB"`` or ``"BGR"``: the channel order the model takes (default: the named
            convention's, else RGB).
        threshold: calibrated cosine threshold, if one was measured (``benchmarks/calibrate.py``).
        auto_rule: ``{"yaw_threshold", "fusion_weight", "view_yaws", "threshold_shift"}``: when
            ``frontalize="auto"`` fuses a turned face with its 3D renders, if measured for this model
            (without one, "auto" embeds it raw and says so once).
        impostor_table: a ``benchmarks/impostor_tables.py`` table (object or JSON file) for the
            gallery's default operating point.

    Returns:
        The :class:`Registration`.

    Raises:
        EmbedderConfigError: bad arguments or a built-in name.
        WeightsNotFoundError: ``path`` is not a file.
    """
    _ensure_config()
    reg = _make(name, path, template, mean, std, channels, threshold, normalization=normalization,
                auto_rule=auto_rule, impostor_table=impostor_table)
    if not Path(reg.path).is_file():
        raise WeightsNotFoundError(f"embedder {name!r}: {reg.path}: no such file")
    with _LOCK:
        if name in _REGISTRY:
            log.info("embedder %r re-registered: %s", name, reg.path)
        _REGISTRY[name] = reg
    return reg


def unregister_embedder(name: str) -> None:
    """Forget a registered embedder (a no-op for an unknown name)."""
    _ensure_config()
    with _LOCK:
        _REGISTRY.pop(name, None)


def registered() -> Dict[str, Registration]:
    """Every registered ONNX embedder by name (reads ``$PIFR_EMBEDDERS`` on first use)."""
    _ensure_config()
    with _LOCK:
        return dict(_REGISTRY)


def set_threshold(name: str, threshold: float, source: str) -> Optional[Path]:
    """Store a measured threshold with ``name``'s registration: in this process, and in its
    ``$PIFR_EMBEDDERS`` file when it came from one (rewritten atomically; returns that path).
    ``source`` says how it was measured (command, data, split)."""
    _ensure_config()
    with _LOCK:
        reg = _REGISTRY.get(name)
        if reg is None:
            raise UnknownModelError(f"{name!r} is not a registered ONNX embedder")
        if not -1.0 <= float(threshold) <= 1.0:
            raise EmbedderConfigError(f"embedder {name!r}: threshold must be a cosine in [-1, 1], got {threshold!r}")
        reg = dataclasses.replace(reg, threshold=float(threshold), threshold_source=str(source))
        _REGISTRY[name] = reg
        if reg.config is None:
            return None
        cfg = Path(reg.config)
        data = json.loads(cfg.read_text(encoding="utf-8"))
        for e in data:
            if e.get("name") == name:
                e["threshold"] = round(float(threshold), 4)
                e["threshold_source"] = source
        tmp = cfg.with_name(f".{cfg.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, cfg)
        return cfg


def registration_line(reg: Registration, threshold: float) -> str:
    """The ``register_embedder`` call that records ``threshold`` (for models registered in code)."""
    args = [repr(reg.name), repr(reg.path)]
    if reg.template.name != "arcface_112":
        args.append(f"template={reg.template.name!r}")
    named = [n for n, (m, s, ch) in NORMALIZATIONS.items() if (m, s, ch) == (reg.mean, reg.std, reg.channels)]
    if named:
        args.append(f"normalization={named[0]!r}")
    else:
        args += [f"mean={reg.mean}", f"std={reg.std}"]
        if reg.channels != "RGB":
            args.append(f"channels={reg.channels!r}")
    args.append(f"threshold={threshold:.4f}")
    return f"pifr.register_embedder({', '.join(args)})"


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


def infos() -> List[Any]:
    """:class:`pifr.embedders.EmbedderInfo` rows for the registered models (nothing is loaded, so
    ``dim`` is 0 until the model is; an uncalibrated threshold is NaN)."""
    from .types import EmbedderInfo

    out = []
    for r in registered().values():
        ok = Path(r.path).is_file()
        why = "" if ok else f"{r.path}: no such file"
        if r.threshold is None:
            why = (why + " " if why else "") + f"(no threshold: run benchmarks/calibrate.py --embedder {r.name} or pass threshold=)"
        thr = float("nan") if r.threshold is None else r.threshold
        out.append(EmbedderInfo(r.name, r.path, r.template.name, 0, thr, ok, r.threshold is not None, why))
    return out


def _reset() -> None:
    """Forget every registration and loaded model; ``$PIFR_EMBEDDERS`` is read again on next use (tests)."""
    global _CONFIG_READ
    with _LOCK:
        _REGISTRY.clear()
        _CONFIG_READ = False
        _cached.cache_clear()


__all__ = ["Registration", "OnnxEmbedder", "register_embedder", "unregister_embedder", "registered", "set_threshold",
           "get_registered", "CONFIG_ENV"]
