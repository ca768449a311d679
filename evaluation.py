#!/usr/bin/env python
"""Map quality (stage 3): dataset mIoU over background thresholds, as the original `evaluation.py`.

    python evaluation.py --list voc12/val.txt --predict_dir work_dirs/S/test/cam_val_best \
        --gt_dir voc12/VOC2012/SegmentationClassAug --comment S --type npz --curve True

Writes a JSON summary (fractions in [0, 1]); by default work_dirs/S/eval/val_best/ji_curve.json
when the predictions are in work_dirs/S/test/cam_val_best, else <predict_dir>_ji_curve.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dywsss.cli import run_main
from dywsss.config import add_debug_arg
from dywsss.data.voc import mask_path, read_image_list
from dywsss.errors import ConfigError
from dywsss.io import write_json_atomic
from dywsss.mapfile import maps_provenance
from dywsss.metrics.segmentation import SEG_CLASS_NAMES, dataset_ji_curve
from dywsss.provenance import file_record, sha256_files


def str2bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def default_json(predict_dir: Path) -> Path:
    """work_dirs/S/test/cam_<list>_<weights> -> work_dirs/S/eval/<list>_<weights>/ji_curve.json."""
    if predict_dir.parent.name == "test" and predict_dir.name.startswith("cam_"):
        return predict_dir.parent.parent / "eval" / predict_dir.name[len("cam_"):] / "ji_curve.json"
    return predict_dir.parent / f"{predict_dir.name}_ji_curve.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--list", required=True, help="image list (one id per line), e.g. voc12/val.txt")
    p.add_argument("--predict_dir", required=True, help="folder of <name>.npz map files (or .npy / .png)")
    p.add_argument("--gt_dir", default="voc12/VOC2012/SegmentationClassAug", help="folder of <name>.png masks")
    p.add_argument("--comment", default="", help="label printed and stored with the result")
    p.add_argument("--type", default="npz", choices=("npz", "npy", "png"),
                   help="npz: our map files; npy: the original's pickled maps (needs --allow-pickle); "
                        "png: label-index predictions (a single point)")
    p.add_argument("--curve", type=str2bool, default=True, help="True: thresholds t_min..t_max; False: only --t")
    p.add_argument("--t", type=float, default=0.1, help="background threshold when --curve False")
    p.add_argument("--t_min", type=float, default=0.0)
    p.add_argument("--t_max", type=float, default=0.59)
    p.add_argument("--t_step", type=float, default=0.01)
    p.add_argument("--allow-pickle", "--allow_pickle", dest="allow_pickle", action="store_true",
                   help="read the original's pickled .npy maps (unpickling can run code: trusted files only)")
    p.add_argument("--json", type=Path, default=None, help="output JSON (default: see above)")
    p.add_argument("--logfile", type=Path, default=None, help="also append the result line to this text file")
    add_debug_arg(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.type == "npy" and not args.allow_pickle:
        raise ConfigError("--type npy reads pickled files, which can run code stored in them; "
                          "pass --allow-pickle if you trust them (our own maps are --type npz)")
    if args.curve:
        n = int(round((args.t_max - args.t_min) / args.t_step)) + 1
        # via decimal text, so the default grid is exactly i / 100 as in the original
        thresholds = np.array([float(f"{args.t_min + i * args.t_step:.10g}") for i in range(n)])
    else:
        thresholds = np.array([args.t])
    names = read_image_list(args.list)
    maps = maps_provenance(args.predict_dir, names) if args.type == "npz" else {"dir": str(args.predict_dir)}
    curve = dataset_ji_curve(names, args.predict_dir, args.gt_dir, thresholds, args.type, args.allow_pickle)
    if curve.thresholds.size:
        for t, m in zip(curve.thresholds, curve.miou):
            print(f"t={t:.2f}  mIoU={100 * m:.3f}%")
        print(f"{args.comment} best: t={curve.best_threshold:.2f}  mIoU={100 * curve.best_miou:.3f}%")
    else:
        print(f"{args.comment} mIoU={100 * curve.best_miou:.3f}% (label PNGs)")
    for name, iou in zip(SEG_CLASS_NAMES, curve.per_class_iou[curve.best_index]):
        print(f"  {name:<12s} {100 * iou:6.2f}%")
    if curve.absent_classes:
        print(f"warning: no ground-truth pixels of {curve.absent_classes}; their IoU (0) is in the mean")
    summary = curve.summary()
    summary.update(type=args.type, comment=args.comment, n_images=len(names), list=str(args.list),
                   predict_dir=str(args.predict_dir), gt_dir=str(args.gt_dir),
                   mask_rule="argmax over [t, maps] in float32, class only when its score > t",
                   miou_definition="mean over the 21 classes of TP/(T+P-TP) summed over images; empty union -> 0",
                   provenance=dict(maps=maps, list=file_record(args.list),
                                   masks_sha256=sha256_files(mask_path(args.gt_dir, n) for n in names)))
    out = write_json_atomic(args.json or default_json(Path(args.predict_dir)), summary)
    print(f"wrote {out}")
    if args.logfile:
        with open(args.logfile, "a") as fh:
            fh.write(f"{args.comment} best_threshold={summary['best_threshold']} best_miou={curve.best_miou:.6f}\n")
        print(f"appended to {args.logfile}")
    return 0


if __name__ == "__main__":
    run_main(main)
