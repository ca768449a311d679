"""Per-sample classification quantities from logits: loss (Eq. 7), entropy; mAP, mean ML-accuracy."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from .calibration import check_labels, check_probs, ml_accuracy

if TYPE_CHECKING:  # torch is imported where a loss is computed, so CSV-only tools stay light
    import torch


def check_logits(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"logits contain NaN or inf (rows {np.flatnonzero(~np.isfinite(x).all(1))[:5].tolist()})")
    return x


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits, computed without overflow."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def multilabel_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample loss (Eq. 7), [N]: mean over the C classes of BCE-with-logits.

    ``l_i = 1/C sum_c [softplus(x_ic) - y_ic x_ic]`` (= torch's multilabel_soft_margin_loss
    with ``reduction='none'``), stable for large |x|, in the inputs' dtype. The training
    objective and the evaluation metric both use this function.
    """
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none").mean(dim=1)


def per_sample_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Eq. 7 (:func:`multilabel_bce`) on numpy arrays, in float64, after validating them."""
    x = check_logits(logits)
    y = check_labels(labels, x.shape).astype(np.float64)
    import torch

    return multilabel_bce(torch.from_numpy(x), torch.from_numpy(y)).numpy()


def binary_entropy(logits: np.ndarray) -> np.ndarray:
    """Prediction entropy per sample, [N], in nats: the mean over the C classes of the
    binary entropy of each sigmoid, ``H(p) = -p log p - (1 - p) log(1 - p)``.

    Computed from logits as ``p softplus(-x) + (1 - p) softplus(x)``. (The original
    code's ``entropy`` counts repeated probability values, which for distinct
    probabilities is always log C; it is not reproduced.)
    """
    x = check_logits(logits)
    p = sigmoid(x)
    return (p * _softplus(-x) + (1 - p) * _softplus(x)).mean(1)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class average precision, [C]; NaN for a class without positive samples.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, descending
    (equal scores are one threshold, as scikit-learn's ``average_precision_score``).
    All classes are computed together (one sort per column).
    """
    s = check_probs(scores, "scores")
    y = check_labels(labels, s.shape)
    n = s.shape[0]
    if n == 0:
        return np.full(s.shape[1], np.nan)
    order = np.argsort(-s, axis=0, kind="stable")
    s_sorted = np.take_along_axis(s, order, 0)
    y_sorted = np.take_along_axis(y, order, 0)
    tp = np.cumsum(y_sorted, 0)
    precision = tp / np.arange(1, n + 1)[:, None]
    # each positive gains recall 1/n_pos at the precision of the end of its tie group
    is_end = np.ones_like(s_sorted, dtype=bool)
    is_end[:-1] = s_sorted[:-1] != s_sorted[1:]
    end_pos = np.where(is_end, np.arange(n)[:, None], n)
    group_end = np.minimum.accumulate(end_pos[::-1], axis=0)[::-1]
    prec_at_end = np.take_along_axis(precision, group_end, 0)
    n_pos = y.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, (prec_at_end * y_sorted).sum(0) / n_pos, np.nan)


def mean_average_precision(scores: np.ndarray, labels: np.ndarray, class_names: list[str] | None = None) -> float:
    """mAP: the mean of the per-class APs over classes with at least one positive.

    Classes with no positive sample have no AP; they are left out with a warning.
    (The original sets their AP to 0 and still divides by C.)
    """
    ap = average_precision(scores, labels)
    missing = np.flatnonzero(np.isnan(ap))
    if missing.size == ap.size:
        raise ValueError("mAP: no class has a positive sample")
    if missing.size:
        which = [class_names[i] for i in missing] if class_names else missing.tolist()
        warnings.warn(f"mAP: {missing.size} class(es) without positive samples left out: {which}", stacklevel=2)
    return float(np.nanmean(ap))


def mean_ml_accuracy(probs: np.ndarray, labels: np.ndarray, pred_threshold: float = 0.5) -> float:
    """Mean ML-accuracy (Eq. 3) over the samples, predictions ``p > pred_threshold``."""
    p = check_probs(probs)
    y = check_labels(labels, p.shape)
    return float(ml_accuracy(y, p > pred_threshold).mean())
