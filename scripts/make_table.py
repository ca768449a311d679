#!/usr/bin/env python
"""Collect finished runs into the paper's table layout (Markdown, CSV or LaTeX).

    python scripts/make_table.py work_dirs/* --format md|csv|latex [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402
from dywsss.errors import MissingInputError  # noqa: E402
from dywsss.io import write_text_atomic  # noqa: E402
from dywsss.report.table import FORMATS, collect_rows, format_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", help="run directories, e.g. work_dirs/*")
    p.add_argument("--format", choices=FORMATS, default="md")
    p.add_argument("--list", default=None, help="evaluation list stem (default: each run's eval_list)")
    p.add_argument("--weights", default=None, help="weights stem (default: each run's weights)")
    p.add_argument("--no-params", action="store_true", help="do not read checkpoints to count parameters")
    p.add_argument("--out", default=None, help="write the table here instead of stdout")
    args = p.parse_args(argv)
    rows, notes = collect_rows(args.run_dirs, args.list, args.weights, with_params=not args.no_params)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not rows:
        raise MissingInputError("no finished, up-to-date runs among the given directories (see the notes above)")
    text = format_table(rows, args.format)
    if args.out:
        print(f"[table] {write_text_atomic(args.out, text)} ({len(rows)} runs)")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    run_main(main)
