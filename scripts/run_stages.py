#!/usr/bin/env python
"""Run the VICE study of one config stage by stage, skipping stages whose outputs are up to date.

    python scripts/run_stages.py config/demo.py [--session S] [--options key=value ...]
        [--list val.txt] [--weights best.pth] [--demo-data "--out data/demo --train 480 ..."]
        [--force [STAGE ...]] [--skip STAGE ...] [--dry-run]

Stages: data (only with --demo-data), train, maps, ji_curve, blob_maps, blob_curve, per_sample, ece, vice,
gridpg, sanity, report.
A stage reruns when an output is missing or older than an input, or its command changed;
an interrupted training resumes from model/last.pth.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402
from dywsss.errors import ConfigError  # noqa: E402
from dywsss.stages import StageError, run_stages, study_stages, without_stages  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("config")
    p.add_argument("--session", default=None, help="session_name (default: the config's)")
    p.add_argument("--options", nargs="+", default=[], help="key=value overrides for every config-driven stage")
    p.add_argument("--list", default=None, help="evaluation list (default: the config's eval_list)")
    p.add_argument("--weights", default=None, help="weights file in model/ (default: the config's weights)")
    p.add_argument("--demo-data", default=None, metavar="ARGS",
                   help="generate the demo set first when absent: arguments of scripts/make_demo_voc.py")
    p.add_argument("--force", nargs="*", default=None, metavar="STAGE", help="redo these stages (all if none named)")
    p.add_argument("--skip", nargs="+", default=[], metavar="STAGE",
                   help="leave these stages out (e.g. sanity); later stages read what is there")
    p.add_argument("--dry-run", action="store_true", help="print what would run")
    args = p.parse_args(argv)
    bad = [o for o in args.options if "=" not in o]
    if bad:
        raise ConfigError(f"--options takes key=value pairs, got {bad[0]!r}")
    plan = study_stages(args.config, args.session, args.options, args.list, args.weights,
                        None if args.demo_data is None else shlex.split(args.demo_data))
    force = True if args.force == [] else (args.force or ())
    print(f"[{plan.root.name}] recipe: {plan.recipe}")
    t0 = time.perf_counter()
    try:
        ran = run_stages(without_stages(plan.stages, args.skip), plan.stamp_file, force=force, dry_run=args.dry_run)
    except StageError as exc:  # the stage printed its own error above
        print(f"run_stages: {exc}", file=sys.stderr)
        return exc.returncode
    if args.dry_run:
        return 0
    print(f"[done] {len(ran)} stage(s) ran in {time.perf_counter() - t0:.0f} s: {', '.join(ran) or 'none'}")
    print(f"  run:     {plan.root}\n  model:   {plan.root / 'model'}\n  maps:    {plan.cam_dir}\n"
          f"  metrics: {plan.eval_dir}\n  report:  {plan.report}")
    return 0


if __name__ == "__main__":
    run_main(main)
