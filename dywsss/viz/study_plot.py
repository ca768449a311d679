"""Study figures: the cross-model scatter matrix, committee robustness, consensus score against accuracy."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .reliability import save_figure

PathLike = str | os.PathLike


def plot_scatter_matrix(frame: pd.DataFrame, columns: Sequence[str], path: PathLike,
                        labels: Mapping[str, str] | None = None, pearson: Mapping[tuple[str, str], float] | None = None,
                        title: str = "") -> Path:
    """Lower-triangle scatter matrix of ``columns`` (one point per model, named when few); the
    diagonal names the quantity; ``pearson[(x, y)]`` is printed in the panel of y against x."""
    labels = dict(labels or {})
    k = len(columns)
    side = max(1.4, min(2.2, 16.0 / max(k, 1)))
    fig = Figure(figsize=(side * k, side * k))
    axes = np.asarray(fig.subplots(k, k, squeeze=False))
    names = [str(n) for n in frame.index]
    for i, y in enumerate(columns):
        for j, x in enumerate(columns):
            ax = axes[i, j]
            if j > i:
                ax.remove()
                continue
            if i == j:
                ax.axis("off")
                ax.text(0.5, 0.5, labels.get(x, x), ha="center", va="center", fontsize=8, wrap=True,
                        transform=ax.transAxes)
                continue
            xv, yv = frame[x].to_numpy(float), frame[y].to_numpy(float)
            ax.scatter(xv, yv, s=12, color="#2776B7")
            if len(names) <= 8:
                for n, a, b in zip(names, xv, yv):
                    if np.isfinite(a) and np.isfinite(b):
                        ax.annotate(n, (a, b), fontsize=5, xytext=(2, 2), textcoords="offset points")
            r = (pearson or {}).get((x, y))
            if r is not None and np.isfinite(r):
                ax.text(0.03, 0.95, f"r={r:.2f}", transform=ax.transAxes, va="top", fontsize=7)
            ax.locator_params(nbins=3)
            ax.tick_params(labelsize=6, labelbottom=i == k - 1, labelleft=j == 0)
            if i == k - 1:
                ax.set_xlabel(labels.get(x, x), fontsize=7)
            if j == 0:
                ax.set_ylabel(labels.get(y, y), fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_committee_size(robustness: pd.DataFrame, path: PathLike, member_map: Sequence[float] | None = None,
                        title: str = "") -> Path:
    """Committee size (spec §2.2, Fig. 8): per size, the Pearson of all members' scores against the
    sub-committee with those against the full committee, and the sub-committee consensus's mAP
    (mean ± sd over trials, trials as dots); the members' own mAP as dashed lines."""
    df = robustness[robustness["kind"].isin(["size", "full"])]
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, col, ylabel in ((left, "pearson_vs_full", "Pearson with full committee"),
                            (right, "mean_ap", "consensus mAP vs masks")):
        g = df.groupby("size")[col]
        sizes = np.array(sorted(df["size"].unique()))
        mean, sd = g.mean().reindex(sizes).to_numpy(), g.std(ddof=0).reindex(sizes).fillna(0).to_numpy()
        ax.scatter(df["size"], df[col], s=8, color="#9BBBE0", alpha=0.7, label="committee")
        ax.errorbar(sizes, mean, yerr=sd, fmt="-o", color="#2776B7", markersize=4, capsize=3, label="mean ± sd")
        ax.set_xlabel("committee size")
        ax.set_ylabel(ylabel)
        ax.set_xticks(sizes)
    for v in ([] if member_map is None else member_map):
        if np.isfinite(v):
            right.axhline(v, color="#C0504D", linestyle="--", linewidth=0.8, alpha=0.6)
    right.plot([], [], color="#C0504D", linestyle="--", label="members' own mAP")
    right.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_committee_swap(robustness: pd.DataFrame, path: PathLike, title: str = "") -> Path:
    """Committee swap (spec §2.2): Pearson of the evaluated models' scores against each swapped
    committee with their scores against the full one, one dot per committee."""
    df = robustness[robustness["kind"] == "swap"]
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    v = df["pearson_vs_full"].to_numpy(float)
    jitter = np.random.default_rng(0).uniform(-0.08, 0.08, v.size)
    ax.scatter(df["size"] + jitter, v, s=14, color="#2776B7")
    ok = v[np.isfinite(v)]
    if ok.size:
        ax.axhline(ok.mean(), color="gray", linestyle="--", linewidth=0.8)
        ax.text(0.02, 0.04, f"mean {ok.mean():.3f} (sd {ok.std():.3f}), {ok.size} committees",
                transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("committee size")
    ax.set_ylabel("Pearson with full committee")
    ax.set_title(title or "Committee swap")
    return save_figure(fig, path)


def plot_score_vs_metric(scores: Sequence[float], values: Sequence[float], names: Sequence[str], path: PathLike,
                         xlabel: str, ylabel: str, r: float | None = None, title: str = "") -> Path:
    """Consensus score of each member against one of its metrics (spec §2.2, Fig. 5)."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.scatter(scores, values, s=18, color="#2776B7")
    for n, a, b in zip(names, scores, values):
        ax.annotate(str(n), (a, b), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if r is not None and np.isfinite(r):
        ax.text(0.03, 0.95, f"Pearson r = {r:.3f}", transform=ax.transAxes, va="top", fontsize=9)
    ax.set_title(title)
    return save_figure(fig, path)
