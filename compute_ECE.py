#!/usr/bin/env python
"""ECE_ML (Eq. 1-4), mAP and ML-accuracy from the per-sample CSV, with the reliability diagram.

    python compute_ECE.py --csv work_dirs/S/eval/val_best/per_sample.csv [--json OUT]
    python compute_ECE.py config/resnet50.py --options "network=resnet50" "session_name=S" \
        "weights=best.pth" "eval_list=val.txt" "fignote=ResNet-50"

No model is run: the CSV carries the per-class probabilities (p_00..p_19) and labels.
The config form reads work_dirs/S/eval/<list stem>_<weights stem>/per_sample.csv and
writes ece.json and reliability.png there.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mmengine.config import DictAction

from dywsss.cli import run_main
from dywsss.config import add_debug_arg, load_config, session_paths
from dywsss.data.voc import CLASS_NAMES
from dywsss.io import write_json_atomic
from dywsss.metrics.calibration import BINNINGS, ece_ml_from_probs
from dywsss.metrics.classification import mean_average_precision, mean_ml_accuracy
from dywsss.errors import ConfigError, InputError, MissingInputError
from dywsss.metrics.per_sample import ECE_COLUMNS, PROB_COLUMNS, ids_to_multi_hot, read_csv_provenance, read_per_sample_csv
from dywsss.viz.reliability import plot_reliability


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("config", nargs="?", default=None, help="config file (the original invocation)")
    p.add_argument("--options", "--cfg-options", nargs="+", action=DictAction, default=None,
                   help="config overrides key=value (session_name, weights, eval_list, fignote, ece_bins, ...)")
    p.add_argument("--csv", type=Path, default=None, help="per-sample CSV (instead of a config)")
    p.add_argument("--json", type=Path, default=None, help="output JSON (the PNG gets its stem + _reliability)")
    p.add_argument("--bins", type=int, default=20, help="confidence bins (CSV form; config: ece_bins)")
    p.add_argument("--binning", choices=BINNINGS, default="width",
                   help="width: (m/M, (m+1)/M]; count: equal-count bins (CSV form; config: ece_binning)")
    p.add_argument("--pred_threshold", type=float, default=0.5, help="predicted classes: p > this")
    p.add_argument("--fignote", default="", help="figure title, e.g. ResNet-50")
    add_debug_arg(p)
    args = p.parse_args(argv)
    if (args.config is None) == (args.csv is None):
        raise ConfigError("give either a config file (with --options) or --csv CSV")
    if args.bins < 1:
        raise ConfigError(f"--bins {args.bins}: must be >= 1")
    if not 0 < args.pred_threshold < 1:
        raise ConfigError(f"--pred_threshold {args.pred_threshold}: must be in (0, 1)")
    if args.config is not None:
        cfg = load_config(args.config, args.options)
        eval_dir = session_paths(cfg).eval_dir(cfg.eval_list, cfg.weights, cfg.get("map_tag", ""))
        args.csv = eval_dir / "per_sample.csv"
        if not args.csv.is_file():
            raise MissingInputError(f"{args.csv}: per-sample CSV not found; run compute_each_image_loss.py with the "
                                    "same --options first")
        args.json = args.json or eval_dir / "ece.json"
        args.bins, args.binning = int(cfg.ece_bins), str(cfg.ece_binning)
        args.pred_threshold, args.fignote = float(cfg.pred_threshold), str(cfg.get("fignote", "") or "")
    return args


def output_paths(csv: Path, json_path: Path | None) -> tuple[Path, Path]:
    if json_path is not None:
        png = json_path.with_name("reliability.png" if json_path.name == "ece.json"
                                  else f"{json_path.stem}_reliability.png")
        return json_path, png
    prefix = "" if csv.name == "per_sample.csv" else f"{csv.stem}_"
    return csv.parent / f"{prefix}ece.json", csv.parent / f"{prefix}reliability.png"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    df = read_per_sample_csv(args.csv, ECE_COLUMNS)
    provenance = read_csv_provenance(args.csv)
    try:
        labels = ids_to_multi_hot(df["label"].tolist())
    except ValueError as exc:
        raise InputError(f"{args.csv}: column 'label': {exc}") from None
    probs = df[list(PROB_COLUMNS)].to_numpy()
    try:
        res = ece_ml_from_probs(probs, labels, args.bins, args.binning, args.pred_threshold)
    except ValueError as exc:
        raise InputError(f"{args.csv}: {exc}") from None
    acc = mean_ml_accuracy(probs, labels, args.pred_threshold)
    m_ap = mean_average_precision(probs, labels, list(CLASS_NAMES))  # warns about classes left out
    print(f"{args.csv}: ECE_ML = {100 * res.ece:.3f}%  ML-accuracy = {100 * acc:.3f}%  "
          f"mAP = {100 * m_ap:.3f}%  (n = {res.n}, {args.bins} {args.binning} bins)")
    json_path, png_path = output_paths(args.csv, args.json)
    summary = dict(ece_ml=res.ece, acc_ml=acc, mAP=m_ap, n=res.n, bins=res.bins(), n_bins=args.bins,
                   binning=args.binning, pred_threshold=args.pred_threshold, csv=str(args.csv),
                   confidence="mean of p >= pred_threshold, else max p (Eq. 2)",
                   accuracy="|y & y_hat| / |y | y_hat|, 0/0 = 1 (Eq. 3)",
                   mAP_note="mean AP over classes with a positive sample", provenance=provenance)
    print(f"wrote {plot_reliability(res, acc, png_path, args.fignote, provenance)}")
    print(f"wrote {write_json_atomic(json_path, summary)}")
    return 0


if __name__ == "__main__":
    run_main(main)
