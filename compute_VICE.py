#!/usr/bin/env python
"""VICE (Eq. 8) from a per-sample CSV, as the original `compute_VICE.py`.

    python compute_VICE.py --dir_csv work_dirs/S/eval/val_best/per_sample.csv --plot_title ResNet-50

Any CSV with columns name_image, loss, miou works (the original miou_loss_*.csv too).
Writes vice.json, vice_bins.png and loss_vs_ji.png beside the CSV (for a CSV not named
per_sample.csv the names get its stem as prefix), or where --json says.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dywsss.cli import run_main
from dywsss.config import add_debug_arg
from dywsss.io import write_json_atomic
from dywsss.metrics.per_sample import read_csv_provenance, read_per_sample_csv
from dywsss.metrics.vice import loss_bins, vice
from dywsss.viz.vice_plot import plot_loss_vs_ji, plot_vice_bins


def output_paths(csv: Path, json_path: Path | None) -> tuple[Path, Path, Path]:
    if json_path is not None:
        if json_path.name == "vice.json":  # the stage layout: names as in docs/DESIGN.md
            return json_path, json_path.with_name("vice_bins.png"), json_path.with_name("loss_vs_ji.png")
        stem = json_path.with_suffix("")
        return json_path, Path(f"{stem}_bins.png"), Path(f"{stem}_loss_vs_ji.png")
    prefix = "" if csv.name == "per_sample.csv" else f"{csv.stem}_"
    d = csv.parent
    return d / f"{prefix}vice.json", d / f"{prefix}vice_bins.png", d / f"{prefix}loss_vs_ji.png"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--dir_csv", required=True, type=Path, help="per-sample CSV (name_image, loss, miou, ...)")
    p.add_argument("--plot_title", default="", help="figure title, e.g. ResNet-50")
    p.add_argument("--json", type=Path, default=None, help="output JSON (figures get its name as prefix)")
    p.add_argument("--ji_column", default="miou", help="JI column: miou (default), ji_reference or ji_paper")
    p.add_argument("--bins", type=int, default=10, help="equal-count loss bins in the figure")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop_nan", action="store_true",
                   help="drop rows whose loss or JI is NaN (e.g. images without valid mask pixels), with a warning")
    p.add_argument("--VICE", type=float, default=None, help="ignored (the original printed a given value); recomputed")
    add_debug_arg(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    columns = ("name_image", "loss", args.ji_column)
    df = read_per_sample_csv(args.dir_csv, columns, dropna=args.drop_nan)
    provenance = read_csv_provenance(args.dir_csv)
    n_dropped = df.attrs["n_dropped"]
    loss, ji = df["loss"].to_numpy(), df[args.ji_column].to_numpy()
    res = vice(loss, ji, n_boot=args.bootstrap, seed=args.seed)
    print(f"{args.dir_csv}: VICE = {res.vice:.4f}  95% CI [{res.ci_low:.4f}, {res.ci_high:.4f}]  "
          f"n = {res.n}  Spearman = {res.spearman:.4f}  p = {res.p_value:.3g}")
    json_path, bins_png, scatter_png = output_paths(args.dir_csv, args.json)
    summary = res.summary()
    summary.update(ji_column=args.ji_column, ji_definition=_ji_definition(df, args.ji_column),
                   n_dropped=n_dropped, loss_bins=args.bins, csv=str(args.dir_csv),
                   definition="Pearson correlation of (-loss, JI); CI: percentile bootstrap over images",
                   provenance=provenance)
    n_bins = min(args.bins, res.n)
    if n_bins >= 1:
        mean_loss, mean_ji, count = loss_bins(loss, ji, n_bins)
        summary.update(bin_mean_loss=mean_loss.tolist(), bin_mean_ji=mean_ji.tolist(), bin_count=count.tolist())
        print(f"wrote {plot_vice_bins(mean_loss, mean_ji, bins_png, args.plot_title, res.vice, provenance)}")
        print(f"wrote {plot_loss_vs_ji(loss, ji, scatter_png, args.plot_title, res.vice, provenance)}")
    print(f"wrote {write_json_atomic(json_path, summary)}")
    return 0


def _ji_definition(df, column: str) -> str:
    """Which JI the numbers use: the column's own name, or for `miou` the definition it matches."""
    if column != "miou":
        return column.removeprefix("ji_")
    for name in ("reference", "paper"):
        col = f"ji_{name}"
        if col in df.columns and df[col].equals(df["miou"]):
            return name
    return "unknown (original CSV: reference)" if "ji_reference" not in df.columns else "unknown"


if __name__ == "__main__":
    run_main(main)
