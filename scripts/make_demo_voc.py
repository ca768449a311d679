#!/usr/bin/env python
"""Write the synthetic demo dataset in the VOC2012 layout (see dywsss/data/demo.py)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402
from dywsss.data.demo import BACKGROUNDS, DemoShift, make_demo_voc  # noqa: E402
from dywsss.data.labels import class_counts  # noqa: E402
from dywsss.data.voc import CLASS_NAMES, load_cls_labels  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument("--train", type=int, default=500, help="number of training images")
    parser.add_argument("--val", type=int, default=150, help="number of validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-side", type=int, default=300, help="smallest image side in pixels")
    parser.add_argument("--max-side", type=int, default=500, help="largest image side in pixels")
    parser.add_argument("--hue-shift", type=float, default=0.0,
                        help="OOD generator shift: rotate every class hue by this many degrees (e.g. 120)")
    parser.add_argument("--background", choices=BACKGROUNDS, default="clutter",
                        help="OOD generator shift: a background kind unseen in training (stripes, blocks)")
    args = parser.parse_args(argv)
    start = time.time()
    shift = DemoShift(args.hue_shift, args.background)
    tree = make_demo_voc(args.out, args.train, args.val, args.seed, args.min_side, args.max_side,
                         shift=None if shift.is_identity else shift)
    labels = {k: v.nonzero()[0].tolist() for k, v in load_cls_labels(tree.cls_labels).items()}
    counts = class_counts(labels)
    print(f"wrote {args.train} train + {args.val} val images in {time.time() - start:.1f} s")
    print("images per class: " + ", ".join(f"{n} {c}" for n, c in zip(CLASS_NAMES, counts)))
    for path in (tree.voc12_root, tree.train_list, tree.root / "train.txt", tree.val_list, tree.cls_labels):
        print(path)
    if not shift.is_identity:
        print(f"generator shift {shift.tag}: {tree.root / 'manifest.json'}, {tree.root / f'val_{shift.tag}.txt'}")


if __name__ == "__main__":
    run_main(main)
