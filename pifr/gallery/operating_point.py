"""A gallery's operating threshold: the default operating point read from the shipped impostor
tables, calibration from impostor scores, and the checks on thresholds and false-accept rates.

The default threshold follows the gallery's size so that a stranger is accepted as *anyone* with
probability at most :data:`DEFAULT_FAR_PER_PROBE`: with ``T`` templates, each 1:1 comparison may
falsely match with rate ``p = 1 − (1 − FAR)^(1/T)``, and the threshold is the embedder's table score
for ``p`` (``pifr/data/impostor_tables.json``, written by ``benchmarks/impostor_tables.py``).
"""
from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..errors import InvalidArgumentError

log = logging.getLogger("pifr")

#: The false-accept rate per probe that a gallery's default threshold holds for its current size.
DEFAULT_FAR_PER_PROBE = 0.01
_TABLES = Path(__file__).resolve().parents[1] / "data" / "impostor_tables.json"


@functools.lru_cache(maxsize=1)
def impostor_tables() -> Dict[str, dict]:
    """The shipped impostor-score tables, by embedder name (see the module doc); ``{}`` if absent."""
    try:
        return json.loads(_TABLES.read_text())
    except FileNotFoundError:
        return {}


@dataclass(frozen=True)
class OperatingPoint:
    """A default threshold and where it comes from.

    Attributes:
        threshold: cosine threshold (accept when score ≥ threshold).
        far_per_probe: the per-probe false-accept rate it is set for.
        far_per_comparison: the 1:1 rate that needs, ``1 − (1 − far_per_probe)^(1/comparisons)``.
        comparisons: templates a probe is compared with.
        measured: ``False`` when the 1:1 rate is below what the table's data can resolve (the
            threshold is then just above the highest impostor score seen, and its FAR is unmeasured).
        source: the table's data and command.
    """

    threshold: float
    far_per_probe: float
    far_per_comparison: float
    comparisons: int
    measured: bool
    source: str


def _per_comparison(far_per_probe: float, comparisons: int) -> float:
    """``1 − (1 − FAR)^(1/n)``, accurate for small rates."""
    return -math.expm1(math.log1p(-far_per_probe) / comparisons)


def default_operating_point(embedder: str, comparisons: int, far_per_probe: float = DEFAULT_FAR_PER_PROBE,
                            weights_sha256: Optional[str] = None) -> Optional[OperatingPoint]:
    """The threshold that holds ``far_per_probe`` for a probe compared with ``comparisons``
    templates, from the shipped impostor table of ``embedder`` (``None`` if there is none, or if
    it was measured with other weights than ``weights_sha256``).

    The table lists, for 1:1 false-accept rates ``p`` 20 per decade, the lowest threshold with at
    most ``p`` of the tuning impostor pairs at or above it; the row with the largest ``p`` not above
    the rate needed is used, so the threshold errs strict.
    """
    _check_far(far_per_probe, "far_per_probe")
    t = impostor_tables().get(embedder) or _registered_table(embedder)
    if t is None or (weights_sha256 and t.get("weights_sha256") and t["weights_sha256"] != weights_sha256):
        return None
    n = max(1, int(comparisons))
    p = _per_comparison(far_per_probe, n)
    rows = t["far_per_pair_to_threshold"]  # [[p, threshold], ...] p descending; the last: above every impostor
    measured = [r for r in rows[:-1] if r[0] <= p]
    thr, ok = (float(measured[0][1]), True) if measured else (float(rows[-1][1]), False)
    return OperatingPoint(min(thr, 1.0), far_per_probe, p, n, ok,
                          f"{t['data']} ({t['impostor_pairs']:,} impostor pairs; {t['command']})")


def _registered_table(embedder: str) -> Optional[dict]:
    """The impostor table a registered ONNX model's registration carries, in the shipped tables'
    form; ``None`` for anything else."""
    from ..onnx_registry import registered

    reg = registered().get(embedder)
    if reg is None or not reg.impostor_table:
        return None
    return {"far_per_pair_to_threshold": [list(r) for r in reg.impostor_table], "impostor_pairs": 0,
            "data": f"the impostor table registered with {embedder!r}", "command": reg.config or "register_embedder(impostor_table=...)"}


