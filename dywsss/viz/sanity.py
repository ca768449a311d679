"""Figures of the sanity checks: the cascading-randomisation panel and the metrics per step."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .reliability import save_figure

CURVES = (("spearman", "Spearman vs original", "#1f5fa8"), ("ssim", "SSIM vs original", "#6aa84f"),
          ("ji", "JI", "#b03a2e"), ("epg", "EPG", "#e69138"), ("vice", "VICE", "#674ea7"))


def plot_sanity_cascade(images: Sequence[np.ndarray], step_maps: Sequence[Sequence[np.ndarray]],
                        step_names: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Adebayo et al.'s panel: rows = images, columns = the original maps, then the maps after each
    cumulative re-initialisation step (head first). Each panel shows the image's first class map."""
    rows, cols = len(images), len(step_names)
    if rows == 0:
        raise ValueError("no example image for the cascade figure")
    fig = Figure(figsize=(1.25 * (cols + 1), 1.3 * rows + 0.6))
    axes = fig.subplots(rows, cols + 1, squeeze=False)
    for r, img in enumerate(images):
        axes[r][0].imshow(img)
        for c in range(cols):
            m = step_maps[c][r]
            axes[r][c + 1].imshow(m[0] if len(m) else np.zeros(img.shape[:2]), cmap="jet", vmin=0, vmax=1)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("image", fontsize=7)
    for c, name in enumerate(step_names):
        axes[0][c + 1].set_title(name if c == 0 else f"+ {name}", fontsize=7, rotation=45, ha="left", va="bottom")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sanity_curves(steps: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Each metric after each cascade step (x: cumulative re-initialisation, head first)."""
    fig = Figure(figsize=(max(5.0, 0.55 * len(steps) + 2), 3.6))
    ax = fig.subplots()
    x = np.arange(len(steps))
    for key, label, colour in CURVES:
        y = np.array([np.nan if s.get(key) is None else s[key] for s in steps], dtype=float)
        if np.isfinite(y).any():
            ax.plot(x, y, "-o", ms=3, color=colour, label=label)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xticks(x)
    ax.set_xticklabels([s["step"] for s in steps], rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("cumulative re-initialisation (output to input)")
    ax.set_ylim(-1.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title or "cascading randomisation", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
