"""Frontalization: a face at any yaw → the 128×128 frontal face (TP-GAN, Huang et al. ICCV 2017),
and the pose policy that decides when recognition uses it.

Data flow: image → face → TP-GAN aligned crop (mirrored so the face turns right, as in
training) → generator → frontal crop (mirrored back) → embedder. Generator weights come from
the registry (an entry of task ``"frontalizer"`` in ``weights/manifest.json``; none ships yet)
or an explicit ``generator.safetensors`` written by ``pifr-train``.

The policy (:data:`FRONTALIZE_MODES`, :func:`validate_policy`, :func:`embed_face_policy`) is
shared by :func:`pifr.verify`, :func:`pifr.embed`, :class:`pifr.Gallery` and the CLI, so all
of them take the same mode, yaw threshold and fusion weight and reject the same bad values.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._device import resolve_device
from .alignment import TPGAN_128, AlignmentTemplate, align_with_landmarks, mirror, warp_to_template
from .errors import InvalidPolicyError, PifrError, UnknownModelError, WeightsFormatError, WeightsNotFoundError
from .image import ImageLike, input_label, load_image
from .types import Face

log = logging.getLogger("pifr")

# ----------------------------------------------------------------------------- pose policy

#: ``"never"``: raw embeddings; ``"always"``: the frontal view's embedding alone; ``"auto"``:
#: faces with |yaw| above the rule's threshold are embedded raw and from the frontal view, fused.
FRONTALIZE_MODES = ("never", "always", "auto")
#: The mode :func:`pifr.verify`, :func:`pifr.embed`, :class:`pifr.Gallery` and the CLI use by default.
DEFAULT_FRONTALIZE = "auto"

@dataclass(frozen=True)
class AutoRule:
    """When ``"auto"`` uses the rendered view for one embedder, and what that does to scores.

    Attributes:
        yaw_threshold: faces with |yaw| above this (degrees) are fused.
        fusion_weight: w in normalise((1 − w)·raw + w·view).
        threshold_shift: added to a decision threshold when the probe face was fused: fusion
            raises impostor scores a little, and the shift restores the false-accept rate the
            threshold had on raw embeddings (the largest shift measured at FAR 1e-2, 1e-3, 1e-4 and
            at the embedder's 1:1 threshold — see below).
        view_yaws: the |yaw|s (degrees) the view is rendered at, each on the face's own side; the
            view's embedding is the normalised mean of theirs (:func:`pool_views`). ``(0.0,)`` is
            the frontal view alone; a part-turned render (e.g. 45°) keeps more of what the photo
            saw and less mirror fill, and several angles average out each render's own defects.
    """

    yaw_threshold: float
    fusion_weight: float
    threshold_shift: float = 0.0
    view_yaws: Tuple[float, ...] = (0.0,)

    def __post_init__(self) -> None:
        bad = InvalidPolicyError(f"view_yaws must be a tuple of one or more angles in [0, 90], got {self.view_yaws!r}")
        if not isinstance(self.view_yaws, (tuple, list)):  # a bare number or a string ("45" is not (4, 5))
            raise bad
        try:
            yaws = tuple(float(y) for y in self.view_yaws)
        except (TypeError, ValueError):
            raise bad from None
        if not yaws or not all(0.0 <= y <= 90.0 for y in yaws):  # NaN fails too
            raise bad
        object.__setattr__(self, "view_yaws", yaws)


#: Where the measured rules live: a versioned data file with, per embedder, the rule, the split it
#: was chosen on, the command (and commit) that chose it and the figures it gave.
RULES_FILE = Path(__file__).with_name("data") / "auto_rules.json"


def _read_rules(path: Union[str, Path]) -> Dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidPolicyError(f"{path}: the auto rules are not readable JSON ({e})") from e
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("rules"), dict):
        raise InvalidPolicyError(f"{path}: expected {{'schema': 1, 'rules': {{embedder: rule}}}}")
    return data


def load_event_shifts(path: Union[str, Path] = RULES_FILE) -> Dict[str, float]:
    """``{embedder: threshold shift for probes pooled from several frames}`` from ``path``.

    Raises:
        InvalidPolicyError: as :func:`load_rules`, or a shift that is not a number below 1 in size."""
    out = {}
    for name, r in _read_rules(path)["rules"].items():
        v = r.get("event_threshold_shift", 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) < 1:
            raise InvalidPolicyError(f"{path}: rule {name!r}: event_threshold_shift must be a number in (-1, 1), got {v!r}")
        out[name] = float(v)
    return out


def load_rules(path: Union[str, Path] = RULES_FILE) -> Dict[str, AutoRule]:
    """The ``"auto"`` rules in ``path`` (schema 1), validated.

    Raises:
        InvalidPolicyError: the file is unreadable, of another schema, or a rule is malformed or
            out of range (yaw threshold 0–90°, weight 0–1, |shift| < 1, view yaws 0–90°).
    """
    data = _read_rules(path)
    out: Dict[str, AutoRule] = {}
    for name, r in data["rules"].items():
        try:
            rule = AutoRule(float(r["yaw_threshold"]), float(r["fusion_weight"]), float(r["threshold_shift"]),
                            view_yaws=tuple(r["view_yaws"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidPolicyError(f"{path}: rule {name!r} is malformed ({type(e).__name__}: {e})") from None
        if not (0 <= rule.yaw_threshold <= 90 and 0 <= rule.fusion_weight <= 1 and abs(rule.threshold_shift) < 1):
            raise InvalidPolicyError(f"{path}: rule {name!r} is out of range: {rule}")
        out[name] = rule
    return out


#: The ``"auto"`` rule per embedder for the 3D render (no learned refiner), read from
#: :data:`RULES_FILE` (docs/rotation.md has the tables). An embedder not listed there is never
#: frontalized under "auto" until its rule is measured ("auto" then means raw, with a warning once);
#: a registered ONNX model's registration may carry one (:func:`rule_for`).
AUTO_RULES: Dict[str, AutoRule] = load_rules()
_EVENT_SHIFTS: Dict[str, float] = load_event_shifts()
#: The rule for a TP-GAN generator the caller supplies (no measured rule can know it): few faces,
#: a small weight, so a weak generator moves scores little.
AUTO_YAW_THRESHOLD = 45.0
AUTO_FUSION_WEIGHT = 0.25


def validate_policy(frontalize: Any, yaw_threshold: Any = None,
                    fusion_weight: Any = None) -> "tuple[str, Optional[float], Optional[float]]":
    """Check a frontalization policy; returns ``(mode, yaw_threshold, fusion_weight)``.

    ``frontalize`` must be one of :data:`FRONTALIZE_MODES` exactly (``"Auto"`` is refused: a
    near-miss would otherwise fall through to raw embeddings unnoticed); ``yaw_threshold`` is in
    degrees, 0–90; ``fusion_weight`` in [0, 1]; either may be ``None`` — the measured rule of the
    embedder (:data:`AUTO_RULES`), resolved by :func:`auto_rule`.

    Raises:
        InvalidPolicyError: (also a ``ValueError``) any of the three is invalid.
    """
    if not isinstance(frontalize, str) or frontalize not in FRONTALIZE_MODES:
        raise InvalidPolicyError(f"frontalize must be one of {FRONTALIZE_MODES}, got {frontalize!r}")
    out: List[Optional[float]] = []
    for name, value, lo, hi in (("yaw_threshold", yaw_threshold, 0.0, 90.0), ("fusion_weight", fusion_weight, 0.0, 1.0)):
        if value is None:
            out.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidPolicyError(f"{name} must be a number, got {value!r}")
        if not lo <= float(value) <= hi:  # NaN fails too
            raise InvalidPolicyError(f"{name} must lie in [{lo:g}, {hi:g}], got {value!r}")
        out.append(float(value))
    return frontalize, out[0], out[1]


def rule_for(embedder: str) -> Optional[AutoRule]:
    """The measured ``"auto"`` rule of ``embedder``: a built-in's (:data:`AUTO_RULES`), or the one
    a registered ONNX model's registration carries; ``None`` when none was measured."""
    rule = AUTO_RULES.get(embedder)
    if rule is not None:
        return rule
    from .onnx_embedder import registered

    reg = registered().get(embedder)
    if reg is None or reg.auto_rule is None:
        return None
    yaw, w, views, shift = reg.auto_rule
    return AutoRule(yaw, w, shift, view_yaws=views)


@functools.lru_cache(maxsize=None)
def _warn_no_rule(embedder: str) -> None:
    log.warning("frontalize='auto' has no measured rule for embedder %r, so its turned faces are embedded raw "
                "(no 3D views); give its registration an auto_rule, or pass yaw_threshold= and fusion_weight=",
                embedder)


def auto_rule(embedder: str, frontalizer: Any = None, yaw_threshold: Optional[float] = None,
              fusion_weight: Optional[float] = None) -> "Optional[tuple[float, float]]":
    """``(yaw_threshold, fusion_weight)`` that ``"auto"`` applies for ``embedder`` with
    ``frontalizer`` (a :class:`Render3D`, a :class:`Frontalizer` or ``None`` for the default);
    explicit values win. ``None``: no rule is known (the 3D render with an embedder it was never
    measured for, and no explicit values), so "auto" embeds raw."""
    if _is_generator(frontalizer):
        base: "Optional[tuple[float, float]]" = (AUTO_YAW_THRESHOLD, AUTO_FUSION_WEIGHT)
    else:
        rule = rule_for(embedder)
        base = None if rule is None else (rule.yaw_threshold, rule.fusion_weight)
    if base is None and (yaw_threshold is None or fusion_weight is None):
        _warn_no_rule(embedder)
        return None
    base = base or (0.0, 0.0)
    return (base[0] if yaw_threshold is None else yaw_threshold, base[1] if fusion_weight is None else fusion_weight)


def _measured_rule(embedder: str, frontalizer: Any = None) -> AutoRule:
    """``embedder``'s measured :class:`AutoRule`; for a caller's TP-GAN generator, or an embedder
    without one, a rule with no shift and the frontal view (nothing about them was measured)."""
    rule = None if _is_generator(frontalizer) else rule_for(embedder)
    return AutoRule(AUTO_YAW_THRESHOLD, AUTO_FUSION_WEIGHT) if rule is None else rule


def _is_generator(frontalizer: Any) -> bool:
    """A caller's TP-GAN generator: a loaded :class:`Frontalizer`, or the class itself, which
    :func:`view_fingerprint` passes to ask for its rule without loading one."""
    return isinstance(frontalizer, Frontalizer) or frontalizer is Frontalizer


def view_yaws_of(embedder: str, frontalizer: Any = None) -> Tuple[float, ...]:
    """The |yaw|s ``"auto"`` renders a fused face's view at for ``embedder`` (:attr:`AutoRule.view_yaws`);
    ``(0.0,)`` (the frontal view) for a caller's TP-GAN generator, which only frontalizes."""
    return _measured_rule(embedder, frontalizer).view_yaws


def event_threshold_shift(embedder: str) -> float:
    """What to add to a decision threshold when a probe pools several frames of one person
    (:func:`pifr.pooling.pool_faces`), as measured for ``embedder`` (``event_threshold_shift`` in
    :data:`RULES_FILE`); 0 where none was measured."""
    return _EVENT_SHIFTS.get(embedder, 0.0)


def threshold_shift(embedder: str, frontalizer: Any = None) -> float:
    """What to add to a decision threshold for a face fused under ``"auto"`` (:class:`AutoRule`);
    0 for a caller's generator, whose effect on scores no one has measured."""
    return _measured_rule(embedder, frontalizer).threshold_shift


#: The weights every 3D render is made from: the fit regressor and the 3D face.
VIEW_FIT_WEIGHTS = ("tddfa_mb05", "face3d_bfm")


def _file_sha256(path: Union[str, Path]) -> str:
    from .weights import _sha_cached

    p = Path(path)
    # A regular file only, as frontal_view needs: a folder is no weights and a FIFO would block the read.
    if not p.is_file():  # also False for a name with a NUL
        raise WeightsNotFoundError(f"{p}: no such weights file")
    try:
        st = p.stat()
        return _sha_cached(str(p.resolve()), st.st_size, st.st_mtime)  # hashed once per version of the file
    except OSError as e:  # gone or unreadable since: callers catch PifrError, not OSError
        raise WeightsNotFoundError(f"{p}: cannot read the weights file ({e.strerror or e})") from e


def _view_source(frontalizer: Optional[Union[str, Path]]) -> "Tuple[str, Optional[Union[str, Path]]]":
    """What :func:`frontal_view` makes of ``frontalizer``, without building it: ``("3d", None)``,
    ``("refined", file or None for the registered refiner)`` or ``("tpgan", file or None for the
    registered generator)``. The one place the names are read (:func:`view_fingerprint` too)."""
    if frontalizer is None:
        from .weights import list_weights

        return ("tpgan", None) if list_weights("frontalizer") else ("3d", None)
    if str(frontalizer) == "3d":
        return "3d", None
    if str(frontalizer) == "refined":
        return "refined", None
    if isinstance(frontalizer, str) and frontalizer.startswith("refined:"):
        return "refined", frontalizer[len("refined:"):]
    return "tpgan", frontalizer


def _view_weights(frontalizer: Optional[Union[str, Path]]) -> Tuple[str, Optional[str]]:
    """``(kind, sha256 of its network's weights or None)`` of the view :func:`frontal_view` builds
    from ``frontalizer``, found without loading a network."""
    kind, path = _view_source(frontalizer)
    if kind == "3d":
        return Render3D.name, None
    name = "tpgan" if kind == "tpgan" else f"{Render3D.name}+refiner"
    if path is not None:
        return name, _file_sha256(path)
    if kind == "tpgan":
        from .weights import list_weights

        spec = list_weights("frontalizer")[0]
    else:
        from .refinement import _registered

        specs = _registered()
        if not specs:
            raise WeightsNotFoundError("no refiner weights are registered in weights/manifest.json")
        spec = specs[0]
    return name, spec.sha256 or spec.name


def auto_fuses_above(embedder: str, frontalizer: Optional[Union[str, Path]] = None,
                     yaw_threshold: Optional[float] = None, fusion_weight: Optional[float] = None) -> Optional[float]:
    """The |yaw| (degrees) above which ``"auto"`` fuses a face for ``embedder`` with ``frontalizer``
    (named as for :func:`frontal_view`; explicit rule values win, as in :func:`auto_rule`);
    ``None`` when it fuses nothing. Loads no network."""
    rule = auto_rule(embedder, Frontalizer if _view_source(frontalizer)[0] == "tpgan" else None, yaw_threshold, fusion_weight)
    return None if rule is None else rule[0]


def view_fingerprint(embedder: str, frontalizer: Optional[Union[str, Path]] = None, mode: str = "auto",
                     yaw_threshold: Optional[float] = None, fusion_weight: Optional[float] = None) -> Optional[str]:
    """A 16-hex-digit hash of how ``mode`` fuses a face for ``embedder`` with ``frontalizer``
    (named as for :func:`frontal_view`): the rule's yaw threshold, fusion weight and view yaw
    (``"auto"``; ``"always"`` embeds the frontal view alone), the view's kind, the sha256 of the 3D
    fit weights (:data:`VIEW_FIT_WEIGHTS`) for a render and of the refiner or generator. Two
    templates of one photo with the same fingerprint are the same; a saved gallery keeps it per
    fused template (:attr:`pifr.Gallery.stale_templates`).

    Loads no network: registered weights' sha256 come from the manifest, a file named here is
    hashed (once per version of the file). Args: ``embedder`` (str), ``mode`` (str, one of
    :data:`FRONTALIZE_MODES`), ``yaw_threshold`` / ``fusion_weight`` (float or ``None``: explicit
    rule values, as in :func:`auto_rule`). Returns ``None`` when ``mode`` fuses nothing
    (``"never"``, or ``"auto"`` for an embedder without a rule).

    Raises:
        WeightsNotFoundError: ``"refined"`` with no refiner registered, or a named file that is missing, unreadable or not a regular file.
        UnknownModelError: the fit weights are not in the manifest.
    """
    from .weights import get_spec

    if mode not in ("auto", "always"):
        return None
    kind, sha = _view_weights(frontalizer)
    generator = Frontalizer if kind == "tpgan" else None
    key: Dict[str, Any] = {"mode": mode, "view": kind, "weights_sha256": sha}
    if generator is None:  # a TP-GAN generator reads the photo itself; every render comes from the 3D fit
        key["fit_sha256"] = [get_spec(n).sha256 for n in VIEW_FIT_WEIGHTS]
    if mode == "auto":
        rule = auto_rule(embedder, generator, yaw_threshold, fusion_weight)
        if rule is None:
            return None
        # The yaw threshold too: it decides which faces a probe fuses, so a changed one leaves
        # fused templates of faces that a probe of the same photo would now embed otherwise.
        yaws = view_yaws_of(embedder, generator)
        # One view keeps the key it had before rules could pool several: its templates stay current.
        key.update(yaw_threshold=rule[0], fusion_weight=rule[1], view_yaw=yaws[0] if len(yaws) == 1 else list(yaws))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def pool_views(views: np.ndarray) -> np.ndarray:
    """The embedding of several rendered views of one face: normalise(mean) of their unit
    ``(k, dim)`` embeddings, as ``(dim,)`` float32 (one view: itself)."""
    if len(views) == 1:
        return views[0]
    v = np.mean(views, axis=0)
    return (v / np.linalg.norm(v)).astype(np.float32)


def fuse_embeddings(raw: np.ndarray, frontalized: np.ndarray, weight: float) -> np.ndarray:
    """normalise((1 − weight)·raw + weight·frontalized) for unit ``(dim,)`` vectors; weight 1 is
    the frontalized embedding alone."""
    if weight >= 1.0:
        return frontalized
    v = (1.0 - weight) * raw + weight * frontalized
    return (v / np.linalg.norm(v)).astype(np.float32)


def embed_face_policy(arr: np.ndarray, face: Face, emb: Any, frontalize: str, frontalizer: Any,
                      yaw_threshold: Optional[float] = None,
                      fusion_weight: Optional[float] = None) -> "tuple[np.ndarray, bool]":
    """Embedding of ``face`` in ``arr`` (``(H, W, 3)`` uint8 RGB) by ``emb`` (an
    :class:`pifr.embedders.Embedder`) under the policy; returns ``(unit (dim,) vector, frontalized?)``.

    ``"always"`` embeds the view alone; ``"auto"`` takes the view of faces with |yaw| > the rule's
    threshold and fuses: normalise((1 − w)·raw + w·view) (see :func:`auto_rule`). Under
    ``"auto"`` the view is the rule's (:attr:`AutoRule.view_yaws`: renders at those |yaw|s on the
    face's own side, pooled by :func:`pool_views`; the frontal view for a TP-GAN generator);
    ``"always"`` takes the frontal view. For a probe against fixed gallery vectors, that ranks
    exactly like the score fusion (1 − w)·cos(raw, g) + w·cos(view, g). ``frontalizer`` (from
    :func:`frontal_view`; anything with ``frontal_crop(arr, face, template, yaw=0.0)``, and
    ``view_crops`` for several views at once) may be ``None`` for ``"never"``.

    Raises:
        InvalidPolicyError: the policy is invalid (see :func:`validate_policy`).
        FitError: the 3D fit refused the face (only when the frontal view is needed).
    """
    frontalize, yaw_threshold, w = validate_policy(frontalize, yaw_threshold, fusion_weight)
    use, weight, view_yaws = False, 1.0, (0.0,)
    if frontalize == "always":
        use = True
    elif frontalize == "auto" and face.yaw is not None:
        rule = auto_rule(emb.name, frontalizer, yaw_threshold, w)
        if rule is not None:
            use, weight = abs(face.yaw) > rule[0], rule[1]
            view_yaws = view_yaws_of(emb.name, frontalizer)
    if not use:
        return emb.embed_crops(emb.align(arr, face)[None])[0], False
    if view_yaws == (0.0,):  # a TP-GAN Frontalizer only frontalizes; view_yaws_of gives it (0.0,)
        views = frontalizer.frontal_crop(arr, face, emb.template)[None]
    else:
        yaws = [math.copysign(y, face.yaw) for y in view_yaws]
        if hasattr(frontalizer, "view_crops"):  # one fit for all views
            views = frontalizer.view_crops(arr, face, emb.template, yaws)
        else:
            views = np.stack([frontalizer.frontal_crop(arr, face, emb.template, yaw=y) for y in yaws])
    if weight >= 1.0:
        return pool_views(emb.embed_crops(views)), True
    e = emb.embed_crops(np.concatenate([emb.align(arr, face)[None], views]))  # one batch: cheaper than two calls
    return fuse_embeddings(e[0], pool_views(e[1:]), weight), True


class Render3D:
    """The frontal view as the 3D render of :mod:`pifr.rotation` (no learned refiner): fit, render
    at 0° yaw and pitch straight into the embedder's template, the hidden side filled from the
    mirrored half. Build with :func:`frontal_view`."""

    name = "3d-render"

    def __init__(self, device: Any = None) -> None:
        self.device = device

    def frontal_crop(self, arr: np.ndarray, face: Face, template: AlignmentTemplate, yaw: float = 0.0) -> np.ndarray:
        """``(S, S, 3)`` uint8 render of ``face`` in ``arr`` at ``yaw`` degrees (0: frontal), placed in ``template``."""
        return self.view_crops(arr, face, template, [yaw])[0]

    def view_crops(self, arr: np.ndarray, face: Face, template: AlignmentTemplate, yaws: Sequence[float]) -> np.ndarray:
        """``(len(yaws), S, S, 3)`` uint8 renders of ``face`` in ``arr`` at each yaw (degrees, signed),
        placed in ``template``; one 3D fit for all."""
        return np.stack([r.image for r in _fit_and_render_views(arr, face, self.device, template, yaws)[1]])


class RefinedRender3D:
    """The frontal view as the 3D render turned photo-like by a learned refiner
    (:mod:`pifr.refinement`): fit, render at 0° yaw and pitch into the TP-GAN crop (the only crop
    the refiner was trained on), refine, then move onto the embedder's template. Build with
    :func:`frontal_view` (``"refined"``); the refiner loads here, once per weights and device.

    Raises (at construction):
        WeightsNotFoundError, WeightsFormatError: no usable refiner.
    """

    def __init__(self, weights: Optional[Union[str, Path]] = None, device: Any = None) -> None:
        from .refinement import get_refiner

        self.device = device
        self.refiner = get_refiner(weights, device)
        self.name = f"{Render3D.name}+{self.refiner.name}"

    def frontal_crop(self, arr: np.ndarray, face: Face, template: AlignmentTemplate, yaw: float = 0.0) -> np.ndarray:
        """``(S, S, 3)`` uint8 refined render of ``face`` in ``arr`` at ``yaw`` degrees (0: frontal), placed in ``template``."""
        return self.view_crops(arr, face, template, [yaw])[0]

    def view_crops(self, arr: np.ndarray, face: Face, template: AlignmentTemplate, yaws: Sequence[float]) -> np.ndarray:
        """``(len(yaws), S, S, 3)`` uint8 refined renders at each yaw (degrees, signed), in ``template``;
        one 3D fit and one refiner batch for all."""
        rs = _fit_and_render_views(arr, face, self.device, TPGAN_128, yaws)[1]
        return np.stack([to_template(im, template) for im in self.refiner.refine_rotated(rs)])


def frontal_view(frontalizer: Optional[Union[str, Path]] = None, device: Any = None) -> Any:
    """What the policy takes the frontal view from: ``frontalizer`` = ``None`` or ``"3d"`` — the 3D
    render (:class:`Render3D`; a TP-GAN generator registered in the weights manifest is used
    instead once one ships); ``"refined"`` — the 3D render through the registered refiner
    (:class:`RefinedRender3D`), ``"refined:<refiner.safetensors>"`` through that file; else a
    ``generator.safetensors`` path (:class:`Frontalizer`).

    ``None`` never picks the refiner by itself: whether the policy should use it is left to
    measurement (the rules in :data:`AUTO_RULES` were measured on the plain 3D render)."""
    kind, path = _view_source(frontalizer)
    if kind == "3d":
        return Render3D(device)
    if kind == "refined":
        return RefinedRender3D(path, device)
    return get_frontalizer(path, device)


# ----------------------------------------------------------------------------- the generator


@dataclass(frozen=True)
class Frontalized:
    """Result of :func:`frontalize`.

    Attributes:
        image: ``(128, 128, 3)`` uint8 RGB frontal face on the :data:`pifr.TPGAN_128` template.
        face: the input :class:`Face` (source-image pixels, with yaw).
        yaw: the input face's estimated yaw in degrees.
        generator: which weights or method produced it: ``"3d-render"`` (``method="3d"``),
            ``"3d-render+refiner:<file>"`` (``"refined"``), the generator's name (``"tpgan"``),
            ``"hassner2015-3d"``.
        mask: ``(128, 128)`` bool pixels covered by the 3D render (``"3d"``, ``"refined"``; ``None``
            otherwise).
    """

    image: np.ndarray
    face: Face
    yaw: float
    generator: str
    mask: Optional[np.ndarray] = None


class Frontalizer:
    """A loaded TP-GAN generator. Build with :func:`get_frontalizer`."""

    def __init__(self, weights: Optional[Union[str, Path]] = None, device: Any = None) -> None:
        import torch
        from safetensors import safe_open

        from .models.tpgan import Generator

        if weights is None:
            from .weights import list_weights, resolve

            registered = list_weights("frontalizer")
            if not registered:
                raise WeightsNotFoundError("no TP-GAN frontalizer weights ship with pifr yet; pass "
                                           "weights=<generator.safetensors> written by pifr-train")
            # A missing or corrupt registered file raises its own WeightsError (checksum included).
            spec, path = resolve(registered[0])
            name = spec.name
        else:
            path, name = Path(weights), Path(weights).name
            if not path.is_file():
                raise WeightsNotFoundError(f"{path}: no such generator file")
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
            config = json.loads(meta.get("config", "{}"))
            net = Generator.from_config(config)
        except Exception as e:  # noqa: BLE001 - a corrupt file is a format error for the caller
            raise WeightsFormatError(f"{path}: not a TP-GAN generator safetensors file ({e})") from e
        self.device = resolve_device(device)
        self.net = net
        try:
            missing, unexpected = self.net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise WeightsFormatError(f"{path}: does not fit a {net.config} generator ({e})") from e
        if missing or unexpected:
            raise WeightsFormatError(f"{path}: does not fit a {net.config} generator "
                                     f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
        self.net.eval().to(self.device)
        self.name, self.path = name, Path(path)
        self.metadata: Dict[str, str] = meta  # the file's own record: config, step, validation score
        self._torch = torch

    def frontalize_crops(self, crops: np.ndarray, landmarks: np.ndarray, yaws: Sequence[float]) -> np.ndarray:
        """``crops`` ``(N, 128, 128, 3)`` uint8 TP-GAN crops, ``landmarks`` ``(N, 5, 2)`` crop pixels,
        ``yaws`` degrees → ``(N, 128, 128, 3)`` uint8 frontal faces."""
        torch = self._torch
        xs, lms, flips = [], [], []
        for c, l, y in zip(crops, landmarks, yaws):
            flip = y < 0
            if flip:
                c, l = mirror(c, l)
            xs.append(c)
            lms.append(l)
            flips.append(flip)
        x = torch.from_numpy(np.stack(xs)).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        lm = torch.from_numpy(np.stack(lms).astype(np.float32)).to(self.device)
        with torch.inference_mode():
            noise = torch.zeros(len(xs), self.net.noise_dim, device=self.device)  # deterministic output
            out = self.net(x, lm, noise)["img128"]
        imgs = ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return np.stack([im[:, ::-1] if f else im for im, f in zip(imgs, flips)])


    def frontal_crop(self, arr: np.ndarray, face: Face, template: AlignmentTemplate) -> np.ndarray:
        """``(S, S, 3)`` uint8 generator output for ``face`` in ``arr``, re-cropped onto ``template``."""
        crop, lm = align_with_landmarks(arr, face, TPGAN_128)
        return to_template(self.frontalize_crops(crop[None], lm[None], [face.yaw or 0.0])[0], template)


@functools.lru_cache(maxsize=4)
def _cached(weights: Optional[str], device: str) -> Frontalizer:
    return Frontalizer(weights, device)


def get_frontalizer(weights: Optional[Union[str, Path]] = None, device: Any = None) -> Frontalizer:
    return _cached(None if weights is None else str(weights), str(resolve_device(device)))


def to_template(frontal: np.ndarray, template: AlignmentTemplate) -> np.ndarray:
    """Re-crop a frontal TP-GAN output onto another frontal template (e.g. an embedder's)."""
    return warp_to_template(frontal, TPGAN_128, template)


def _tpgan_input(img: ImageLike, face: Optional[Face], detector: Optional[str], device: Any
                 ) -> "tuple[Face, np.ndarray, np.ndarray]":
    """image → (face with yaw, ``(128, 128, 3)`` TP-GAN crop, ``(5, 2)`` crop landmarks)."""
    from .detection import detect_one

    arr = load_image(img)
    face = face or detect_one(arr, detector=detector, device=device, purpose=" to frontalize")
    if face.yaw is None:
        from .pose import estimate_yaw_faces

        face = face.with_yaw(estimate_yaw_faces(arr, [face], device=device)[0])
    crop, lm = align_with_landmarks(arr, face, TPGAN_128)
    return face, crop, lm


#: What :func:`frontalize` can use: ``"3d"`` — the 3D render (no learned refiner; works out of the
#: box); ``"refined"`` — that render through a learned refiner (:mod:`pifr.refinement`; ``weights=``
#: or the registered one); ``"tpgan"`` — a TP-GAN generator (``weights=``; none ships yet); ``"hassner"`` — classical
#: 3D frontalization (Hassner et al., CVPR 2015), a baseline that needs the user-supplied
#: ``model3Ddlib.mat`` (``weights=``) and lowers recognition (docs/frontalization.md).
FRONTALIZE_METHODS = ("3d", "refined", "tpgan", "hassner")


def _fit_and_render(arr: np.ndarray, face: Face, device: Any, template: AlignmentTemplate = TPGAN_128,
                      name: str = "the image", yaw: float = 0.0) -> "tuple[Any, Any]":
    """``face`` in ``arr`` (``(H, W, 3)`` uint8 RGB) fitted in 3D and rendered at ``yaw`` degrees
    (0: frontal) and 0° pitch into ``template``: ``(its pifr.face3d.Fit3D, the
    pifr.rotation.Rotated render)``; ``name`` labels a refused fit.

    Raises:
        FitError: the 3D fit refused the face.
    """
    fit, views = _fit_and_render_views(arr, face, device, template, [yaw], name)
    return fit, views[0]


def _fit_and_render_views(arr: np.ndarray, face: Face, device: Any, template: AlignmentTemplate,
                          yaws: Sequence[float], name: str = "the image") -> "tuple[Any, List[Any]]":
    """:func:`_fit_and_render` at several ``yaws`` (degrees, signed) from one fit: ``(the fit,
    its pifr.rotation.Rotated renders in order)``.

    Raises:
        FitError: the 3D fit refused the face.
    """
    from .face3d import fit_faces
    from .rotation import render_poses

    fit = fit_faces(arr, [face], device=device, names=[name])[0]
    return fit, render_poses(fit, arr, yaws, template=template)


def _render_front(img: ImageLike, face: Optional[Face], detector: Optional[str], device: Any, name: str) -> "tuple[Face, Any]":
    """image → (face with yaw, its :class:`pifr.rotation.Rotated` frontal render in the TP-GAN crop)."""
    from .detection import detect_one

    arr = load_image(img)
    face = face or detect_one(arr, detector=detector, device=device, purpose=" to frontalize")
    fit, r = _fit_and_render(arr, face, device, name=name)
    if face.yaw is None:
        face = face.with_yaw(fit.yaw)
    return face, r


def _render_3d(img: ImageLike, face: Optional[Face], detector: Optional[str], device: Any, name: str) -> Frontalized:
    face, r = _render_front(img, face, detector, device, name)
    return Frontalized(image=r.image, face=face, yaw=float(face.yaw), generator=Render3D.name, mask=r.mask)


def _frontalize_refined(img: Union[ImageLike, List[ImageLike]], face: Optional[Face], weights: Optional[Union[str, Path]],
                        detector: Optional[str], device: Any, batch_size: int
                        ) -> Union[Frontalized, List[Union[Frontalized, Exception]]]:
    from .refinement import get_refiner

    refiner = get_refiner(weights, device)  # before any image: a missing refiner is not one bad image
    generator = f"{Render3D.name}+{refiner.name}"
    if not isinstance(img, list):
        f, r = _render_front(img, face, detector, device, "the image")
        return Frontalized(image=refiner.refine_rotated([r])[0], face=f, yaw=float(f.yaw), generator=generator, mask=r.mask)
    from .rotation import render_then_refine

    def refine(ready: List["tuple[Face, Any]"]) -> List[Frontalized]:
        images = refiner.refine_rotated([r for _, r in ready], max(1, batch_size))
        return [Frontalized(image=image, face=f, yaw=float(f.yaw), generator=generator, mask=r.mask)
                for (f, r), image in zip(ready, images)]

    return render_then_refine(img, lambda i, one: _render_front(one, None, detector, device, input_label(one, i)),
                              refine)  # type: ignore[return-value]


def frontalize(img: Union[ImageLike, List[ImageLike]], *, method: Optional[str] = None, face: Optional[Face] = None,
               weights: Optional[Union[str, Path]] = None, detector: Optional[str] = None,
               device: Any = None, batch_size: int = 32) -> Union[Frontalized, List[Union[Frontalized, Exception]]]:
    """Frontal view of the largest face in ``img`` (or of ``face``), in the 128×128 TP-GAN crop.

    Args:
        method: ``"3d"`` (the face fitted in 3D and rendered from the front, the hidden side
            filled from the visible half; :mod:`pifr.rotation`), ``"refined"`` (that render
            through a learned refiner, :mod:`pifr.refinement`: ``weights`` = a refiner file or the
            registered one), ``"tpgan"`` (a learned generator: ``weights`` or the installed one) or
            ``"hassner"`` (Hassner et al. 2015; ``weights`` = path of ``model3Ddlib.mat``). See
            :data:`FRONTALIZE_METHODS`. Default: ``"tpgan"`` when ``weights`` is given or a
            generator is installed, else ``"refined"`` when a refiner is installed, else ``"3d"``.
        batch_size: for a list, how many faces go through the generator (or refiner) in one forward pass.

    A list input returns a list with one :class:`Frontalized` or one exception per image (one
    bad image never stops the batch); faces are detected one image at a time and frontalized
    ``batch_size`` at a time.

    Raises:
        NoFaceError: no face found (single-image call).
        FitError: the 3D fit refused the face (``"3d"``; too small or turned too far up/down).
        WeightsNotFoundError: ``"tpgan"`` / ``"refined"`` with no generator / refiner installed
            and none given (also for a list: that is not one bad image).
        WeightsFormatError: ``weights`` is not a file of the method's kind.
    """
    from .rotation import render_then_refine

    if method is None:
        from .refinement import refiner_available
        from .weights import list_weights

        method = ("tpgan" if weights is not None or list_weights("frontalizer") else
                  "refined" if refiner_available() else "3d")
        log.debug("frontalize: method None -> %s", method)
    if method not in FRONTALIZE_METHODS:
        raise UnknownModelError(f"method must be one of {FRONTALIZE_METHODS}, got {method!r}")
    if method == "3d":
        if weights is not None:
            raise UnknownModelError('method="3d" takes no weights (its 3D face ships with pifr); a generator file needs method="tpgan"')
        if not isinstance(img, list):
            return _render_3d(img, face, detector, device, "the image")
        return render_then_refine(img, lambda i, one: _render_3d(one, None, detector, device, input_label(one, i)), list)
    if method == "refined":
        return _frontalize_refined(img, face, weights, detector, device, batch_size)
    if method == "hassner":
        from .geometry import frontalize_3d

        def one_3d(im: ImageLike, f: Optional[Face]) -> Frontalized:
            r = frontalize_3d(im, face=f, model_path=None if weights is None else str(weights), detector=detector)
            return Frontalized(image=r.image, face=r.face if r.face.yaw is not None else r.face.with_yaw(r.yaw),
                               yaw=float(r.face.yaw if r.face.yaw is not None else r.yaw), generator="hassner2015-3d")

        if not isinstance(img, list):
            return one_3d(img, face)
        return render_then_refine(img, lambda i, one: one_3d(one, None), list)
    fr = get_frontalizer(weights, device)
    if not isinstance(img, list):
        face, crop, lm = _tpgan_input(img, face, detector, device)
        image = fr.frontalize_crops(crop[None], lm[None], [face.yaw])[0]
        return Frontalized(image=image, face=face, yaw=float(face.yaw), generator=fr.name)

    def generate(ready: List["tuple[Face, np.ndarray, np.ndarray]"]) -> List[Frontalized]:
        out, step = [], max(1, batch_size)
        for k in range(0, len(ready), step):
            chunk = ready[k:k + step]
            images = fr.frontalize_crops(np.stack([c for _, c, _ in chunk]), np.stack([l for _, _, l in chunk]),
                                         [f.yaw for f, _, _ in chunk])
            out += [Frontalized(image=im, face=f, yaw=float(f.yaw), generator=fr.name) for (f, _, _), im in zip(chunk, images)]
        return out

    return render_then_refine(img, lambda i, one: _tpgan_input(one, None, detector, device), generate)
