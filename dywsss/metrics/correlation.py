"""Correlation of two quantities across models (or images): Pearson and Spearman, p-values, bootstrap interval.

One home for the across-model statistics of beyond-spec §2.1 step 5 (consensus
score against accuracy) and §3.3 (explainability against clean/OOD accuracy).
``scipy.stats.pearsonr`` / ``spearmanr`` give the coefficients and two-sided
p-values; ``scipy.stats.bootstrap`` (paired: models are resampled with their
pair of values) gives the interval of each coefficient.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

MIN_PAIRS = 3


@dataclass(frozen=True)
class Correlation:
    """Pearson r and Spearman rho of ``(x, y)`` over ``n`` pairs; NaN where undefined.

    ``*_ci_low/high``: percentile bootstrap interval at ``ci_level`` (NaN when no
    bootstrap was asked for); ``dropped``: resamples without a defined coefficient
    (constant x or y), left out of the interval. ``reason`` says why the
    coefficients are undefined ("" when they are defined).
    """

    n: int
    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float
    pearson_ci_low: float = float("nan")
    pearson_ci_high: float = float("nan")
    spearman_ci_low: float = float("nan")
    spearman_ci_high: float = float("nan")
    ci_level: float = 0.95
    n_boot: int = 0
    seed: int = 0
    dropped: int = 0
    reason: str = ""

    def summary(self) -> dict:
        """JSON-ready dict; undefined numbers become ``None``."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"correlation: {x.size} x values but {y.size} y values")
    keep = np.isfinite(x) & np.isfinite(y)  # a model without a value (unfinished run) is left out
    return x[keep], y[keep]


def undefined_reason(x: np.ndarray, y: np.ndarray) -> str:
    """Why no correlation exists for these (finite) pairs, or ""."""
    if x.size < MIN_PAIRS:
        return f"needs at least {MIN_PAIRS} pairs, got {x.size}"
    if np.ptp(x) == 0:
        return "x is constant"
    if np.ptp(y) == 0:
        return "y is constant"
    return ""


def _pearson_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    xm = x - x.mean(axis, keepdims=True)
    ym = y - y.mean(axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((xm * ym).sum(axis) / np.sqrt((xm * xm).sum(axis) * (ym * ym).sum(axis)), -1.0, 1.0)


def _spearman_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho = Pearson of average ranks (ties share their mean rank), as scipy defines it."""
    return _pearson_along(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis)


def _interval(statistic, x: np.ndarray, y: np.ndarray, n_boot: int, level: float,
              seed: int) -> tuple[float, float, int]:
    """Paired percentile bootstrap; resamples with a constant side give NaN and are dropped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on NaN / degenerate resamples; counted below
        res = stats.bootstrap((x, y), statistic, paired=True, vectorized=True, n_resamples=n_boot,
                              confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution)
    dropped = int(np.isnan(dist).sum())
    if dropped == 0:
        return float(res.confidence_interval.low), float(res.confidence_interval.high), 0
    if dropped == dist.size:
        return float("nan"), float("nan"), dropped
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(dist, [alpha, 1 - alpha])  # the percentile method on the defined resamples
    return float(lo), float(hi), dropped


def correlate(x: np.ndarray, y: np.ndarray, n_boot: int = 0, level: float = 0.95, seed: int = 0) -> Correlation:
    """Pearson and Spearman of ``(x, y)`` with two-sided p-values and, for ``n_boot > 0``, paired
    percentile bootstrap intervals. Pairs with a NaN on either side are left out."""
    x, y = _pair(x, y)
    reason = undefined_reason(x, y)
    nan = float("nan")
    if reason:
        return Correlation(int(x.size), nan, nan, nan, nan, ci_level=level, n_boot=n_boot, seed=seed, reason=reason)
    pr = stats.pearsonr(x, y)
    sr = stats.spearmanr(x, y)
    out = dict(n=int(x.size), pearson=float(pr.statistic), pearson_p=float(pr.pvalue),
               spearman=float(sr.statistic), spearman_p=float(sr.pvalue), ci_level=level, n_boot=n_boot, seed=seed)
    if n_boot > 0:
        p_lo, p_hi, d1 = _interval(_pearson_along, x, y, n_boot, level, seed)
        s_lo, s_hi, d2 = _interval(_spearman_along, x, y, n_boot, level, seed)
        out.update(pearson_ci_low=p_lo, pearson_ci_high=p_hi, spearman_ci_low=s_lo, spearman_ci_high=s_hi,
                   dropped=max(d1, d2))
    return Correlation(**out)
