"""Reliability diagram of ECE_ML: sample count per confidence bin, accuracy per bin vs the diagonal."""
from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_path
from ..metrics.calibration import ECEResult


_PROVENANCE: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("figure_provenance",
                                                                                     default=None)


@contextlib.contextmanager
def figure_provenance(provenance: Mapping[str, Any] | None) -> Iterator[None]:
    """Every figure saved inside the block records ``provenance`` (unless given its own)."""
    token = _PROVENANCE.set(provenance)
    try:
        yield
    finally:
        _PROVENANCE.reset(token)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150,
                provenance: Mapping[str, Any] | None = None) -> Path:
    """Render with Agg (no display, no LaTeX) and write the PNG atomically.

    ``provenance`` (what the figure was made from: input hashes, settings; default: the
    enclosing :func:`figure_provenance`) is stored in the PNG's text chunks
    (:func:`dywsss.provenance.read_png_provenance` reads it).
    """
    from ..provenance import png_metadata

    provenance = provenance if provenance is not None else _PROVENANCE.get()
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight",
                    metadata=png_metadata(provenance) if provenance else None)
    return Path(path)


def plot_reliability(result: ECEResult, acc_ml: float, path: str | os.PathLike, title: str = "",
                     provenance: Mapping[str, Any] | None = None) -> Path:
    """Two panels: samples per bin (top); mean ML-accuracy per bin against perfect
    calibration (bottom), with ECE_ML and the mean ML-accuracy printed, in percent."""
    fig = Figure(figsize=(5, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[1, 2.2]))
    lo, hi = result.lo, result.hi
    if result.binning == "width":
        centre, width = (lo + hi) / 2, hi - lo
    else:  # equal-count bins: draw each over the confidence range it covers
        lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)
        centre, width = (lo + hi) / 2, np.maximum(hi - lo, 0.005)
    top.bar(centre, result.count, width=width, color="#82B0D2", edgecolor="black", linewidth=0.5)
    top.set_ylabel("Samples")
    top.set_title(title or "Reliability diagram")
    acc = np.nan_to_num(result.acc)
    bottom.bar(centre, acc, width=width, color="#4D79C8", edgecolor="black", linewidth=0.5, label="ML-accuracy")
    gap_lo = np.minimum(acc, np.nan_to_num(result.conf))
    gap = np.abs(acc - np.nan_to_num(result.conf)) * (result.count > 0)
    bottom.bar(centre, gap, bottom=gap_lo, width=width, color="#FA7F6F", alpha=0.5, edgecolor="#C0504D",
               linewidth=0.5, label="Gap")
    bottom.plot([0, 1], [0, 1], "--", color="gray", label="Perfect calibration")
    bottom.set_xlim(0, 1)
    bottom.set_ylim(0, 1)
    bottom.set_xlabel("ML-confidence")
    bottom.set_ylabel("ML-accuracy")
    bottom.legend(loc="upper left", fontsize=8)
    bottom.text(0.97, 0.05, f"ECE$_{{ML}}$ = {100 * result.ece:.2f}%\nAccuracy = {100 * acc_ml:.2f}%",
                transform=bottom.transAxes, ha="right", va="bottom", fontsize=11,
                bbox=dict(facecolor="white", edgecolor="lightgray", alpha=0.8))
    return save_figure(fig, path, provenance=provenance)
