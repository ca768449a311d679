#!/usr/bin/env python
"""GridPG of a trained model: localisation on seeded grids of confidently classified images.

    python scripts/gridpg.py config/demo.py --options session_name=S weights=best.pth eval_list=val.txt
    python scripts/gridpg.py config/demo.py --options session_name=S --grid 3 --n-grids 500 --smooth none

Writes gridpg.csv (one row per grid cell), gridpg.json (the mean and its settings, sha256 of
the weights and inputs) and gridpg.png (example grids) to work_dirs/S/eval/<list>_<weights>/.
The command-line flags override the config keys gridpg_grid, gridpg_n_grids, gridpg_min_conf,
gridpg_max_per_class, gridpg_smooth, gridpg_seed, gridpg_batch_size, gridpg_n_examples.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402
from dywsss.config import add_config_args, load_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = add_config_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument("--grid", type=int, choices=(2, 3), default=None, help="cells per side (config gridpg_grid, 2)")
    p.add_argument("--n-grids", type=int, default=None, help="number of grids (gridpg_n_grids, 100)")
    p.add_argument("--min-conf", type=float, default=None, help="confidence of a candidate (gridpg_min_conf, 0.95)")
    p.add_argument("--max-per-class", type=int, default=None, help="candidates kept per class (100)")
    p.add_argument("--smooth", choices=("none", "mean5"), default=None, help="map smoothing (gridpg_smooth, mean5)")
    p.add_argument("--seed", type=int, default=None, help="grid seed (gridpg_seed, else random_seed)")
    p.add_argument("--batch-size", type=int, default=None, help="grids per explainer call (gridpg_batch_size, 4)")
    p.add_argument("--examples", type=int, default=None, help="grids in the figure (gridpg_n_examples, 4)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from dywsss.engine.gridpg import GridPGSettings, run_gridpg
    from dywsss.viz.gridpg import plot_gridpg_examples

    args = parse_args(argv)
    cfg = load_config(args.config, args.options)
    settings = GridPGSettings.from_cfg(cfg, grid=args.grid, n_grids=args.n_grids, min_conf=args.min_conf,
                                       max_per_class=args.max_per_class, smooth=args.smooth, seed=args.seed,
                                       batch_size=args.batch_size, n_examples=args.examples)
    res = run_gridpg(cfg, settings=settings)
    s = res.summary
    mean = "undefined" if s["gridpg"] is None else f"{s['gridpg']:.4f}"
    png = plot_gridpg_examples(res.examples, settings.grid, res.figure_path, title=f"GridPG {cfg.cam_method}: {mean}")
    print(f"[gridpg] {cfg.cam_method}: GridPG = {mean} over {s['n_cells'] - s['n_skipped']} cells of "
          f"{s['n_grids']} {settings.grid}x{settings.grid} grids; wrote {res.json_path}, {res.csv_path}, {png}")
    return 0


if __name__ == "__main__":
    run_main(main)
