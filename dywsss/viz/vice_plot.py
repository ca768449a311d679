"""VICE figures: mean JI and mean loss per equal-count loss bin; loss vs JI scatter."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.figure import Figure

from .reliability import save_figure


def _vice_label(vice: float | None) -> str:
    return "VICE undefined" if vice is None or not np.isfinite(vice) else f"VICE = {vice:.3f}"


def plot_vice_bins(
    mean_loss: np.ndarray, mean_ji: np.ndarray, path: str | os.PathLike, title: str = "", vice: float | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Images sorted by loss in equal-count bins: mean JI (line) and mean loss (bars) per bin."""
    idx = np.arange(1, len(mean_loss) + 1)
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    ax.bar(idx, mean_loss, width=0.8, color="#F8AC8C", edgecolor="#F8AC8C", label="Loss")
    ax.plot(idx, mean_ji, "-o", color="#2776B7", markersize=3, label="JI score")
    ax.set_xlabel("The index of loss bin")
    ax.set_ylabel("JI score / Loss")
    ax.set_title(title)
    ax.set_ylim(0, max(0.8, float(np.nanmax(np.r_[mean_loss, mean_ji])) * 1.25))
    ax.legend(loc="upper right")
    ax.text(0.05, 0.93, _vice_label(vice), transform=ax.transAxes, ha="left", va="top", fontsize=13,
            bbox=dict(facecolor="white", edgecolor="lightgray", alpha=0.8))
    return save_figure(fig, path, provenance=provenance)


def plot_loss_vs_ji(
    loss: np.ndarray, ji: np.ndarray, path: str | os.PathLike, title: str = "", vice: float | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """One point per image: per-sample loss (Eq. 7) against per-image JI (Eq. 6)."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.scatter(loss, ji, s=8, alpha=0.5, color="#2776B7", edgecolors="none")
    ax.set_xlabel("Loss")
    ax.set_ylabel("JI score")
    ax.set_title(title)
    ax.text(0.97, 0.95, f"{_vice_label(vice)}\nn = {len(loss)}", transform=ax.transAxes, ha="right", va="top",
            fontsize=11, bbox=dict(facecolor="white", edgecolor="lightgray", alpha=0.8))
    return save_figure(fig, path, provenance=provenance)
