"""VICE (Eq. 8): consistency of per-sample loss and per-image JI, with its uncertainty."""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

MIN_SAMPLES = 3


def _pair(loss: np.ndarray, ji: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(loss, dtype=np.float64).reshape(-1)
    y = np.asarray(ji, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} losses but {y.size} JI values")
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise ValueError(f"loss/JI contain NaN or inf at rows {np.flatnonzero(bad)[:5].tolist()}")
    return x, y


def _undefined_reason(x: np.ndarray, y: np.ndarray) -> str | None:
    if x.size < MIN_SAMPLES:
        return f"needs at least {MIN_SAMPLES} samples, got {x.size}"
    if np.ptp(x) == 0:
        return "the loss is constant"
    if np.ptp(y) == 0:
        return "the JI is constant"
    return None


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis (NaN where a row is constant)."""
    xm = x - x.mean(-1, keepdims=True)
    ym = y - y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xm * ym).sum(-1) / np.sqrt((xm * xm).sum(-1) * (ym * ym).sum(-1))


def vice_coefficient(loss: np.ndarray, ji: np.ndarray) -> float:
    """VICE (Eq. 8): Pearson correlation of ``(-loss_i, JI_i)`` over the images.

    Higher means explanations and performance agree more. NaN with a warning when
    undefined (fewer than 3 samples, constant loss or constant JI).
    """
    x, y = _pair(loss, ji)
    reason = _undefined_reason(x, y)
    if reason:
        warnings.warn(f"VICE undefined: {reason}; returning NaN", stacklevel=2)
        return float("nan")
    return float(np.clip(_pearson_rows(-x, y), -1.0, 1.0))


def bootstrap_ci(
    loss: np.ndarray, ji: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0, chunk: int = 256
) -> tuple[float, float]:
    """Percentile bootstrap interval of VICE: images resampled with replacement, seeded.

    Resamples are drawn in vectorised chunks; a resample whose loss or JI is constant
    has no correlation and is dropped (warned when any are).
    """
    x, y = _pair(loss, ji)
    if _undefined_reason(x, y) or n_boot < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, x.size, size=(min(chunk, n_boot - start), x.size))
        out.append(_pearson_rows(-x[idx], y[idx]))
    r = np.concatenate(out)
    n_bad = int(np.isnan(r).sum())
    if n_bad:
        warnings.warn(f"VICE bootstrap: {n_bad} of {n_boot} resamples had constant loss or JI and were dropped",
                      stacklevel=2)
    if n_bad == r.size:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(r, [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclass
class VICEResult:
    vice: float
    n: int
    ci_low: float
    ci_high: float
    spearman: float
    p_value: float
    ci_level: float
    n_boot: int
    seed: int

    def summary(self) -> dict:
        """JSON-ready dict; undefined values become ``None``."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def vice(loss: np.ndarray, ji: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> VICEResult:
    """VICE with what a reader needs beside it: n, a percentile bootstrap interval,
    Spearman's rank correlation of ``(-loss, JI)`` and the two-sided p-value of the
    Pearson correlation (t-test, H0: no correlation)."""
    x, y = _pair(loss, ji)
    v = vice_coefficient(x, y)
    if np.isnan(v):
        nan = float("nan")
        return VICEResult(nan, int(x.size), nan, nan, nan, nan, level, n_boot, seed)
    lo, hi = bootstrap_ci(x, y, n_boot, level, seed)
    rho = float(stats.spearmanr(-x, y).statistic)
    p = float(stats.pearsonr(-x, y).pvalue)
    return VICEResult(v, int(x.size), lo, hi, rho, p, level, n_boot, seed)


def loss_bins(loss: np.ndarray, ji: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images sorted by loss (stable) and split into ``n_bins`` equal-count bins (sizes
    differ by at most one, the larger first): ``(mean loss, mean JI, count)`` per bin."""
    x, y = _pair(loss, ji)
    if not 1 <= n_bins <= x.size:
        raise ValueError(f"number of loss bins must be in 1..{x.size} (the number of images), got {n_bins}")
    order = np.argsort(x, kind="stable")
    k, r = divmod(x.size, n_bins)
    count = np.full(n_bins, k) + (np.arange(n_bins) < r)
    b = np.repeat(np.arange(n_bins), count)
    return (np.bincount(b, x[order], n_bins) / count, np.bincount(b, y[order], n_bins) / count, count)
