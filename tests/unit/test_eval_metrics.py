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


def test_eer_matches_roc_crossing(data):
    s, y = data
    fpr, tpr, _ = roc_curve(y, s)
    i = np.argmin(np.abs(fpr - (1 - tpr)))
    assert eer(s, y) == pytest.approx((fpr[i] + 1 - tpr[i]) / 2, abs=0.01)


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