def warn_about(op: Optional[OperatingPoint], embedder: str, frontalize: str, pair_threshold: float) -> None:
    """Log why a gallery's default threshold is weaker than it looks: no table applies (``op`` is
    ``None``: the 1:1 threshold ``pair_threshold`` is used), or the table cannot resolve the rate."""
    if op is None:
        log.warning("no shipped impostor table for %s%s: this gallery uses the 1:1 verification threshold %.4f, "
                    "whose false-accept rate per probe grows with the gallery's size; call calibrate() or pass threshold=",
                    embedder, "" if frontalize == "never" else f" with frontalize={frontalize!r}", pair_threshold)
    elif not op.measured:
        log.warning("gallery of %d templates: FAR %.1e per comparison is below what the %s impostor table resolves; "
                    "the threshold %.4f is above every impostor seen, its FAR is not measured (calibrate() on more data)",
                    op.comparisons, op.far_per_comparison, embedder, op.threshold)


def calibrated_threshold(target_far: float, impostor_scores: Optional[np.ndarray] = None, *,
                         embeddings: Optional[np.ndarray] = None, labels: Optional[Sequence[Any]] = None,
                         per: str = "probe", gallery_size: Optional[int] = None, identities: int = 1) -> float:
    """The cosine threshold for ``target_far`` (see :meth:`pifr.gallery.Gallery.calibrate`, which
    sets it): the lowest one with at most that share of the impostor scores at or above it.

    Args:
        target_far: false-accept rate in (0, 1), per probe (``per="probe"``) or per 1:1 comparison.
        impostor_scores: 1:1 cosine similarities of different people, any shape; or
        embeddings, labels: ``(N, dim)`` unit embeddings and their N labels, every different-label pair scored.
        gallery_size: identities a probe is compared with (``per="probe"``; default ``identities``).
        identities: the gallery's current number of identities.

    Raises:
        InvalidArgumentError: as :meth:`pifr.gallery.Gallery.calibrate`.
    """
    target_far = _check_far(target_far, "target_far")
    if per not in ("probe", "comparison"):
        raise InvalidArgumentError("per must be 'probe' or 'comparison'")
    if impostor_scores is None:
        if embeddings is None or labels is None:
            raise InvalidArgumentError("give impostor_scores, or embeddings and labels")
        e = np.asarray(embeddings, np.float32)
        lab = np.asarray(labels)
        if e.ndim != 2 or len(e) != len(lab):
            raise InvalidArgumentError(f"embeddings (N, dim) and N labels needed, got {e.shape} and {lab.shape}")
        sims = e @ e.T
        iu = np.triu_indices(len(e), 1)
        diff = lab[iu[0]] != lab[iu[1]]
        impostor_scores = sims[iu][diff]
    scores = np.asarray(impostor_scores, np.float64).ravel()
    if scores.size == 0:
        raise InvalidArgumentError("no impostor scores to calibrate on (need pairs of different people)")
    if not np.all(np.isfinite(scores)):
        raise InvalidArgumentError("impostor scores contain NaN or infinite values")
    rate = target_far
    if per == "probe":
        if gallery_size is not None and (isinstance(gallery_size, bool) or not isinstance(gallery_size, (int, np.integer))
                                         or gallery_size < 1):
            raise InvalidArgumentError(f"gallery_size must be a positive integer, got {gallery_size!r}")
        n = int(gallery_size) if gallery_size is not None else max(1, identities)
        rate = _per_comparison(target_far, n)
    s = np.sort(scores)[::-1]
    if len(s) < 1 / rate:
        log.warning("calibrating a per-comparison FAR of %.1e from only %d impostor scores: the threshold is "
                    "the highest impostor score seen, and the true FAR is not measured", rate, len(s))
    n_allowed = int(np.floor(rate * len(s)))
    # Accept scores >= thr: the (n_allowed)-th highest impostor must fall just below it.
    thr = float(np.nextafter(s[n_allowed], np.inf)) if n_allowed < len(s) else float(s[-1])
    return min(max(thr, 0.0), 1.0)  # a cosine threshold; below 0 would accept nearly every face


def _check_far(far: Any, what: str) -> float:
    try:
        f = float(far)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{what} must be a number in (0, 1), got {far!r}") from e
    if not 0.0 < f < 1.0:  # also rejects NaN
        raise InvalidArgumentError(f"{what} must lie in (0, 1), got {far!r}")
    return f


def check_threshold(threshold: Any) -> float:
    """A gallery threshold is a finite cosine in [0, 1]: NaN would accept no one silently and a
    negative one nearly everyone. Returns it as a float. Raises InvalidArgumentError."""
    try:
        t = float(threshold)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"threshold must be a number in [0, 1], got {threshold!r}") from e
    if not 0.0 <= t <= 1.0:  # also rejects NaN
        raise InvalidArgumentError(f"threshold must be a finite cosine similarity in [0, 1], got {threshold!r}")
    return t
