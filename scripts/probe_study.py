#!/usr/bin/env python
"""The probe study ("How to Probe", docs/PROBES.md): train a grid of probes on one frozen backbone, explain each
with the methods that fit it, and set accuracy, calibration, localisation and VICE side by side.

    python scripts/probe_study.py config/probe_demo.py [--study probe_study] [--heads linear mlp2 ...]
        [--losses bce ce] [--methods cam gradcam bcos] [--options key=value ...] [--demo-data ARGS]
        [--skip sanity] [--jobs N] [--force] [--collect-only] [--dry-run]

Each probe is a session work_dirs/<study>/runs/<head>_<loss> run by scripts/run_stages.py (the training
stage trains the probe; feature caches are shared in work_dirs/<study>/feature_cache). Methods: cam explains
linear probes, bcos B-cos heads, any other method every probe. Outputs in work_dirs/<study>/: probe_table.
{md,csv,tex}, bce_vs_ce.{md,csv,tex}, figures/<metric>.png, summary.md, probe_study.json, status.json, logs/.
A rerun skips finished work; a failing probe is reported and the others run on (exit status 1).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from dywsss.study.probes import DEFAULT_METHODS, DEFAULT_SKIP, HEAD_GRID, LOSS_GRID, load_probe_study, \
        run_probe_study

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("config", help="the backbone's config, e.g. config/probe_demo.py")
    p.add_argument("--study", default="probe_study", help="study name: work_dirs/<study>/")
    p.add_argument("--work-dir", default=None, help="where the study writes (default work_dirs/<study>)")
    p.add_argument("--heads", nargs="+", default=list(HEAD_GRID))
    p.add_argument("--losses", nargs="+", default=list(LOSS_GRID))
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--options", nargs="+", action="extend", default=[],
                   help="key=value for every probe session (probe_epochs=10 ...); given more than once, the lists "
                        "add up and a later value of a key replaces an earlier one")
    p.add_argument("--demo-data", default=None, metavar="ARGS",
                   help="make the demo set first: scripts/make_demo_voc.py arguments (its --out must be where the "
                        "config reads the data)")
    p.add_argument("--skip", nargs="*", default=list(DEFAULT_SKIP), metavar="STAGE",
                   help="stages left out of every session (default: sanity; none: --skip)")
    p.add_argument("--jobs", type=int, default=0, help="cells at a time (default: GPUs, or cores)")
    p.add_argument("--n-boot", type=int, default=2000,
                   help="bootstrap resamples of the intervals the study computes: vice_probe, vice_probe_epg and "
                        "every BCE - CE interval (the vice and vice_epg intervals come from each session's VICE "
                        "stage, with the config's bootstrap)")
    p.add_argument("--n-permutations", type=int, default=9999, help="permutations of the VICE comparisons")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rerun finished cells too")
    p.add_argument("--collect-only", action="store_true", help="tables and figures from what is there")
    p.add_argument("--dry-run", action="store_true", help="print the cells and their commands")
    args = p.parse_args(argv)
    study = load_probe_study(args.config, args.study, args.heads, args.losses, args.methods, args.options,
                             args.work_dir, args.demo_data, args.skip, sys.executable, args.n_boot,
                             args.n_permutations, seed=args.seed, jobs=args.jobs)
    state, out = run_probe_study(study, force=args.force, dry_run=args.dry_run, collect_only=args.collect_only)
    if out is None:
        return 0
    print("\n".join(["[probes] BCE vs CE:", *(f"  {a}" for a in out["answer"])]))
    paths = out["paths"]
    print(f"[probes] {len(out['rows'])} evaluation(s) collected, {len(out['failures'])} not finished\n"
          f"  table:    {paths['probe_table.md']} (.csv, .tex)\n"
          f"  BCE - CE: {paths['bce_vs_ce.md']} (.csv, .tex)\n"
          f"  figures:  {study.root / 'figures'}/ ({', '.join(Path(f).name for f in paths['figures'].values())})\n"
          f"  summary:  {paths['summary']}\n  record:   {paths['json']}")
    return 1 if out["failures"] or any(s in ("failed", "blocked") for s in state.values()) else 0


if __name__ == "__main__":
    run_main(main)
