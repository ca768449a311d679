#!/usr/bin/env python
"""Build cls_labels.json ({image id: [0-based class ids]}) from VOC XML annotations or masks."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.cli import run_main  # noqa: E402
from dywsss.data.labels import build_cls_labels, class_counts, write_cls_labels  # noqa: E402
from dywsss.data.voc import CLASS_NAMES, read_image_list  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--voc-root", required=True, help="the VOC2012 folder (holds Annotations/ or masks)")
    parser.add_argument("--out", default=None, help="output file (default: <parent of --voc-root>/cls_labels.json)")
    parser.add_argument("--lists", nargs="+", default=None,
                        help="label only the ids in these list files (default: every annotated image)")
    parser.add_argument("--prefer", choices=("xml", "mask"), default="xml",
                        help="xml: Annotations/*.xml when present, else masks (default); mask: masks only")
    args = parser.parse_args(argv)
    voc_root = Path(args.voc_root)
    out = Path(args.out) if args.out else voc_root.resolve().parent / "cls_labels.json"
    names = None
    if args.lists:
        names = list(dict.fromkeys(n for lst in args.lists for n in read_image_list(lst)))
    labels = build_cls_labels(voc_root, names, prefer=args.prefer)
    write_cls_labels(out, labels)
    counts = class_counts(labels)
    empty = [n for n, ids in labels.items() if not ids]
    print(f"{len(labels) - len(empty)} images labelled")
    if empty:
        print(f"warning: {len(empty)} image(s) with no class left out of {out}, e.g. {', '.join(empty[:5])}",
              file=sys.stderr)
    print("images per class: " + ", ".join(f"{n} {c}" for n, c in zip(CLASS_NAMES, counts)))
    print(out)


if __name__ == "__main__":
    run_main(main)
