"""Figures of the map metrics: loss against each metric (one small panel per metric).

Matplotlib's object API with the Agg canvas (no pyplot state); PNGs are written
atomically by :func:`dywsss.viz.reliability.save_figure`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .reliability import save_figure


def _vice_text(vice: float | None, ci: Sequence[float | None] | None = None) -> str:
    if vice is None or not np.isfinite(vice):
        return "VICE undefined"
    if ci is not None and all(v is not None and np.isfinite(v) for v in ci):
        return f"VICE = {vice:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"VICE = {vice:.3f}"


def _scatter(ax, loss: np.ndarray, value: np.ndarray, metric: str, note: str, sign: int = 1) -> None:
    ax.scatter(loss, value, s=7, alpha=0.5, color="#2776B7", edgecolors="none")
    ax.set_xlabel("loss")
    ax.set_ylabel(metric + ("" if sign > 0 else " (lower is better)"))
    ax.text(0.97, 0.95, f"{note}\nn = {len(loss)}", transform=ax.transAxes, ha="right", va="top", fontsize=9,
            bbox=dict(facecolor="white", edgecolor="lightgray", alpha=0.8))
    ax.grid(alpha=0.3)


def plot_loss_vs_metric(
    loss: np.ndarray, value: np.ndarray, path: str | os.PathLike, metric: str, title: str = "",
    vice: float | None = None, ci: Sequence[float | None] | None = None, sign: int = 1,
) -> Path:
    """One point per image: per-sample loss (Eq. 7) against a per-image map metric (as stored,
    not negated; ``sign`` -1 marks a lower-is-better metric)."""
    fig = Figure(figsize=(4.6, 4.0))
    ax = fig.subplots()
    _scatter(ax, np.asarray(loss), np.asarray(value), metric, _vice_text(vice, ci), sign)
    ax.set_title(title or f"loss vs {metric}", fontsize=10)
    return save_figure(fig, path)


def plot_loss_vs_metrics(
    loss: np.ndarray, values: Mapping[str, np.ndarray], path: str | os.PathLike,
    vices: Mapping[str, Mapping] | None = None, title: str = "", ncols: int = 4,
) -> Path:
    """Small multiples: loss against every metric of ``values`` ({column: [N]}, NaN left out per
    panel), each titled with its VICE [interval] from ``vices`` ({column: vice.json fields})."""
    names = list(values)
    if not names:
        raise ValueError("no metric to plot")
    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(3.1 * ncols, 2.8 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    loss = np.asarray(loss, dtype=np.float64)
    for ax, name in zip(axes, names):
        v = np.asarray(values[name], dtype=np.float64)
        ok = np.isfinite(v) & np.isfinite(loss)
        info = (vices or {}).get(name, {})
        _scatter(ax, loss[ok], v[ok], name, _vice_text(info.get("vice"), (info.get("ci_low"), info.get("ci_high"))),
                 int(info.get("sign", 1)))
        ax.set_title(name, fontsize=10)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
