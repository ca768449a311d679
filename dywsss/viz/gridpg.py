"""GridPG example figure: each grid, then the map of each cell's class with its target cell outlined."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..data.voc import CLASS_NAMES
from .reliability import save_figure

Example = tuple[np.ndarray, np.ndarray, Sequence[int], Sequence[float]]  # image, maps, classes, scores


def plot_gridpg_examples(examples: Sequence[Example], grid: int, path: str | os.PathLike, title: str = "") -> Path:
    """Rows = example grids; columns = the grid image, then one map per cell (target cell in white).

    ``examples``: (grid image uint8 [G, G, 3], maps [g*g, G, G] >= 0, cell classes, cell scores).
    """
    n = max(1, len(examples))
    cols = 1 + grid * grid
    fig = Figure(figsize=(1.9 * cols, 2.0 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    for r in range(n):
        for ax in axes[r]:
            ax.set_axis_off()
        if r >= len(examples):
            axes[r][0].text(0.5, 0.5, "no grid", ha="center", va="center")
            continue
        image, maps, classes, scores = examples[r]
        side = image.shape[0]
        cell = side / grid
        axes[r][0].imshow(image)
        for i, c in enumerate(classes):
            y, x = divmod(i, grid)
            axes[r][0].text(x * cell + 3, y * cell + 3, CLASS_NAMES[c], color="white", fontsize=6, va="top",
                            bbox=dict(facecolor="black", alpha=0.5, pad=1, edgecolor="none"))
        axes[r][0].set_title("grid", fontsize=8)
        for i, (c, s) in enumerate(zip(classes, scores)):
            ax = axes[r][1 + i]
            ax.imshow(image)
            m = maps[i]
            ax.imshow(m / m.max() if m.max() > 0 else m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            y, x = divmod(i, grid)
            ax.add_patch(Rectangle((x * cell - 0.5, y * cell - 0.5), cell, cell, fill=False, edgecolor="white",
                                   linewidth=1.5))
            ax.set_title(f"{CLASS_NAMES[c]}: {'n/a' if not np.isfinite(s) else f'{s:.2f}'}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
