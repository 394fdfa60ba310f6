"""The pose policy: when recognition embeds a face's rendered views besides the face itself, as data.

A :class:`Policy` is frozen and says, for one embedder and one view source, how every face is
embedded: ``"never"`` (the photo's face alone), ``"always"`` (its frontal view alone) or
``"auto"`` (a face turned past the rule's yaw threshold is fused with its views). The ``"auto"``
rules are not code: they are read from a versioned data file in the package
(:data:`RULES_FILE`, schema 2), written with the split, command, commit and figures that chose
each rule, and validated when read. Research measures a rule and proposes a new file
(:meth:`RuleSet.with_rule`, :meth:`RuleSet.save`); nothing assigns to this module.

Which faces a policy fuses, and from which views, is summed up by :meth:`Policy.treatment`: a
fingerprint that a gallery keeps per template, so that a template made otherwise than a probe
would be made now is found by comparing two fingerprints (:mod:`pifr.gallery.staleness`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import InvalidPolicyError

log = logging.getLogger("pifr")

#: ``"never"``: raw embeddings; ``"always"``: the frontal view's embedding alone; ``"auto"``:
#: faces with |yaw| above the rule's threshold are embedded raw and from their views, fused.
FRONTALIZE_MODES = ("never", "always", "auto")
#: The mode :func:`pifr.verify`, :func:`pifr.embed`, :class:`pifr.Gallery` and the CLI use by default.
DEFAULT_FRONTALIZE = "auto"
#: Where views come from (:mod:`pifr.views`): the 3D render, that render through a learned
#: refiner, or a caller's TP-GAN generator.
VIEW_SOURCES = ("3d", "refined", "tpgan")
#: The measured rules: a versioned data file in the package (schema 2).
RULES_FILE = Path(__file__).with_name("data") / "auto_rules.json"
RULES_SCHEMA = 2
#: The fingerprint of a face embedded from the photo alone (:meth:`Policy.treatment`).
RAW_TREATMENT = hashlib.sha256(b'{"view": null}').hexdigest()[:16]


@dataclass(frozen=True)
class AutoRule:
    """When ``"auto"`` uses a face's views for one embedder and view source, and what that does to scores.

    Attributes:
        yaw_threshold: faces with |yaw| above this (degrees) are fused.
        fusion_weight: w in normalise((1 − w)·raw + w·view).
        threshold_shift: added to a decision threshold when the probe face was fused: fusion
            raises impostor scores a little, and the shift restores the false-accept rate the
            threshold had on raw embeddings.
        view_yaws: the |yaw|s (degrees) the view is rendered at, each on the face's own side; the
            view's embedding is the normalised mean of theirs. ``(0.0,)`` is the frontal view alone.
        event_threshold_shift: added to a decision threshold when a probe pools several frames of
            one person (:func:`pifr.pooling.pool_faces`).
    """

    yaw_threshold: float
    fusion_weight: float
    threshold_shift: float = 0.0
    view_yaws: Tuple[float, ...] = (0.0,)
    event_threshold_shift: float = 0.0

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
        for name, lo, hi in (("yaw_threshold", 0.0, 90.0), ("fusion_weight", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
                raise InvalidPolicyError(f"{name} must be a number in [{lo:g}, {hi:g}], got {v!r}")
        for name in ("threshold_shift", "event_threshold_shift"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(float(v)) < 1:
                raise InvalidPolicyError(f"{name} must be a number in (-1, 1), got {v!r}")


_RULE_FIELDS = ("yaw_threshold", "fusion_weight", "threshold_shift", "view_yaws", "event_threshold_shift")


@dataclass(frozen=True)
class RuleEntry:
    """One row of the rules file: the rule, whom it is for, and how it was chosen.

    Attributes:
        embedder: an embedder name, or ``"*"`` for every embedder.
        views: the view sources it applies to (:data:`VIEW_SOURCES`).
        rule: the rule itself.
        provenance: the row's other fields (split, chosen_by, figures, commit, ...), kept as written.
    """

    embedder: str
    views: Tuple[str, ...]
    rule: AutoRule
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"embedder": self.embedder, "views": list(self.views)}
        out.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self.rule).items()})
        out.update(self.provenance)
        return out


@dataclass(frozen=True)
class RuleSet:
    """The rules of one file (schema 2), in file order. Build with :func:`load_rules`."""

    entries: Tuple[RuleEntry, ...]
    about: str = ""

    def find(self, embedder: str, view: str = "3d") -> Optional[AutoRule]:
        """The rule for ``embedder`` with view source ``view``: its own row first, then a ``"*"`` row."""
        for who in (embedder, "*"):
            for e in self.entries:
                if e.embedder == who and view in e.views:
                    return e.rule
        return None

    def by_embedder(self, view: str = "3d") -> Dict[str, AutoRule]:
        """``{embedder: rule}`` of the rows for named embedders with view source ``view`` (a copy)."""
        return {e.embedder: e.rule for e in self.entries if e.embedder != "*" and view in e.views}

    def with_rule(self, embedder: str, views: Sequence[str], rule: AutoRule, **provenance: Any) -> "RuleSet":
        """A new set with ``embedder``'s row for ``views`` replaced by (or added as) ``rule``;
        ``provenance`` should name the split, the command, the commit and the figures."""
        views = _check_views(tuple(views), embedder)
        kept = tuple(e for e in self.entries if not (e.embedder == embedder and set(e.views) & set(views)))
        return RuleSet(kept + (RuleEntry(embedder, views, rule, dict(provenance)),), self.about)

    def save(self, path: Union[str, Path]) -> None:
        """Write the set as a rules file (what :func:`load_rules` reads back)."""
        data = {"schema": RULES_SCHEMA, "about": self.about, "rules": [e.to_json() for e in self.entries]}
        Path(path).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_views(views: Tuple[str, ...], who: str) -> Tuple[str, ...]:
    if not views or not all(v in VIEW_SOURCES for v in views):
        raise InvalidPolicyError(f"rule {who!r}: views must be a non-empty list of {VIEW_SOURCES}, got {list(views)!r}")
    return views


def load_rules(path: Union[str, Path] = RULES_FILE) -> RuleSet:
    """The rules in ``path`` (schema 2), validated.

    Raises:
        InvalidPolicyError: the file is unreadable, of another schema, or a row is malformed or
            out of range (yaw threshold 0–90°, weight 0–1, |shifts| < 1, view yaws 0–90°).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidPolicyError(f"{path}: the rules are not readable JSON ({e})") from e
    if not isinstance(data, dict) or data.get("schema") != RULES_SCHEMA or not isinstance(data.get("rules"), list):
        raise InvalidPolicyError(f"{path}: expected {{'schema': {RULES_SCHEMA}, 'rules': [row, ...]}}")
    entries: List[RuleEntry] = []
    for i, row in enumerate(data["rules"]):
        who = row.get("embedder") if isinstance(row, dict) else None
        if not isinstance(who, str) or not who:
            raise InvalidPolicyError(f"{path}: row {i} names no embedder")
        try:
            views = _check_views(tuple(row["views"]), who)
            rule = AutoRule(row["yaw_threshold"], row["fusion_weight"], row.get("threshold_shift", 0.0),
                            view_yaws=row["view_yaws"], event_threshold_shift=row.get("event_threshold_shift", 0.0))
        except (KeyError, TypeError) as e:
            raise InvalidPolicyError(f"{path}: rule {who!r} is malformed ({type(e).__name__}: {e})") from None
        except InvalidPolicyError as e:
            raise InvalidPolicyError(f"{path}: rule {who!r}: {e}") from None
        if any((e.embedder, v) == (who, w) for e in entries for v in e.views for w in views):
            raise InvalidPolicyError(f"{path}: two rows for {who!r} with view {views}")
        entries.append(RuleEntry(who, views, rule, {k: v for k, v in row.items() if k not in _RULE_FIELDS + ("embedder", "views")}))
    return RuleSet(tuple(entries), str(data.get("about", "")))


