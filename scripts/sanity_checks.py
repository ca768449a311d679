#!/usr/bin/env python
"""Sanity checks of a run's maps (Adebayo et al. 2018): cascading randomisation and the random-logit test.

    python scripts/sanity_checks.py config/demo.py --options session_name=S weights=best.pth eval_list=val.txt
    python scripts/sanity_checks.py config/demo.py --options session_name=S --n-images 64

Re-initialises the network from the head downward, regenerates the maps of cam_method on a
fixed subset after each step, and writes to work_dirs/S/eval/<list>_<weights>/:
sanity.json (per step: Spearman and SSIM against the original maps, JI, EPG, VICE; the
random-logit test; one-line verdicts), sanity_cascade.png (the maps after each step) and
sanity_metrics.png (the metrics per step). Flags override the config keys sanity_n_images,
sanity_seed, sanity_tolerance, sanity_n_examples.
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
    p.add_argument("--n-images", type=int, default=None, help="images in the fixed subset (sanity_n_images, 32)")
    p.add_argument("--seed", type=int, default=None, help="subset and re-initialisation seed (else random_seed)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="relative change under which a metric 'barely moves' (sanity_tolerance, 0.1)")
    p.add_argument("--examples", type=int, default=None, help="images in the cascade figure (3)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from dywsss.engine.sanity import SanitySettings, run_sanity_checks
    from dywsss.viz.sanity import plot_sanity_cascade, plot_sanity_curves

    args = parse_args(argv)
    cfg = load_config(args.config, args.options)
    settings = SanitySettings.from_cfg(cfg, n_images=args.n_images, seed=args.seed, tolerance=args.tolerance,
                                       n_examples=args.examples)
    res = run_sanity_checks(cfg, settings=settings)
    title = f"{cfg.get('fignote') or cfg.network}, {cfg.cam_method}"
    figs = [plot_sanity_curves(res.summary["steps"], res.json_path.with_name("sanity_metrics.png"), title)]
    if res.step_maps and res.step_maps[0]:
        figs.append(plot_sanity_cascade(res.data.images[:len(res.step_maps[0])], res.step_maps, res.step_names,
                                        res.json_path.with_name("sanity_cascade.png"), title))
    for line in res.summary["verdicts"].values():
        print(f"[sanity] {line}")
    print(f"[sanity] wrote {res.json_path}, " + ", ".join(str(f) for f in figs))
    return 0


if __name__ == "__main__":
    run_main(main)
