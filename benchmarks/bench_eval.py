#!/usr/bin/env python
"""Time the one-pass JI curve against the original per-threshold algorithm and against file loading.

    python benchmarks/bench_eval.py            # val-sized: 300 maps of 500x375, 1-3 classes each
    python benchmarks/bench_eval.py --n 60     # smaller

(a) one pass: dywsss.metrics.segmentation.dataset_ji_curve over all 60 thresholds;
(b) baseline: the original algorithm, one run per threshold, each re-reading the files and
    building a [21, H, W] float32 tensor, np.argmax, and 3 x 21 per-class sums per image; it is
    timed on --baseline_thresholds of the 60 thresholds and extrapolated linearly to 60;
(c) loading only: every mask and map file read once.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.data.voc import VOC_PALETTE, load_mask  # noqa: E402
from dywsss.mapfile import load_maps, save_maps  # noqa: E402
from dywsss.metrics.segmentation import dataset_ji_curve, default_thresholds  # noqa: E402


def make_set(root: Path, n: int, h: int, w: int, seed: int = 0) -> list[str]:
    """Masks with 1-3 objects (ellipses, 255 borders) and blob-like maps in [0, 1], float16."""
    rng = np.random.default_rng(seed)
    (root / "maps").mkdir(parents=True)
    (root / "gt").mkdir()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    names = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        classes = np.sort(rng.choice(20, size=k, replace=False))  # the map stage writes classes sorted
        gt = np.zeros((h, w), np.uint8)
        cams = np.empty((k, h, w), np.float32)
        for j, c in enumerate(classes):
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
            d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
            gt[d < 1.0] = c + 1
            gt[(d >= 1.0) & (d < 1.08)] = 255
            oy, ox = cy + rng.normal(0, 0.2) * ry, cx + rng.normal(0, 0.2) * rx
            blob = np.exp(-(((yy - oy) / (1.3 * ry)) ** 2 + ((xx - ox) / (1.3 * rx)) ** 2))
            cams[j] = np.clip(blob + rng.normal(0, 0.03, (h, w)), 0, None)
            cams[j] /= cams[j].max()
        name = f"{i:06d}"
        im = Image.fromarray(gt, mode="P")
        im.putpalette(VOC_PALETTE)
        im.save(root / "gt" / f"{name}.png")
        save_maps(root / "maps" / f"{name}.npz", classes, cams)
        names.append(name)
    return names


def load_all(root: Path, names: list[str]) -> None:
    for name in names:
        load_mask(root / "gt", name)
        load_maps(root / "maps" / f"{name}.npz")


def original_miou(root: Path, names: list[str], t: float) -> float:
    """The original evaluation at one threshold (files re-read, per-class sums)."""
    T, P, TP = np.zeros(21), np.zeros(21), np.zeros(21)
    for name in names:
        classes, cams = load_maps(root / "maps" / f"{name}.npz")
        gt = load_mask(root / "gt", name)
        tensor = np.zeros((21,) + gt.shape, np.float32)
        for c, m in zip(classes, cams):
            tensor[c + 1] = m
        tensor[0] = t
        pred = np.argmax(tensor, axis=0).astype(np.uint8)
        cal = gt < 255
        mask = (pred == gt) * cal
        for i in range(21):
            P[i] += np.sum((pred == i) * cal)
            T[i] += np.sum((gt == i) * cal)
            TP[i] += np.sum((gt == i) * mask)
    return float(np.mean(TP / (T + P - TP + 1e-10)))


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--n", type=int, default=300, help="number of images")
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--baseline_thresholds", type=int, default=3, help="thresholds timed for the baseline")
    p.add_argument("--repeat", type=int, default=3, help="repeats of (a) and (c); the best time counts")
    args = p.parse_args()
    thr = default_thresholds()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t_make, names = timed(make_set, root, args.n, args.height, args.width)
        print(f"built {args.n} maps+masks of {args.width}x{args.height} in {t_make:.1f}s")
        load_all(root, names)  # warm the page cache for everyone
        t_load = min(timed(load_all, root, names)[0] for _ in range(args.repeat))
        runs = [timed(dataset_ji_curve, names, root / "maps", root / "gt", thr, "npz", False, False)
                for _ in range(args.repeat)]
        t_curve, curve = min(runs, key=lambda r: r[0])
        sub = np.linspace(0, thr.size - 1, args.baseline_thresholds).round().astype(int)
        t_base_sub, base = timed(lambda: [original_miou(root, names, thr[k]) for k in sub])
        t_base = t_base_sub / sub.size * thr.size
        diff = np.abs(np.array(base) - curve.miou[sub]).max()
    print(f"(c) load files only:          {t_load:8.2f}s  ({1e3 * t_load / args.n:.1f} ms/image)")
    print(f"(a) one-pass curve, {thr.size} t:     {t_curve:8.2f}s  ({1e3 * t_curve / args.n:.1f} ms/image)")
    print(f"(b) per-threshold original:   {t_base:8.2f}s  (measured {t_base_sub:.2f}s on {sub.size} thresholds "
          f"{thr[sub].tolist()}, extrapolated x{thr.size / sub.size:.0f} to {thr.size})")
    print(f"max |mIoU(a) - mIoU(b)| on those thresholds: {diff:.2e}")
    print(f"speed-up over the per-threshold baseline: {t_base / t_curve:.1f}x (target >= 30x)")
    print(f"one-pass time / load time: {t_curve / t_load:.2f} (target <= 2)")
    print(f"best t = {curve.best_threshold:.2f}, mIoU = {100 * curve.best_miou:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