@functools.lru_cache(maxsize=1)
def shipped_rules() -> RuleSet:
    """The rules that ship in the package (:data:`RULES_FILE`), read once."""
    return load_rules(RULES_FILE)


def rule_for(embedder: str, view: str = "3d") -> Optional[AutoRule]:
    """The measured ``"auto"`` rule of ``embedder`` with view source ``view``: the shipped file's
    row, or the rule a registered ONNX model's registration carries; ``None`` when none is known."""
    rules = shipped_rules()
    for e in rules.entries:  # the embedder's own row wins over a registration and a "*" row
        if e.embedder == embedder and view in e.views:
            return e.rule
    if view != "tpgan":  # a registration's rule was measured on the 3D render
        from .onnx_registry import registered

        reg = registered().get(embedder)
        if reg is not None and reg.auto_rule is not None:
            yaw, w, views, shift = reg.auto_rule
            return AutoRule(yaw, w, shift, view_yaws=views)
    return rules.find("*", view)


@functools.lru_cache(maxsize=None)
def _warn_no_rule(embedder: str) -> None:
    log.warning("frontalize='auto' has no measured rule for embedder %r, so its turned faces are embedded raw "
                "(no 3D views); give its registration an auto_rule, or pass yaw_threshold= and fusion_weight=",
                embedder)


