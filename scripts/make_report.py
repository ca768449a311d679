#!/usr/bin/env python
"""Write one self-contained report.html for a finished run.

    python scripts/make_report.py work_dirs/<session> [--list val --weights best]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.report.html import write_report  # noqa: E402
from dywsss.cli import run_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="work_dirs/<session>")
    p.add_argument("--list", default=None, help="evaluation list stem or file (default: the config's eval_list)")
    p.add_argument("--weights", default=None, help="weights stem or file (default: the config's weights)")
    p.add_argument("--tag", default="", help="map_tag of the evaluation (default: the run's own method)")
    p.add_argument("--out", default=None, help="output file (default: <run_dir>/report.html, or report_<tag>.html)")
    p.add_argument("--gallery-size", type=int, default=4, help="images per gallery")
    p.add_argument("--no-gallery", action="store_true", help="leave out the galleries (no images or maps read)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    out = write_report(args.run_dir, args.list, args.weights, args.out, k=args.gallery_size,
                       galleries=not args.no_gallery, tag=args.tag)
    print(f"[report] {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
