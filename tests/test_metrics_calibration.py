"""ML-confidence, ML-accuracy, ECE_ML, loss, entropy and mAP against hand-worked cases and plain loops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dywsss.metrics.calibration import bin_index, ece_ml, ece_ml_from_probs, ml_accuracy, ml_confidence
from dywsss.metrics.classification import (
    average_precision, binary_entropy, mean_average_precision, mean_ml_accuracy, per_sample_loss,
)


# ------------------------------------------------------------- Eq. 2 and 3
def test_ml_confidence_hand_worked():
    p = np.array([[0.9, 0.6, 0.1], [0.2, 0.4, 0.3], [0.5, 0.1, 0.0]])
    # mean of p >= 0.5; none -> max; exactly 0.5 counts as reaching the threshold
    np.testing.assert_allclose(ml_confidence(p), [0.75, 0.4, 0.5])


def test_ml_accuracy_hand_worked():
    y = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    yhat = np.array([[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    # {0,1} vs {0,2}: 1/3; equal: 1; both empty: 0/0 := 1; nothing right: 0; empty prediction: 0
    np.testing.assert_allclose(ml_accuracy(y, yhat), [1 / 3, 1, 1, 0, 0])


# ----------------------------------------------------------------- binning
def test_width_bins_are_left_open_right_closed():
    conf = np.array([0.0, 0.05, np.nextafter(0.05, 1), 0.5, np.nextafter(0.5, 1), 1.0])
    np.testing.assert_array_equal(bin_index(conf, 20), [0, 0, 1, 9, 10, 19])
    np.testing.assert_array_equal(bin_index(np.array([0.1, 0.10000001]), 10), [0, 1])


def test_count_bins_sizes():
    rng = np.random.default_rng(0)
    conf = rng.random(23)
    b = bin_index(conf, 5, "count")
    np.testing.assert_array_equal(np.bincount(b), [5, 5, 5, 4, 4])
    order = np.argsort(conf)
    assert (np.diff(b[order]) >= 0).all()  # bins follow the confidence order
    np.testing.assert_array_equal(np.bincount(bin_index(conf[:3], 5, "count"), minlength=5), [1, 1, 1, 0, 0])


# ------------------------------------------------------------------- ECE
def test_ece_hand_worked():
    # 4 bins: samples at conf 0.2 (acc 0), 0.2 (acc 1), 0.9 (acc 1), 0.6 (acc 0.5)
    conf = np.array([0.2, 0.2, 0.9, 0.6])
    acc = np.array([0.0, 1.0, 1.0, 0.5])
    r = ece_ml(conf, acc, n_bins=4)
    # bin 0 (0, .25]: acc .5, conf .2 -> 2/4*.3; bin 2 (.5, .75]: |.5-.6| 1/4; bin 3: |1-.9| 1/4
    assert r.ece == pytest.approx(0.5 * 0.3 + 0.25 * 0.1 + 0.25 * 0.1)
    np.testing.assert_array_equal(r.count, [2, 0, 1, 1])
    assert np.isnan(r.acc[1]) and r.bins()[1]["acc"] is None
    assert r.bins()[0] == dict(lo=0.0, hi=0.25, count=2, acc=0.5, conf=0.2)


def ece_loop(conf, acc, M):
    """Plain version: bins (m/M, (m+1)/M], 0 in the first."""
    total = 0.0
    for m in range(M):
        lo, hi = m / M, (m + 1) / M
        idx = [i for i, c in enumerate(conf) if (lo < c <= hi) or (m == 0 and c == 0)]
        if idx:
            total += len(idx) / len(conf) * abs(np.mean(acc[idx]) - np.mean(conf[idx]))
    return total


def confidence_loop(p, t=0.5):
    out = []
    for row in p:
        above = [v for v in row if v >= t]
        out.append(sum(above) / len(above) if above else max(row))
    return np.array(out)


def accuracy_loop(y, p, t=0.5):
    out = []
    for yr, pr in zip(y, p):
        a = {c for c, v in enumerate(yr) if v}
        b = {c for c, v in enumerate(pr) if v > t}
        out.append(len(a & b) / len(a | b) if a | b else 1.0)
    return np.array(out)


@pytest.mark.parametrize("M", [1, 7, 20])
def test_ece_matches_loops_on_random_data(M):
    rng = np.random.default_rng(M)
    p = np.round(rng.random((300, 20)) ** 3, 2)  # rounding puts confidences on bin edges
    y = (rng.random((300, 20)) < 0.1).astype(int)
    np.testing.assert_allclose(ml_confidence(p), confidence_loop(p))
    np.testing.assert_allclose(ml_accuracy(y, p > 0.5), accuracy_loop(y, p))
    r = ece_ml_from_probs(p, y, n_bins=M)
    assert r.ece == pytest.approx(ece_loop(confidence_loop(p), accuracy_loop(y, p), M), abs=1e-12)
    assert r.count.sum() == 300


def test_equal_count_ece_matches_loop():
    rng = np.random.default_rng(11)
    conf, acc = rng.random(50), rng.random(50)
    order = np.argsort(conf, kind="stable")
    want = sum(len(g) / 50 * abs(acc[g].mean() - conf[g].mean()) for g in np.array_split(order, 6))
    r = ece_ml(conf, acc, 6, "count")
    assert r.ece == pytest.approx(want)
    assert (r.lo <= r.hi).all()


def test_perfect_predictions_have_zero_ece():
    rng = np.random.default_rng(1)
    y = (rng.random((50, 20)) < 0.15).astype(int)
    y[np.arange(50), rng.integers(0, 20, 50)] = 1  # every image has a class, as in VOC
    r = ece_ml_from_probs(y.astype(float), y)
    assert r.ece == 0.0
    assert mean_ml_accuracy(y.astype(float), y) == 1.0
    # property of Eq. 2-3: a correct empty prediction has accuracy 1 but confidence max p = 0
    y[0] = 0
    assert ece_ml_from_probs(y.astype(float), y).ece == pytest.approx(1 / 50)


@pytest.mark.parametrize("probs, match", [
    (np.array([[0.2, np.nan]]), "NaN"),
    (np.array([[0.2, 1.2]]), r"\[0, 1\]"),
    (np.array([0.2, 0.3]), r"\[N, C\]"),
])
def test_bad_probabilities(probs, match):
    with pytest.raises(ValueError, match=match):
        ece_ml_from_probs(probs, np.zeros_like(probs))


def test_bad_labels_and_bins():
    with pytest.raises(ValueError, match="0/1"):
        ece_ml_from_probs(np.full((2, 2), 0.5), np.array([[0, 2], [1, 0]]))
    with pytest.raises(ValueError, match="shape"):
        ece_ml_from_probs(np.full((2, 2), 0.5), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="bins must be >= 1"):
        ece_ml(np.array([0.5]), np.array([1.0]), n_bins=0)
    with pytest.raises(ValueError, match="binning"):
        ece_ml(np.array([0.5]), np.array([1.0]), binning="quantile")


# ------------------------------------------------------- Eq. 7, entropy
def test_loss_matches_torch_and_hand_formula():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 3, (16, 20))
    y = (rng.random((16, 20)) < 0.2).astype(int)
    want = torch.nn.functional.multilabel_soft_margin_loss(torch.tensor(x), torch.tensor(y, dtype=torch.float64),
                                                           reduction="none").numpy()
    np.testing.assert_allclose(per_sample_loss(x, y), want, rtol=1e-12)
    # one sample by hand: logits (0, 2), labels (1, 0): (log 2 + log(1 + e^2)) / 2
    assert per_sample_loss(np.array([[0.0, 2.0]]), np.array([[1, 0]]))[0] == pytest.approx(
        (math.log(2) + math.log1p(math.exp(2))) / 2)


def test_loss_and_entropy_stable_for_large_logits():
    x = np.array([[1e4, -1e4]])
    assert per_sample_loss(x, np.array([[1, 0]]))[0] == 0.0
    assert per_sample_loss(x, np.array([[0, 1]]))[0] == pytest.approx(1e4)
    assert binary_entropy(x)[0] == 0.0


def test_entropy_hand_worked():
    # logit 0 -> p = 1/2 -> log 2; logit log 3 -> p = 3/4 -> -(3/4 log 3/4 + 1/4 log 1/4)
    h = binary_entropy(np.array([[0.0, math.log(3)]]))[0]
    assert h == pytest.approx((math.log(2) - (0.75 * math.log(0.75) + 0.25 * math.log(0.25))) / 2)


def test_loss_rejects_nan_logits():
    with pytest.raises(ValueError, match="logits contain NaN"):
        per_sample_loss(np.array([[np.nan, 0.0]]), np.array([[0, 1]]))


# --------------------------------------------------------------------- mAP
def test_average_precision_hand_worked():
    # scores .9 .8 .7 .6 with labels 1 0 1 0: AP = (1/1 + 2/3) / 2
    s = np.array([[0.9], [0.8], [0.7], [0.6]])
    assert average_precision(s, np.array([[1], [0], [1], [0]]))[0] == pytest.approx((1 + 2 / 3) / 2)
    # a tie between a positive and a negative at the top: one threshold, precision 1/2
    s2 = np.array([[0.9], [0.9], [0.1]])
    assert average_precision(s2, np.array([[0], [1], [0]]))[0] == pytest.approx(0.5)


def test_average_precision_matches_sklearn_with_ties():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    s = np.round(rng.random((200, 20)), 1)  # many ties
    y = (rng.random((200, 20)) < 0.3).astype(int)
    want = [sklearn_metrics.average_precision_score(y[:, c], s[:, c]) for c in range(20)]
    np.testing.assert_allclose(average_precision(s, y), want, rtol=1e-12)


def test_map_perfect_ranking_is_one_and_empty_classes_are_left_out():
    rng = np.random.default_rng(4)
    y = (rng.random((30, 5)) < 0.4).astype(int)
    y[:, 2] = 0  # no positives
    s = np.clip(y * 0.5 + rng.random((30, 5)) * 0.4, 0, 1)  # every positive above every negative
    with pytest.warns(UserWarning, match=r"1 class\(es\) without positive samples left out: \['c'\]"):
        assert mean_average_precision(s, y, ["a", "b", "c", "d", "e"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(s, np.zeros_like(y))
