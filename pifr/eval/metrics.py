"""Evaluation metrics on similarity scores (higher = more alike).

ROC and AUC come from scikit-learn (``pip install 'pifr[eval]'``); kept here is what it lacks: the
EER interpolated on its curve, TAR at a FAR, the best accuracy threshold, k-fold accuracy, rank-1
and the exact McNemar test (numpy). scikit-learn is imported on first use, so the pure-numpy
functions (e.g. :func:`mcnemar`, which training validation uses) work without it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from ..errors import DependencyError

#: How to install what the ROC metrics need.
INSTALL_HINT = "pip install 'pifr[eval]' (or: pip install scikit-learn)"


def _sklearn_metrics() -> Any:
    """``sklearn.metrics``, or DependencyError naming the install command."""
    try:
        from sklearn import metrics
    except ImportError as e:
        raise DependencyError(f"pifr.eval's ROC metrics need scikit-learn, which is not installed: {INSTALL_HINT}") from e
    return metrics


def _checked(scores: np.ndarray, same: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Scores as float64 and labels as bool, equal-length 1-D, with both classes present
    (scikit-learn only warns and returns NaN for one class). Raises ValueError."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(same, bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be equal-length 1-D arrays, got {s.shape} and {y.shape}")
    if y.all() or not y.any():
        raise ValueError("need both genuine and impostor pairs")
    return s, y


def roc(scores: np.ndarray, same: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC over every distinct threshold (``sklearn.metrics.roc_curve``, no point dropped).

    Args:
        scores: ``(N,)`` similarities; same: ``(N,)`` bool, True for a genuine pair.

    Returns:
        ``(far, tar, thresholds)``: false-accept rate, true-accept rate, and the threshold
        (accept if score ≥ threshold) at each point, FAR increasing; the first point is
        ``(0, 0, inf)``.

    Raises:
        ValueError: shapes differ, or only one kind of pair. DependencyError: no scikit-learn.
    """
    s, y = _checked(scores, same)
    far, tar, thr = _sklearn_metrics().roc_curve(y, s, drop_intermediate=False)  # thr[0] = inf since 1.3
    return far, tar, thr


def auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC (``sklearn.metrics.roc_auc_score``). Raises as :func:`roc`."""
    s, y = _checked(scores, same)
    return float(_sklearn_metrics().roc_auc_score(y, s))


def eer(scores: np.ndarray, same: np.ndarray) -> float:
    """Equal error rate (FAR = FRR), linearly interpolated on the ROC."""
    far, tar, _ = roc(scores, same)
    frr = 1 - tar
    i = int(np.argmax(far >= frr))
    if i == 0:
        return float(far[0])
    # Interpolate between points i-1 and i where far - frr changes sign.
    d0, d1 = far[i - 1] - frr[i - 1], far[i] - frr[i]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(far[i - 1] + t * (far[i] - far[i - 1]))


def tar_at_far(scores: np.ndarray, same: np.ndarray, target_far: float) -> Tuple[float, float]:
    """Highest TAR whose FAR ≤ ``target_far``; returns ``(tar, threshold)``."""
    far, tar, thr = roc(scores, same)
    ok = far <= target_far
    i = int(np.nonzero(ok)[0][-1])
    return float(tar[i]), float(thr[i])


def best_threshold(scores: np.ndarray, same: np.ndarray) -> Tuple[float, float]:
    """Threshold maximising accuracy (midpoint between neighbouring scores); returns ``(threshold, accuracy)``."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(same, bool)
    u = np.unique(s)
    cands = np.r_[u[0] - 1e-6, (u[:-1] + u[1:]) / 2, u[-1] + 1e-6]
    # Vectorised accuracy for all candidates via sorting.
    order = np.argsort(s)
    ss, yy = s[order], y[order]
    idx = np.searchsorted(ss, cands, side="left")  # number of scores below each candidate
    neg_below = np.r_[0, np.cumsum(~yy)][idx]
    pos_above = y.sum() - np.r_[0, np.cumsum(yy)][idx]
    acc = (neg_below + pos_above) / len(s)
    j = int(np.argmax(acc))
    return float(cands[j]), float(acc[j])


