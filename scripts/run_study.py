#!/usr/bin/env python
"""Run a study across many models (docs/STUDIES.md): train/evaluate every cell, then collect the results.

    python scripts/run_study.py config/studies/demo_study.py [--jobs N] [--backend local|submitit]
        [--only CELL ...] [--force] [--collect-only] [--dry-run] [--work-dir DIR]

Cells run in parallel (one process each; --jobs, default: GPUs or cores), or as submitit job
arrays (--backend submitit: SLURM where it exists). A rerun skips finished cells; a failing
cell is reported with its log and exit status and the others go on. Everything lands in
work_dirs/<study>/: status.json, logs/, runs/, tables/, consensus/, models.csv,
correlations.csv, cross_model.json, figures/, report.html. Exit status 1 when a cell failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402
from dywsss.study import run_study  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("study", help="study config, e.g. config/studies/demo_study.py")
    p.add_argument("--jobs", type=int, default=None, help="cells at a time (local backend; 0 = auto)")
    p.add_argument("--backend", choices=("local", "submitit"), default=None, help="default: the study's execution.backend")
    p.add_argument("--only", nargs="+", default=None, metavar="CELL", help="run just these cells")
    p.add_argument("--force", action="store_true", help="rerun finished cells too (their stages still skip)")
    p.add_argument("--collect-only", action="store_true", help="do not run cells; collect what is finished")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their commands")
    p.add_argument("--work-dir", default=None, help="default: the study's work_dir or work_dirs/<study_name>")
    args = p.parse_args(argv)
    state, report = run_study(args.study, args.jobs, args.backend, args.force, args.dry_run, args.collect_only,
                              args.only, args.work_dir)
    failed = sorted(n for n, s in state.items() if s in ("failed", "blocked"))
    if failed:
        print(f"[study] {len(failed)} cell(s) failed or blocked: {', '.join(failed)} (see status.json and logs/)",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
