#!/usr/bin/env python
"""Write corrupted copies of a VOC-layout list (ImageNet-C style; see dywsss/data/corruptions.py).

    python scripts/make_ood_voc.py --list data/demo/val.txt --voc12-root data/demo/VOC2012 \\
        --cls-label data/demo/cls_labels.json --out data/demo_ood \\
        --corruption gaussian_noise gaussian_blur contrast jpeg --severity 1 3 5 [--seed 0] [--link]

One tree per (corruption, severity): OUT/<corruption>_s<severity>/ with VOC2012/ (corrupted
JPEGImages, masks and annotations unchanged), <list stem>_<corruption>_s<severity>.txt,
cls_labels.json and manifest.json. Evaluate a trained run on it with
    python scripts/run_eval_stages.py CONFIG --session S --ood OUT/<corruption>_s<severity>
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402
from dywsss.data.corruptions import (  # noqa: E402
    CORRUPTIONS,
    DEFAULT_JPEG_QUALITY,
    SEVERITIES,
    make_ood_voc,
    manifest_text,
    parameter,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--list", required=True, help="image list of the source tree (e.g. data/demo/val.txt)")
    p.add_argument("--voc12-root", required=True, help="source VOC2012/ folder (JPEGImages/, masks, Annotations/)")
    p.add_argument("--cls-label", required=True, help="source cls_labels.json")
    p.add_argument("--out", required=True, help="parent folder of the trees to write")
    p.add_argument("--corruption", nargs="+", required=True, choices=CORRUPTIONS.names())
    p.add_argument("--severity", nargs="+", type=int, required=True, choices=SEVERITIES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY,
                   help="quality of the written JPEGs (not used by the jpeg corruption, which is its own encoding)")
    p.add_argument("--link", action="store_true", help="symlink masks and annotations instead of copying them")
    args = p.parse_args(argv)
    for c in args.corruption:
        for s in args.severity:
            parameter(c, s)  # every combination is valid before anything is written
    for c in args.corruption:
        for s in args.severity:
            tree = make_ood_voc(args.list, args.voc12_root, args.cls_label, Path(args.out) / f"{c}_s{s}", c, s,
                                seed=args.seed, jpeg_quality=args.jpeg_quality, link=args.link)
            print(f"{tree.root}: {manifest_text(tree)}, {tree.manifest['n_images']} images, list {tree.list_file}")
    return 0


if __name__ == "__main__":
    run_main(main)
