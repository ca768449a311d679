"""Probe-study figures ("How to Probe" Figs. E16-E19): accuracy against a localisation metric, per probe.

One figure per metric: a panel per (accuracy measure, method); one point per probe, the marker
naming the head and the colour the loss, a grey segment joining the CE and the BCE probe of the
same head (the paper's comparison); correlations are drawn with their interval.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .reliability import save_figure

PathLike = str | os.PathLike
LOSS_COLOURS = {"bce": "#2776B7", "ce": "#E07B39"}
HEAD_MARKERS = {"linear": "o", "mlp2": "s", "mlp3": "D", "bcos_linear": "v", "bcos_mlp2": "^", "bcos_mlp3": "P"}


def plot_probe_metric(rows: pd.DataFrame, metric: str, path: PathLike, label: str,
                      x_columns: Mapping[str, str] | None = None, percent: bool = True,
                      interval: tuple[str, str] | None = None, methods: Sequence[str] | None = None,
                      title: str = "") -> Path:
    """``rows`` (one per probe and method: ``head``, ``loss``, ``method``, the x columns and ``metric``, values
    as stored) -> a grid of panels: one row per x column (``{column: axis label}``, default F1 and mAP), one
    column per method. ``percent`` scales ``metric`` by 100; ``interval`` names its low/high columns."""
    x_columns = dict(x_columns or {"f1": "F1 %", "map": "mAP %"})
    methods = list(methods or dict.fromkeys(rows["method"]))
    fig = Figure(figsize=(3.2 * len(methods) + 1.6, 2.8 * len(x_columns)))
    axes = np.asarray(fig.subplots(len(x_columns), len(methods), squeeze=False))
    scale = 100.0 if percent else 1.0
    for i, (xcol, xlabel) in enumerate(x_columns.items()):
        for j, method in enumerate(methods):
            ax = axes[i, j]
            sub = rows[rows["method"] == method]
            for head, group in sub.groupby("head", sort=False):
                pts = {r["loss"]: (100.0 * float(r[xcol]), scale * float(r[metric])) for _, r in group.iterrows()
                       if pd.notna(r[xcol]) and pd.notna(r[metric])}
                if "bce" in pts and "ce" in pts:
                    (x0, y0), (x1, y1) = pts["ce"], pts["bce"]
                    ax.plot([x0, x1], [y0, y1], color="0.7", lw=1, zorder=1)
                for _, r in group.iterrows():
                    if r["loss"] not in pts:
                        continue
                    x, y = pts[r["loss"]]
                    colour = LOSS_COLOURS.get(r["loss"], "0.3")
                    if interval is not None and pd.notna(r[interval[0]]) and pd.notna(r[interval[1]]):
                        ax.errorbar(x, y, yerr=[[y - scale * r[interval[0]]], [scale * r[interval[1]] - y]],
                                    fmt="none", ecolor=colour, elinewidth=0.8, capsize=2, zorder=2)
                    ax.scatter([x], [y], marker=HEAD_MARKERS.get(head, "X"), color=colour, s=36, zorder=3,
                               edgecolors="black", linewidths=0.4)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(method, fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    heads = list(dict.fromkeys(rows["head"]))
    handles = [Line2D([], [], ls="", marker=HEAD_MARKERS.get(h, "X"), color="0.5", label=h) for h in heads]
    handles += [Line2D([], [], ls="", marker="o", color=c, label=loss.upper())
                for loss, c in LOSS_COLOURS.items() if loss in set(rows["loss"])]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.subplots_adjust(right=1 - 1.4 / fig.get_figwidth(), hspace=0.45, wspace=0.3)
    fig.suptitle(title or f"{label} against accuracy, per probe (grey: CE to BCE of one head)", fontsize=10)
    return save_figure(fig, path)
