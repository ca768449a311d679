#!/usr/bin/env python
"""Time the one-pass map metrics (per-image JI + every mask metric) against merely loading the files.

    python benchmarks/bench_map_metrics.py            # val-sized: 300 maps of 500x375, 1-3 classes each
    python benchmarks/bench_map_metrics.py --n 60     # smaller

(a) one pass: dywsss.metrics.map_eval.evaluate_maps with the default map_metrics
    (epg, epg_box, pg, ap_mask, gini), both JIs, the covariates and the sha256 of the inputs;
(b) loading only: every mask and map file read once (dywsss's loaders, with their checks);
(c) for reference: today's per_image_ji alone (JI only, one pass).
Target: (a) / (b) <= 2. Times are this process's CPU time (time.process_time), best of --repeat
interleaved rounds, so that other work on a shared machine does not skew the ratio; the page cache
is warm, so reading costs no waiting.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_eval import load_all, make_set  # noqa: E402

from dywsss.metrics.map_eval import evaluate_maps  # noqa: E402
from dywsss.metrics.per_sample import per_image_ji  # noqa: E402


def timed(fn, *args):
    t0 = time.process_time()
    out = fn(*args)
    return time.process_time() - t0, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--n", type=int, default=300, help="number of images")
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3, help="repeats; the best time counts")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t_make, names = timed(make_set, root, args.n, args.height, args.width)
        print(f"built {args.n} maps+masks of {args.width}x{args.height} in {t_make:.1f}s")
        load_all(root, names)  # warm the page cache for everyone
        t_load, t_pass, t_ji = np.inf, np.inf, np.inf
        for _ in range(args.repeat):  # interleaved, so that a busy spell hits every variant alike
            t_load = min(t_load, timed(load_all, root, names)[0])
            t, ev = timed(lambda: evaluate_maps(names, root / "maps", root / "gt", progress=False))
            t_pass = min(t_pass, t)
            t_ji = min(t_ji, timed(per_image_ji, root / "maps", names, root / "gt", 0.1, False, False)[0])
    print(f"(b) load files only:              {t_load:7.2f}s  ({1e3 * t_load / args.n:.1f} ms/image)")
    print(f"(a) one pass, JI + {len(ev.metrics)} metrics:    {t_pass:7.2f}s  ({1e3 * t_pass / args.n:.1f} ms/image, "
          f"{ev.pair_image.size} (image, class) pairs)")
    print(f"(c) per-image JI only (today):    {t_ji:7.2f}s  ({1e3 * t_ji / args.n:.1f} ms/image)")
    print(f"one-pass time / load time: {t_pass / t_load:.2f} (target <= 2)")
    s = ev.summary()["metrics"]
    print("dataset means: " + ", ".join(f"{m} {s[m]['mean']:.3f}" for m in ev.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
