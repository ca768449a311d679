#!/usr/bin/env python
"""Evaluate a trained run on OOD trees (maps, JI curve, per-sample CSV, ECE_ML, VICE), skipping finished stages.

    python scripts/run_eval_stages.py CONFIG --session S [--options key=value ...] [--weights best.pth]
        --ood data/demo_ood/gaussian_noise_s3 [TREE ...] [--force] [--dry-run]

Each TREE is a folder with manifest.json (scripts/make_ood_voc.py, or scripts/make_demo_voc.py
with --hue-shift/--background). Results go to work_dirs/S/eval/<tree list>_<weights>/; the run
is not retrained (its training stage is not part of this plan).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402
from dywsss.config import ConfigKeyError  # noqa: E402
from dywsss.stages import StageError  # noqa: E402
from dywsss.study.evaluation import evaluate_on_trees  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("config")
    p.add_argument("--session", required=True, help="session_name of the trained run")
    p.add_argument("--options", nargs="+", default=[], help="key=value overrides (as given to run_stages.py)")
    p.add_argument("--weights", default=None, help="weights file in model/ (default: the config's)")
    p.add_argument("--ood", nargs="+", required=True, metavar="TREE", help="OOD tree folders (with manifest.json)")
    p.add_argument("--force", action="store_true", help="redo every evaluation stage")
    p.add_argument("--dry-run", action="store_true", help="print what would run")
    args = p.parse_args(argv)
    bad = [o for o in args.options if "=" not in o]
    if bad:
        p.error(f"--options takes key=value pairs, got {bad[0]!r}")
    try:
        ran = evaluate_on_trees(args.config, args.session, args.options, args.ood, args.weights, args.force,
                                args.dry_run)
    except (StageError, ConfigKeyError) as exc:
        print(f"run_eval_stages: {exc}", file=sys.stderr)
        return 1
    print(f"[done] {len(ran)} stage(s) ran: {', '.join(ran) or 'none'}")
    return 0


if __name__ == "__main__":
    run_main(main)
