"""Multi-label calibration: ML-confidence (Eq. 2), ML-accuracy (Eq. 3), ECE_ML (Eq. 1, 4).

Inputs are per-sample class probabilities ``probs`` [N, C] (sigmoids) and 0/1 labels
[N, C]. The prediction set of a sample is ``{c : p_c > pred_threshold}`` (0.5).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINNINGS = ("width", "count")


def check_probs(probs: np.ndarray, name: str = "probabilities") -> np.ndarray:
    """float64 [N, C] in [0, 1] without NaN, or a ValueError saying what is wrong."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name} must be [N, C], got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contain NaN or inf (rows {np.flatnonzero(~np.isfinite(p).all(1))[:5].tolist()})")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1] (min {p.min():.4g}, max {p.max():.4g})")
    return p


def check_labels(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean [N, C] from 0/1 labels of the given shape."""
    y = np.asarray(labels)
    if y.shape != shape:
        raise ValueError(f"labels have shape {y.shape}, expected {shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 (multi-hot)")
    return y.astype(bool)


def prediction_sets(probs: np.ndarray, pred_threshold: float = 0.5) -> np.ndarray:
    """Predicted classes, boolean [N, C]: ``p > pred_threshold``."""
    return check_probs(probs) > pred_threshold


def ml_confidence(probs: np.ndarray, pred_threshold: float = 0.5) -> np.ndarray:
    """ML-confidence per sample (Eq. 2 as the paper's text and code define it), [N].

    The mean of the probabilities ``>= pred_threshold``; when no class reaches the
    threshold, the largest probability. (Eq. 2 as printed divides by C instead.)
    """
    p = check_probs(probs)
    above = p >= pred_threshold
    n_above = above.sum(1)
    mean_above = (p * above).sum(1) / np.maximum(n_above, 1)
    return np.where(n_above > 0, mean_above, p.max(1, initial=0.0))


def ml_accuracy(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """ML-accuracy per sample (Eq. 3): ``|y ∩ ŷ| / |y ∪ ŷ|``, [N].

    Both sets empty (no label, nothing predicted) counts as fully correct: 0/0 := 1.
    """
    y = np.asarray(labels).astype(bool)
    yhat = np.asarray(predictions).astype(bool)
    if y.shape != yhat.shape:
        raise ValueError(f"labels {y.shape} and predictions {yhat.shape} differ in shape")
    inter = (y & yhat).sum(-1)
    union = (y | yhat).sum(-1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def bin_index(confidence: np.ndarray, n_bins: int = 20, binning: str = "width") -> np.ndarray:
    """Bin of each sample, int [N].

    ``width``: M equal bins ``(m/M, (m+1)/M]``; confidence 0 goes to the first bin.
    ``count``: samples sorted by confidence (stable) and split into M groups whose sizes
    differ by at most one (as ``np.array_split``); equal confidences may straddle bins.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if n_bins < 1:
        raise ValueError(f"number of bins must be >= 1, got {n_bins}")
    if binning == "width":
        if conf.size and (not np.isfinite(conf).all() or conf.min() < 0 or conf.max() > 1):
            raise ValueError("confidences must be finite and in [0, 1]")
        # m = ceil(conf * M) - 1, computed against the float edges m/M so boundaries are exact
        edges = np.arange(1, n_bins + 1) / n_bins
        return np.searchsorted(edges, conf, side="left").clip(0, n_bins - 1)
    if binning == "count":
        order = np.argsort(conf, kind="stable")
        rank = np.empty(conf.size, np.int64)
        rank[order] = np.arange(conf.size)
        k, r = divmod(conf.size, n_bins)  # the first r bins hold k + 1 samples
        big = r * (k + 1)
        return np.where(rank < big, rank // (k + 1), r + (rank - big) // max(k, 1))
    raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")


@dataclass
class ECEResult:
    """ECE_ML and its reliability-diagram data; empty bins have NaN acc/conf."""

    ece: float
    n: int
    binning: str
    lo: np.ndarray      # [M] bin lower edges (count binning: smallest confidence in the bin)
    hi: np.ndarray      # [M] bin upper edges (count binning: largest confidence in the bin)
    count: np.ndarray   # [M]
    acc: np.ndarray     # [M] mean ML-accuracy in the bin
    conf: np.ndarray    # [M] mean ML-confidence in the bin

    def bins(self) -> list[dict]:
        """Per-bin records for JSON (``None`` for the accuracy/confidence of empty bins)."""
        def num(x: float) -> float | None:
            return None if not np.isfinite(x) else float(x)

        return [dict(lo=num(l), hi=num(h), count=int(c), acc=num(a), conf=num(f))
                for l, h, c, a, f in zip(self.lo, self.hi, self.count, self.acc, self.conf)]


def ece_ml(confidence: np.ndarray, accuracy: np.ndarray, n_bins: int = 20, binning: str = "width") -> ECEResult:
    """ECE_ML (Eq. 1 with the multi-label accuracy/confidence of Eq. 2-3, i.e. Eq. 4).

    ``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` over non-empty bins, a fraction.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    acc = np.asarray(accuracy, dtype=np.float64).reshape(-1)
    if conf.shape != acc.shape:
        raise ValueError(f"{conf.size} confidences but {acc.size} accuracies")
    if conf.size == 0:
        raise ValueError("ECE_ML needs at least one sample")
    if not np.isfinite(acc).all() or acc.min() < 0 or acc.max() > 1:
        raise ValueError("accuracies must be finite and in [0, 1]")
    b = bin_index(conf, n_bins, binning)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_bin = np.bincount(b, acc, n_bins) / count
        conf_bin = np.bincount(b, conf, n_bins) / count
    gap = np.where(count > 0, np.abs(acc_bin - conf_bin), 0.0)
    ece = float((count / conf.size * gap).sum())
    if binning == "width":
        lo, hi = np.arange(n_bins) / n_bins, np.arange(1, n_bins + 1) / n_bins
    else:
        lo = np.full(n_bins, np.nan)
        hi = np.full(n_bins, np.nan)
        np.fmin.at(lo, b, conf)
        np.fmax.at(hi, b, conf)
    return ECEResult(ece, int(conf.size), binning, lo, hi, count, acc_bin, conf_bin)


def ece_ml_from_probs(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = 20, binning: str = "width", pred_threshold: float = 0.5
) -> ECEResult:
    """ECE_ML straight from probabilities [N, C] and 0/1 labels [N, C]."""
    p = check_probs(probs)
    y = check_labels(labels, p.shape)
    return ece_ml(ml_confidence(p, pred_threshold), ml_accuracy(y, p > pred_threshold), n_bins, binning)