def _number(name: str, value: Any, lo: float, hi: float) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise InvalidPolicyError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidPolicyError(f"{name} must be a number, got {value!r}") from None
    if not lo <= v <= hi:  # NaN fails too
        raise InvalidPolicyError(f"{name} must lie in [{lo:g}, {hi:g}], got {value!r}")
    return v


def check_mode(mode: Any) -> str:
    """``mode`` if it is one of :data:`FRONTALIZE_MODES` exactly (``"Auto"`` is refused: a near
    miss would otherwise fall through to raw embeddings unnoticed).

    Raises:
        InvalidPolicyError: any other value."""
    if not isinstance(mode, str) or mode not in FRONTALIZE_MODES:
        raise InvalidPolicyError(f"frontalize must be one of {FRONTALIZE_MODES}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class Policy:
    """How one embedder's faces are embedded, with one view source. Build with :func:`resolve_policy`.

    Attributes:
        mode: one of :data:`FRONTALIZE_MODES`.
        embedder: the embedder's name.
        view: the view source's kind (:data:`VIEW_SOURCES`).
        rule: the ``"auto"`` rule; ``None``: ``"auto"`` fuses nothing (no rule is known).
    """

    mode: str
    embedder: str
    view: str = "3d"
    rule: Optional[AutoRule] = None

    def __post_init__(self) -> None:
        check_mode(self.mode)
        _check_views((self.view,), self.embedder)

    def fuses(self, yaw: Optional[float]) -> bool:
        """Whether a face at ``yaw`` degrees (``None``: unknown) is embedded from its views."""
        if self.mode == "always":
            return True
        if self.mode == "never" or self.rule is None or yaw is None:
            return False
        return abs(yaw) > self.rule.yaw_threshold

    @property
    def needs_views(self) -> bool:
        """Whether any face can be fused (a view source is needed)."""
        return self.mode == "always" or (self.mode == "auto" and self.rule is not None)

    @property
    def fusion_weight(self) -> float:
        """The view's weight in a fused face's embedding (1: the view alone, as ``"always"``)."""
        return 1.0 if self.mode == "always" or self.rule is None else self.rule.fusion_weight

    def view_yaws(self, yaw: Optional[float]) -> Tuple[float, ...]:
        """The signed yaws (degrees) a fused face at ``yaw`` is rendered at: the rule's |yaw|s on
        the face's own side; ``(0.0,)`` (the frontal view) under ``"always"``."""
        if self.mode == "always" or self.rule is None:
            return (0.0,)
        side = -1.0 if yaw is not None and yaw < 0 else 1.0
        return tuple(math.copysign(y, side) if y else 0.0 for y in self.rule.view_yaws)

    def threshold_shift(self, fused: bool) -> float:
        """What a decision threshold moves by for a probe face that was (or was not) fused."""
        return self.rule.threshold_shift if fused and self.mode == "auto" and self.rule is not None else 0.0

    @property
    def event_threshold_shift(self) -> float:
        """What a decision threshold moves by for a probe pooled from several frames: the
        embedder's measured shift (it was measured on its 3D-render rule; it applies whatever the
        mode, as pooling does)."""
        rule = rule_for(self.embedder, "3d")
        return 0.0 if rule is None else rule.event_threshold_shift

    @property
    def fuses_above(self) -> Optional[float]:
        """The |yaw| (degrees) above which ``"auto"`` fuses a face; ``None``: it fuses none (and
        under ``"always"``: every face, so 0)."""
        if self.mode == "always":
            return 0.0
        return None if self.mode == "never" or self.rule is None else self.rule.yaw_threshold

    def treatment(self, yaw: Optional[float], view_key: Optional[Mapping[str, Any]] = None) -> str:
        """A 16-hex-digit fingerprint of what is done to a face at ``yaw`` degrees: the photo
        alone (:data:`RAW_TREATMENT`), or its views fused by this policy — the mode, the rule's
        yaw threshold, weight and view yaws, and ``view_key`` (what makes the views:
        :func:`pifr.views.view_key`). Two embeddings of one photo with the same treatment are
        the same. ``yaw`` ``None`` under ``"auto"``: the treatment of a fused face."""
        fused = self.fuses(yaw) if yaw is not None else self.needs_views
        if not fused:
            return RAW_TREATMENT
        key: Dict[str, Any] = {"mode": self.mode, **dict(view_key or {})}
        if self.mode == "auto":
            yaws = self.rule.view_yaws  # type: ignore[union-attr]
            # One view keeps the key it had before rules could pool several: its templates stay current.
            key.update(yaw_threshold=self.rule.yaw_threshold, fusion_weight=self.rule.fusion_weight,  # type: ignore[union-attr]
                       view_yaw=yaws[0] if len(yaws) == 1 else list(yaws))
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def resolve_policy(embedder: str, mode: Any = DEFAULT_FRONTALIZE, view: str = "3d", *,
                   yaw_threshold: Any = None, fusion_weight: Any = None) -> Policy:
    """The :class:`Policy` for ``embedder`` under ``mode`` with view source ``view``: the measured
    rule (:func:`rule_for`), with ``yaw_threshold`` (degrees, 0–90) and ``fusion_weight`` (0–1)
    replacing its values where given. An embedder without a measured rule fuses nothing under
    ``"auto"`` (with a warning once) unless both values are given.

    Raises:
        InvalidPolicyError: an unknown mode or view source, or a value out of range.
    """
    mode = check_mode(mode)
    yt = _number("yaw_threshold", yaw_threshold, 0.0, 90.0)
    fw = _number("fusion_weight", fusion_weight, 0.0, 1.0)
    _check_views((view,), embedder)
    rule = rule_for(embedder, view)
    if mode == "auto" and rule is None and (yt is None or fw is None):
        _warn_no_rule(embedder)
    elif rule is None:
        rule = AutoRule(yt if yt is not None else 90.0, fw if fw is not None else 0.0)
    elif yt is not None or fw is not None:
        rule = dataclasses.replace(rule, yaw_threshold=rule.yaw_threshold if yt is None else yt,
                                   fusion_weight=rule.fusion_weight if fw is None else fw)
    return Policy(mode, embedder, view, rule if mode == "auto" else None)
