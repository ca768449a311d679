"""VICE (Eq. 8): consistency of per-sample loss and per-image JI, with its uncertainty."""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

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


def json_ready(result: Any) -> dict:
    """A result dataclass as a JSON-ready dict; undefined (non-finite) values become ``None``."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(result).items()}


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
        return json_ready(self)


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


# ------------------------------------------------------------------ beyond one JI column (issue 11)
def oriented(values: np.ndarray, orientation: int) -> np.ndarray:
    """``orientation * values`` (+1: higher is better; -1, e.g. deletion: lower is better, so negated)."""
    if orientation not in (1, -1):
        raise ValueError(f"orientation must be +1 or -1, got {orientation!r}")
    return orientation * np.asarray(values, dtype=np.float64)


def _last_axis(axis: int, *arrays: np.ndarray) -> list[np.ndarray]:
    return [np.moveaxis(a, axis, -1) for a in arrays]


@dataclass
class VICEComparison:
    """VICE of run A minus VICE of run B on the same images."""

    vice_a: float
    vice_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    ci_level: float
    n_boot: int
    n_permutations: int
    seed: int

    def summary(self) -> dict:
        return json_ready(self)


def compare_vice(
    loss_a: np.ndarray, metric_a: np.ndarray, loss_b: np.ndarray, metric_b: np.ndarray,
    n_boot: int = 2000, n_permutations: int = 9999, level: float = 0.95, seed: int = 0,
) -> VICEComparison:
    """Difference of VICE between two runs scored on the same images (rows aligned).

    Interval: paired percentile bootstrap (``scipy.stats.bootstrap(paired=True)``: each
    resample draws images, with both runs' values of an image kept together). p-value:
    paired permutation test (``scipy.stats.permutation_test(permutation_type='samples')``:
    under H0 the runs are exchangeable within an image, so each resample swaps the
    (loss, metric) pair of run A and run B of random images), two-sided.
    """
    xa, ya = _pair(loss_a, metric_a)
    xb, yb = _pair(loss_b, metric_b)
    if xa.size != xb.size:
        raise ValueError(f"run A has {xa.size} images, run B {xb.size}: compare runs on the same images")
    va, vb = vice_coefficient(xa, ya), vice_coefficient(xb, yb)
    n = int(xa.size)
    nan = float("nan")
    if not (np.isfinite(va) and np.isfinite(vb)):
        return VICEComparison(va, vb, nan, nan, nan, nan, n, level, n_boot, n_permutations, seed)

    def difference(la, ma, lb, mb, axis=-1):
        la, ma, lb, mb = _last_axis(axis, la, ma, lb, mb)
        return _pearson_rows(-la, ma) - _pearson_rows(-lb, mb)

    boot = stats.bootstrap((xa, ya, xb, yb), difference, paired=True, vectorized=True, n_resamples=n_boot,
                           confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])

    def swapped(ia, ib, axis=-1):  # image indices of run A's rows and run B's rows after the swaps
        ia, ib = _last_axis(axis, ia, ib)
        return _pearson_rows(-x[ia], y[ia]) - _pearson_rows(-x[ib], y[ib])

    idx = np.arange(n)
    perm = stats.permutation_test((idx, idx + n), swapped, permutation_type="samples", vectorized=True,
                                  n_resamples=n_permutations, rng=np.random.default_rng(seed))
    lo, hi = boot.confidence_interval
    return VICEComparison(va, vb, va - vb, float(lo), float(hi), float(perm.pvalue), n, level, n_boot,
                          n_permutations, seed)


def per_class_vice(
    loss: np.ndarray, metric: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] | None = None,
    n_boot: int = 2000, level: float = 0.95, seed: int = 0,
) -> dict[str, dict]:
    """VICE over the images that contain each class (``labels`` multi-hot [N, C]).

    Per class: the :func:`vice` summary (n, interval, Spearman, p), or, with fewer than
    3 images or a constant column, ``vice = None`` and ``reason``.
    """
    x, y = _pair(loss, metric)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != x.size:
        raise ValueError(f"labels must be [N, C] with N = {x.size}, got {labels.shape}")
    names = class_names or tuple(str(c) for c in range(labels.shape[1]))
    out = {}
    for c, name in enumerate(names):
        sel = labels[:, c] > 0
        if not sel.any():
            continue
        reason = _undefined_reason(x[sel], y[sel])
        if reason:
            out[name] = {"vice": None, "n": int(sel.sum()), "reason": reason}
        else:
            out[name] = vice(x[sel], y[sel], n_boot=n_boot, level=level, seed=seed).summary()
    return out


def _partial_rows(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Partial Pearson correlation of x and y given the columns of z, along the last axis.

    x, y [..., n]; z [..., k, n]. Equals the correlation of the residuals of x and y
    after least squares on (1, z) (the precision-matrix identity
    ``r = -P_xy / sqrt(P_xx P_yy)``, P the pseudo-inverse of the covariance of (x, y, z);
    a constant covariate drops out, as it would with the intercept).
    """
    data = np.concatenate([x[..., None, :], y[..., None, :], z], axis=-2)
    data = data - data.mean(-1, keepdims=True)
    cov = data @ np.swapaxes(data, -1, -2) / data.shape[-1]
    prec = np.linalg.pinv(cov, hermitian=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return -prec[..., 0, 1] / np.sqrt(prec[..., 0, 0] * prec[..., 1, 1])


@dataclass
class PartialVICE:
    """VICE after removing what covariates explain linearly from both -loss and the metric."""

    partial_vice: float
    n: int
    covariates: list[str]
    ci_low: float
    ci_high: float
    p_value: float
    ci_level: float
    n_boot: int
    seed: int

    def summary(self) -> dict:
        return json_ready(self)


def partial_vice(
    loss: np.ndarray, metric: np.ndarray, covariates: np.ndarray, names: list[str] | None = None,
    n_boot: int = 2000, level: float = 0.95, seed: int = 0,
) -> PartialVICE:
    """Partial VICE: the Pearson correlation of the residuals of -loss and of the metric after a
    linear regression (with intercept) on ``covariates`` [N, k] (e.g. object area fraction and
    object count). Interval: percentile bootstrap over images (``scipy.stats.bootstrap``, paired);
    p: t-test of a partial correlation with ``n - 2 - rank(covariates)`` degrees of freedom."""
    x, y = _pair(loss, metric)
    z = np.asarray(covariates, dtype=np.float64).reshape(x.size, -1)
    names = names or [f"z{j}" for j in range(z.shape[1])]
    if not np.isfinite(z).all():
        raise ValueError(f"covariates {names} contain NaN or inf at rows "
                         f"{np.flatnonzero(~np.isfinite(z).all(1))[:5].tolist()}")
    k = int(np.linalg.matrix_rank(z - z.mean(0))) if x.size else 0
    nan = float("nan")
    df = x.size - 2 - k
    if _undefined_reason(x, y) or df < 1:
        return PartialVICE(nan, int(x.size), names, nan, nan, nan, level, n_boot, seed)
    r = float(np.clip(_partial_rows(-x, y, z.T), -1, 1))

    def statistic(xs, ys, *zs, axis=-1):
        xs, ys, *zs = _last_axis(axis, xs, ys, *zs)
        return _partial_rows(-xs, ys, np.stack(zs, axis=-2))

    boot = stats.bootstrap((x, y, *z.T), statistic, paired=True, vectorized=True, n_resamples=n_boot,
                           confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    t = r * np.sqrt(df / max(1e-300, 1 - r * r))
    p = float(2 * stats.t.sf(abs(t), df))
    lo, hi = boot.confidence_interval
    return PartialVICE(r, int(x.size), list(names), float(lo), float(hi), p, level, n_boot, seed)
