"""Bring your own recogniser: the registrations of ArcFace-class ONNX embedders (run by
:mod:`pifr.onnx_embedder`) that pifr's pipeline uses by name.

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
(when a turned face is fused with its 3D renders; see :class:`pifr.policy.AutoRule`) and an
impostor table (``benchmarks/impostor_tables.py``'s format: ``far_per_pair_to_threshold``), which
gives a :class:`pifr.Gallery` its default operating point.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union


from .alignment import AlignmentTemplate, get_template
from .errors import (
    EmbedderConfigError,
    UnknownModelError,
    WeightsNotFoundError,
)

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
    """Forget every registration; ``$PIFR_EMBEDDERS`` is read again on next use (tests)."""
    global _CONFIG_READ
    with _LOCK:
        _REGISTRY.clear()
        _CONFIG_READ = False


__all__ = ["Registration", "register_embedder", "unregister_embedder", "registered", "set_threshold",
           "registration_line", "CONFIG_ENV", "NORMALIZATIONS"]