@dataclass(frozen=True)
class KFoldResult:
    """10-fold verification result: per-fold accuracies and thresholds (threshold chosen on the other folds)."""

    accuracies: Tuple[float, ...]
    thresholds: Tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """Standard k-fold protocol: for each fold, pick the best threshold on the others, test on it."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(same, bool)
    f = np.asarray(folds)
    if len(np.unique(f)) < 2:
        raise ValueError("k-fold accuracy needs at least two folds")
    accs, thrs = [], []
    for k in np.unique(f):
        test = f == k
        thr, _ = best_threshold(s[~test], y[~test])
        accs.append(float(np.mean((s[test] >= thr) == y[test])))
        thrs.append(thr)
    return KFoldResult(tuple(accs), tuple(thrs))


def rank1_hits(probe: np.ndarray, probe_ids: Sequence, gallery: np.ndarray, gallery_ids: Sequence) -> np.ndarray:
    """Per probe, whether its most similar gallery entry (cosine; rows are unit vectors) has its
    identity: bool (n_probes,)."""
    sim = np.asarray(probe) @ np.asarray(gallery).T
    best = np.asarray(gallery_ids)[np.argmax(sim, axis=1)]
    return best == np.asarray(probe_ids)


def rank1(probe: np.ndarray, probe_ids: Sequence, gallery: np.ndarray, gallery_ids: Sequence) -> float:
    """Closed-set rank-1 identification rate with cosine similarity (rows are unit vectors)."""
    return float(np.mean(rank1_hits(probe, probe_ids, gallery, gallery_ids)))


@dataclass(frozen=True)
class PairedComparison:
    """Method B against method A on the same items: ``gained`` items only B gets right, ``lost``
    items only A gets right, and the exact two-sided McNemar p-value of that split (the chance of
    one at least this lopsided if neither method were better)."""

    gained: int
    lost: int
    p_value: float


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> PairedComparison:
    """Exact McNemar test of two methods' per-item correctness (e.g. :func:`rank1_hits` of raw
    and frontalized probes): a binomial test of the discordant items at 1/2."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two equal-length 1-D arrays, got {a.shape} and {b.shape}")
    gained, lost = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    n, k = gained + lost, min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n if n else 1.0
    return PairedComparison(gained, lost, min(1.0, 2 * tail))


def verification_summary(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> Dict[str, float]:
    kf = kfold_accuracy(scores, same, folds)
    return {
        "accuracy": kf.mean,
        "accuracy_std": kf.std,
        "eer": eer(scores, same),
        "auc": auc(scores, same),
        "tar_at_far_1e-2": tar_at_far(scores, same, 1e-2)[0],
        "tar_at_far_1e-3": tar_at_far(scores, same, 1e-3)[0],
    }


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 100,
                              seed: int = 0) -> Tuple[float, float]:
    """KID (Bińkowski et al., ICLR 2018) between two sets of image features: the unbiased MMD²
    with the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)³``, averaged over ``subsets``
    random subsets of ``min(subset_size, n_real, n_fake)`` rows of each (seeded). 0 when the two
    distributions are the same; unlike FID it is unbiased for small sets. Any feature network may
    supply the features (the name "Inception" is the original's network); say which.

    Args:
        real, fake: ``(N, d)`` and ``(M, d)`` float features, N, M ≥ 2.
    Returns:
        ``(mean, std)`` over the subsets.
    """
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(f"need two (N, d) feature arrays with N >= 2 and the same d, got {x.shape} and {y.shape}")
    d, m = x.shape[1], min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    off = ~np.eye(m, dtype=bool)
    vals = []
    for _ in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
        vals.append(kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))
