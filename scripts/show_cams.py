#!/usr/bin/env python
"""Image / class maps / ground truth / map mask panels for chosen images, one PNG each.

    python scripts/show_cams.py config/demo.py --names val_000000 val_000003 --options session_name=S weights=best.pth
    python scripts/show_cams.py config/resnet50.py --first 8 --map-dir work_dirs/S/test/cam_val_best --out vis/

Reads the map files of ``test/cam_<infer_list stem>_<weights stem>/`` (or --map-dir);
the mask panel is the per-pixel argmax over [eval_thresh, maps] used by the JI.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np

from dywsss.cli import run_main
from dywsss.config import add_config_args, data_path, load_config, session_paths
from dywsss.data.voc import CLASS_NAMES, image_path, load_image, load_mask, palette_rgb, read_image_list
from dywsss.mapfile import load_maps
from dywsss.metrics.segmentation import maps_to_mask

matplotlib.use("Agg")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dywsss.io import atomic_path  # noqa: E402


MAX_COLS = 6


def draw_panels(image: np.ndarray, classes: Sequence[int], cams: np.ndarray, gt: np.ndarray | None,
                t: float, title: str) -> Figure:
    """Panels (at most ``MAX_COLS`` a row): image, one overlay per class map, map mask at ``t``, ground truth."""
    n = 2 + len(classes) + (gt is not None)
    cols = min(n, MAX_COLS)
    rows = -(-n // cols)
    fig = Figure(figsize=(2.6 * cols, rows * (2.6 * image.shape[0] / image.shape[1] + 0.3)))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    axes = axes[:n]
    axes[0].imshow(image)
    axes[0].set_title(title, fontsize=8)
    for ax, c, m in zip(axes[1:], classes, cams):
        ax.imshow(image)
        ax.imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"{CLASS_NAMES[c]} (max {m.max():.2f})", fontsize=8)
    axes[1 + len(classes)].imshow(palette_rgb(maps_to_mask(np.asarray(classes), cams, t, image.shape[:2])))
    axes[1 + len(classes)].set_title(f"maps > {t:g}", fontsize=8)
    if gt is not None:
        axes[-1].imshow(palette_rgb(gt))
        axes[-1].set_title("ground truth", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def main() -> None:
    p = add_config_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument("--names", nargs="+", default=None, help="image ids (default: the first --first of infer_list)")
    p.add_argument("--first", type=int, default=6)
    p.add_argument("--map-dir", default=None, help="default: the session's test/cam_<list>_<weights>/")
    p.add_argument("--out", default=None, help="default: <map dir>_png/")
    args = p.parse_args()
    cfg = load_config(args.config, args.options)
    map_dir = Path(args.map_dir) if args.map_dir else session_paths(cfg).cam_dir(cfg.infer_list, cfg.weights, cfg.get("map_tag", ""))
    names = args.names or read_image_list(data_path(cfg, cfg.infer_list))[: args.first]
    out = Path(args.out) if args.out else map_dir.with_name(map_dir.name + "_png")
    for name in names:
        classes, cams = load_maps(map_dir / f"{name}.npz")
        image = load_image(image_path(cfg.voc12_root, name, cfg.img_dir))
        gt_file = Path(cfg.gt_dir) / f"{name}.png"
        gt = load_mask(cfg.gt_dir, name, image.shape) if gt_file.is_file() else None
        fig = draw_panels(image, classes.tolist(), cams, gt, float(cfg.eval_thresh), f"{name} ({cfg.cam_method})")
        FigureCanvasAgg(fig)
        with atomic_path(out / f"{name}.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        print(out / f"{name}.png")


if __name__ == "__main__":
    run_main(main)
