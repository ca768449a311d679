"""Figure of a method comparison on one model: map quality per method, and VICE [95% CI] per metric.

Matplotlib's object API with the Agg canvas; written atomically by
:func:`dywsss.viz.reliability.save_figure` (wrap the call in ``figure_provenance``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .reliability import save_figure

_LABEL = {"miou": "best mIoU", "epg": "EPG", "pg": "PG", "insertion": "insertion", "deletion": "deletion\n(lower better)"}


def _offsets(n: int, width: float) -> np.ndarray:
    return (np.arange(n) - (n - 1) / 2) * width


def plot_method_comparison(frame: pd.DataFrame, path: str | os.PathLike, metrics: Sequence[str],
                           title: str = "") -> Path:
    """Left: each metric's dataset value per method (grouped bars; ``miou`` is ``best_miou`` as a fraction).
    Right: VICE of each metric per method with its bootstrap 95% interval (whiskers); missing values are
    left out. ``frame``: the rows of :func:`dywsss.report.compare.collect_comparison`."""
    methods = list(frame["method"])
    if not methods:
        raise ValueError("no method to plot")
    fig = Figure(figsize=(max(9.0, 1.6 * len(metrics) * 2 + 2), 4.2))
    ax_val, ax_vice = fig.subplots(1, 2)
    x = np.arange(len(metrics), dtype=float)
    width = 0.8 / len(methods)
    colors = [f"C{i % 10}" for i in range(len(methods))]
    for i, (method, off) in enumerate(zip(methods, _offsets(len(methods), width))):
        row = frame.iloc[i]
        vals = np.array([row["best_miou" if m == "miou" else m] for m in metrics], dtype=float)
        ok = np.isfinite(vals)
        ax_val.bar(x[ok] + off, vals[ok], width, color=colors[i], label=method)
        v = np.array([row[f"vice_{m}"] for m in metrics], dtype=float)
        lo = np.array([row[f"vice_{m}_ci_low"] for m in metrics], dtype=float)
        hi = np.array([row[f"vice_{m}_ci_high"] for m in metrics], dtype=float)
        ok = np.isfinite(v)
        err = np.vstack([v - lo, hi - v])[:, ok]
        err = np.where(np.isfinite(err), err, 0.0)
        ax_vice.errorbar(x[ok] + off, v[ok], yerr=err, fmt="o", ms=4, capsize=2, color=colors[i], label=method)
    for ax, ylabel in ((ax_val, "dataset value"), (ax_vice, "VICE [95% CI]")):
        ax.set_xticks(x, [_LABEL.get(m, m) for m in metrics], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    ax_val.set_ylim(0, 1)
    ax_val.set_title("map quality (fractions)", fontsize=10)
    ax_vice.axhline(0.0, color="gray", lw=0.8)
    ax_vice.set_title("VICE per metric (deletion negated: higher is better)", fontsize=10)
    ax_val.legend(fontsize=8, ncols=min(3, len(methods)), loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
