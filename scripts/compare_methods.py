#!/usr/bin/env python
"""Compare attribution methods on one trained model: maps and metrics per method, one table and figure.

    python scripts/compare_methods.py work_dirs/S --methods cam,gradcam,gradient [--config CONFIG]
        [--options key=value ...] [--jobs N] [--force [METHOD ...]] [--list val.txt] [--weights best.pth]
        [--dry-run]

Each method runs the evaluation stages (maps, ji_curve, per_sample, ece, vice) with
cam_method=<m> map_tag=<m>, so finished methods are skipped and the trained stages never
rerun; map_metrics always includes epg, pg, insertion and deletion (insdel_steps from the
config or --options). Writes work_dirs/S/compare_methods.{md,csv,tex,png,json}, read from the
evaluation the stages wrote (the list and weights of --list/--weights, --options or the config),
and refreshes work_dirs/S/report.html ("Methods compared"). A failing stage stops the run with
its exit status. Method parameters in --options (ig_steps, rise_masks, ...) reach only the
methods that use them. Run from the repository root (the config's data paths are relative
to it). See docs/METHODS.md, "Comparing methods on one model".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("session", help="a trained session directory, e.g. work_dirs/demo_efficientnet_lite0")
    p.add_argument("--methods", required=True, help="comma-separated cam_method names, e.g. cam,gradcam,gradient")
    p.add_argument("--config", default=None, help="config of the stages (default: the session's config.py)")
    p.add_argument("--options", nargs="+", default=[], help="key=value overrides, e.g. insdel_steps=20 ig_steps=16")
    p.add_argument("--jobs", type=int, default=1, help="methods run at once (each with cores/N threads; default 1)")
    p.add_argument("--force", nargs="*", default=None, metavar="METHOD",
                   help="redo these methods' stages (all methods if none named)")
    p.add_argument("--list", default=None, help="evaluation list (default: the config's eval_list)")
    p.add_argument("--weights", default=None, help="weights file in model/ (default: the config's weights)")
    p.add_argument("--dry-run", action="store_true", help="check everything and print what would run")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    from dywsss.stages import StageError
    from dywsss.study.methods import compare_methods

    force = True if args.force == [] else (args.force or ())
    try:
        comparison = compare_methods(args.session, args.methods, args.config, args.options, args.jobs, force,
                                     args.dry_run, args.list, args.weights)
    except StageError as exc:  # the stage printed its own error above (or in log/compare_<method>.log)
        print(f"compare_methods: {exc}", file=sys.stderr)
        return exc.returncode
    if comparison is not None:
        md = Path(args.session) / "compare_methods.md"
        sys.stdout.write(md.read_text())
    return 0


if __name__ == "__main__":
    run_main(main)
