"""Metrics against scikit-learn and hand-worked cases."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from pifr.eval.metrics import auc, best_threshold, eer, kfold_accuracy, mcnemar, rank1, rank1_hits, tar_at_far


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    same = rng.random(2000) < 0.5
    scores = rng.normal(0, 1, 2000) + 2.0 * same
    return scores, same


def test_auc_matches_sklearn(data):
    s, y = data
    assert auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_auc_is_the_chance_a_genuine_pair_outscores_an_impostor():
    """Independent of scikit-learn: AUC = P(genuine > impostor) + P(tie) / 2, counted over every
    pair (scores rounded so that ties occur)."""
    rng = np.random.default_rng(5)
    same = rng.random(600) < 0.4
    s = np.round(rng.normal(0, 1, 600) + 1.2 * same, 1)
    g, i = s[same][:, None], s[~same][None, :]
    assert auc(s, same) == pytest.approx(np.mean(g > i) + 0.5 * np.mean(g == i), abs=1e-12)


def test_roc_counts_the_accepts_at_every_distinct_threshold():
    """Each ROC point is (share of impostors, share of genuine pairs) scoring ≥ its threshold,
    one point per distinct score after (0, 0, inf), FAR increasing; one kind of pair is refused."""
    from pifr.eval.metrics import roc

    rng = np.random.default_rng(6)
    same = rng.random(300) < 0.5
    s = np.round(rng.normal(0, 1, 300) + same, 1)
    far, tar, thr = roc(s, same)
    assert (far[0], tar[0], thr[0]) == (0.0, 0.0, np.inf)
    assert thr[1:].tolist() == sorted(set(s.tolist()), reverse=True)
    assert np.allclose(far[1:], [np.mean(s[~same] >= t) for t in thr[1:]], atol=1e-12)
    assert np.allclose(tar[1:], [np.mean(s[same] >= t) for t in thr[1:]], atol=1e-12)
    assert np.all(np.diff(far) >= 0)
    with pytest.raises(ValueError):
        roc(s, np.ones(300, bool))
    with pytest.raises(ValueError):
        roc(s[:5], same)


def test_roc_metrics_without_scikit_learn_name_the_install_command(monkeypatch):
    """scikit-learn is the eval extra's: without it the ROC metrics raise DependencyError with the
    command to install it, and the pure-numpy metrics (McNemar, used by training) still work."""
    import builtins

    from pifr.errors import DependencyError

    real_import = builtins.__import__

    def no_sklearn(name, *a, **kw):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("no scikit-learn here")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    for metric in (auc, eer):
        with pytest.raises(DependencyError, match=r"pip install 'pifr\[eval\]'"):
            metric(np.array([0.1, 0.9]), np.array([False, True]))
    assert mcnemar([True, False], [True, True]).gained == 1


def test_eer_matches_roc_crossing(data):
    s, y = data
    fpr, tpr, _ = roc_curve(y, s)
    i = np.argmin(np.abs(fpr - (1 - tpr)))
    assert eer(s, y) == pytest.approx((fpr[i] + 1 - tpr[i]) / 2, abs=0.01)


def test_eer_is_where_the_error_rates_cross():
    """Independent of any ROC code: at the EER the share of impostors accepted and of genuine
    pairs refused meet; between two neighbouring thresholds the interpolated EER lies between them."""
    rng = np.random.default_rng(7)
    same = rng.random(4000) < 0.5
    s = rng.normal(0, 1, 4000) + 1.5 * same
    e = eer(s, same)
    ts = np.sort(np.unique(s))
    far = np.array([np.mean(s[~same] >= t) for t in ts])
    frr = np.array([np.mean(s[same] < t) for t in ts])
    j = int(np.argmax(far <= frr))  # first threshold (ascending) where FAR has fallen to FRR
    # Interpolated between thresholds j - 1 and j, the EER is both a FAR and an FRR of that step.
    assert max(far[j], frr[j - 1]) - 1e-12 <= e <= min(far[j - 1], frr[j]) + 1e-12
    assert 0.2 < e < 0.3  # two unit normals 1.5 apart cross at Φ(−0.75) ≈ 0.227


def test_eer_and_tar_at_far_by_hand():
    """A genuine pair and an impostor tie at 0.5: the ROC steps diagonally from (FAR 0, FRR 1/2)
    to (1/2, 0), so the rates cross halfway, at 1/4; at FAR ≤ 1/4 only the 0.9 threshold is allowed."""
    s = np.array([0.9, 0.5, 0.5, 0.1])
    y = np.array([True, True, False, False])
    assert eer(s, y) == pytest.approx(0.25, abs=1e-12)
    assert tar_at_far(s, y, 0.25) == (0.5, 0.9) and tar_at_far(s, y, 0.5) == (1.0, 0.5)


def test_tar_at_far_respects_the_far(data):
    s, y = data
    tar, thr = tar_at_far(s, y, 0.01)
    assert np.mean(s[~y] >= thr) <= 0.01
    assert tar == pytest.approx(np.mean(s[y] >= thr))


def test_best_threshold_and_kfold_on_separable_data():
    s = np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 50)]
    y = np.r_[np.zeros(50, bool), np.ones(50, bool)]
    thr, acc = best_threshold(s, y)
    assert acc == 1.0 and 0.4 < thr < 0.6
    kf = kfold_accuracy(s, y, np.arange(100) % 10)
    assert kf.mean == 1.0 and len(kf.accuracies) == 10


def test_rank1():
    g = np.eye(3)
    p = np.array([[0.9, 0.1, 0], [0, 0.2, 0.9], [0.8, 0.3, 0]])
    assert rank1(p, [0, 2, 1], g, [0, 1, 2]) == pytest.approx(2 / 3)


def test_mcnemar_matches_the_exact_binomial_test():
    from scipy.stats import binomtest

    rng = np.random.default_rng(3)
    for n, flip in ((200, 0.05), (200, 0.2), (79, 0.1)):
        a = rng.random(n) < 0.7
        b = a.copy()
        idx = rng.choice(n, int(n * flip), replace=False)
        b[idx] = ~b[idx]
        b[rng.choice(n, 3, replace=False)] = True  # some lopsidedness
        r = mcnemar(a, b)
        assert r.gained == np.sum(b & ~a) and r.lost == np.sum(a & ~b)
        assert r.p_value == pytest.approx(binomtest(r.gained, r.gained + r.lost, 0.5).pvalue, rel=1e-9)
    same = mcnemar([True, False], [True, False])
    assert (same.gained, same.lost, same.p_value) == (0, 0, 1.0)
    assert mcnemar([False] * 5, [True] * 5).p_value == pytest.approx(0.0625)
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])


def test_rank1_hits_per_probe():
    g = np.eye(3)
    p = np.array([[1, 0, 0], [0, 0.2, 0.9], [0, 0, 1.0]])
    assert rank1_hits(p, [0, 1, 2], g, [0, 1, 2]).tolist() == [True, False, True]
    assert rank1(p, [0, 1, 2], g, [0, 1, 2]) == pytest.approx(2 / 3)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    from pifr.eval.metrics import kernel_inception_distance as kid

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, _ = kid(a, b, subsets=50, subset_size=100)
    near, _ = kid(a, b + 0.3, subsets=50, subset_size=100)
    far, _ = kid(a, b + 1.0, subsets=50, subset_size=100)
    assert abs(same) < 0.02 < near < far
    # The unbiased estimate on one subset equals the formula written out by hand.
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    k = lambda p, q: (p @ q.T / 3 + 1) ** 3  # noqa: E731
    off = ~np.eye(5, dtype=bool)
    want = k(x, x)[off].mean() + k(y, y)[off].mean() - 2 * k(x, y).mean()
    assert kid(x, y, subsets=1, subset_size=5)[0] == pytest.approx(want)
    with pytest.raises(ValueError):
        kid(a[:, :3], b)
