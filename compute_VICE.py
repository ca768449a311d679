#!/usr/bin/env python
"""VICE (Eq. 8) from a per-sample CSV, as the original `compute_VICE.py`; also of any map metric, and between runs.

    python compute_VICE.py --dir_csv work_dirs/S/eval/val_best/per_sample.csv --plot_title ResNet-50
    python compute_VICE.py --dir_csv .../per_sample.csv --metric epg          # VICE of another map metric
    python compute_VICE.py --dir_csv .../per_sample.csv --metric all          # every metric column of the CSV
    python compute_VICE.py --compare A/per_sample.csv B/per_sample.csv --metric deletion

Any CSV with columns name_image, loss, miou works (the original miou_loss_*.csv too).
Writes vice.json, vice_bins.png and loss_vs_ji.png beside the CSV (for a CSV not named
per_sample.csv the names get its stem as prefix), or where --json says. Another metric M
writes vice_M.json (its loss-bin means included; no bins figure) and loss_vs_M.png;
`--metric all` also vice_metrics.json (one row per metric) and loss_vs_metrics.png. Metrics
enter VICE oriented so that higher is better (deletion is negated); the JSON records metric
and orientation. `--compare` writes vice_compare_M.json beside CSV_A (or --json):
VICE(A) - VICE(B), paired bootstrap interval, permutation p-value.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dywsss.cli import run_main
from dywsss.config import add_debug_arg
from dywsss.errors import ConfigError
from dywsss.io import write_json_atomic
from dywsss.metrics.per_sample import read_csv_provenance, read_per_sample_csv
from dywsss.metrics.vice import loss_bins, vice
from dywsss.viz.reliability import figure_provenance
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


def metric_output_paths(csv: Path, metric: str, json_path: Path | None) -> tuple[Path, Path, Path]:
    """``vice_<metric>.json``, ``vice_<metric>_bins.png`` (not written for a map metric: its bins are in the
    JSON), ``loss_vs_<metric>.png`` (miou: :func:`output_paths`)."""
    if metric == "miou":
        return output_paths(csv, json_path)
    if json_path is not None:
        stem = json_path.with_suffix("")
        return json_path, Path(f"{stem}_bins.png"), Path(f"{stem}_loss_vs_{metric}.png")
    prefix = "" if csv.name == "per_sample.csv" else f"{csv.stem}_"
    d = csv.parent
    return d / f"{prefix}vice_{metric}.json", d / f"{prefix}vice_{metric}_bins.png", d / f"{prefix}loss_vs_{metric}.png"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--dir_csv", type=Path, default=None, help="per-sample CSV (name_image, loss, miou, ...)")
    p.add_argument("--plot_title", default="", help="figure title, e.g. ResNet-50")
    p.add_argument("--json", type=Path, default=None, help="output JSON (figures get its name as prefix)")
    p.add_argument("--metric", default=None,
                   help="column to correlate with -loss: miou (default, the paper's), ji_reference, ji_paper, a map "
                        "metric column (epg, epg_box, pg, ap_mask, gini, insertion[_norm], deletion[_norm]), a "
                        "comma-separated list, or all (every such column of the CSV)")
    p.add_argument("--orientation", choices=("auto", "higher", "lower"), default="auto",
                   help="auto: from the registered metric (deletion: lower is better); for other columns say which")
    p.add_argument("--ji_column", default=None, help="the original option: same as --metric for a JI column")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("CSV_A", "CSV_B"), default=None,
                   help="difference of VICE between two runs on the same images")
    p.add_argument("--bins", type=int, default=10, help="equal-count loss bins in the figure")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% interval")
    p.add_argument("--permutations", type=int, default=9999, help="permutations for the --compare p-value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop_nan", action="store_true",
                   help="drop rows whose loss or JI is NaN (e.g. images without valid mask pixels), with a warning; "
                        "rows where a map metric is undefined (NaN) are always left out of that metric's VICE")
    p.add_argument("--VICE", type=float, default=None, help="ignored (the original printed a given value); recomputed")
    add_debug_arg(p)
    args = p.parse_args(argv)
    if (args.dir_csv is None) == (args.compare is None):
        raise ConfigError("give either --dir_csv CSV or --compare CSV_A CSV_B")
    if args.metric is None:
        args.metric = args.ji_column or "miou"
    elif args.ji_column is not None and args.ji_column != args.metric:
        raise ConfigError(f"--ji_column {args.ji_column} contradicts --metric {args.metric}")
    return args


JI_COLUMNS = ("miou", "ji_reference", "ji_paper")
TABLE_KEYS = ("vice", "ci_low", "ci_high", "n", "spearman", "p_value", "mean", "sign", "orientation", "n_dropped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compare is not None:
        return compare(args)
    metrics = [m.strip() for m in args.metric.split(",") if m.strip()]
    if metrics == ["all"]:
        import pandas as pd

        from dywsss.metrics.metric_vice import metric_columns_in

        metrics = metric_columns_in(pd.read_csv(args.dir_csv, nrows=0)) if args.dir_csv.is_file() else ["miou"]
    if len(metrics) == 1:
        one_metric(args, metrics[0], args.json)
        return 0
    from dywsss.metrics.metric_vice import orientation_of

    for m in metrics:  # unknown names fail before any work
        orientation_of(m, args.orientation)
    table = {m: one_metric(args, m, None) for m in metrics}
    write_metrics_table(args, table)
    return 0


def one_metric(args: argparse.Namespace, column: str, json_path: Path | None) -> dict:
    """VICE of one column; returns its row of the metrics table."""
    if column in JI_COLUMNS and args.orientation == "auto":
        res = paper_vice(args, column, json_path)
    else:
        res = metric_vice_files(args, column, json_path)
    row = {k: res.get(k) for k in TABLE_KEYS}
    row["partial_vice"] = (res.get("partial") or {}).get("partial_vice")
    return row


def paper_vice(args: argparse.Namespace, column: str, json_path: Path | None) -> dict:
    """VICE of a JI column, exactly as before (vice.json, vice_bins.png, loss_vs_ji.png), plus the
    metric/orientation record, per-class and partial VICE."""
    from dywsss.metrics.metric_vice import orientation_text, vice_breakdown

    columns = ("name_image", "loss", column)
    df = read_per_sample_csv(args.dir_csv, columns, dropna=args.drop_nan)
    provenance = read_csv_provenance(args.dir_csv)
    n_dropped = df.attrs["n_dropped"]
    loss, ji = df["loss"].to_numpy(), df[column].to_numpy()
    res = vice(loss, ji, n_boot=args.bootstrap, seed=args.seed)
    print(f"{args.dir_csv}: VICE = {res.vice:.4f}  95% CI [{res.ci_low:.4f}, {res.ci_high:.4f}]  "
          f"n = {res.n}  Spearman = {res.spearman:.4f}  p = {res.p_value:.3g}")
    json_path, bins_png, scatter_png = output_paths(args.dir_csv, json_path)
    summary = res.summary()
    summary.update(ji_column=column, ji_definition=_ji_definition(df, column),
                   n_dropped=n_dropped, loss_bins=args.bins, csv=str(args.dir_csv),
                   definition="Pearson correlation of (-loss, JI); CI: percentile bootstrap over images",
                   provenance=provenance)
    summary.update(metric=column, orientation=orientation_text(1), sign=1, mean=float(df[column].mean()))
    summary.update(vice_breakdown(df, column, 1, n_boot=args.bootstrap, seed=args.seed))
    n_bins = min(args.bins, res.n)
    if n_bins >= 1:
        mean_loss, mean_ji, count = loss_bins(loss, ji, n_bins)
        summary.update(bin_mean_loss=mean_loss.tolist(), bin_mean_ji=mean_ji.tolist(), bin_count=count.tolist())
        print(f"wrote {plot_vice_bins(mean_loss, mean_ji, bins_png, args.plot_title, res.vice, provenance)}")
        print(f"wrote {plot_loss_vs_ji(loss, ji, scatter_png, args.plot_title, res.vice, provenance)}")
    print(f"wrote {write_json_atomic(json_path, summary)}")
    return summary


def metric_vice_files(args: argparse.Namespace, column: str, json_path: Path | None) -> dict:
    """VICE of a map metric column: vice_<metric>.json and loss_vs_<metric>.png. Images where the
    metric is undefined (NaN) are left out (counted in n_dropped)."""
    from dywsss.metrics.metric_vice import finite_rows, loss_bin_summary, metric_vice, orientation_of, \
        read_metric_table
    from dywsss.viz.map_metrics import plot_loss_vs_metric

    sign = orientation_of(column, args.orientation)
    df = finite_rows(read_metric_table(args.dir_csv, column, args.drop_nan or column not in JI_COLUMNS),
                     ("loss", column))
    res = metric_vice(df, column, sign, n_boot=args.bootstrap, seed=args.seed)
    provenance = read_csv_provenance(args.dir_csv)
    res.update(n_dropped=df.attrs["n_dropped"], csv=str(args.dir_csv), loss_bins=args.bins,
               definition="Pearson correlation of (-loss, sign * metric); CI: percentile bootstrap over images",
               provenance=provenance)
    json_path, _, scatter_png = metric_output_paths(args.dir_csv, column, json_path)
    loss, value = df["loss"].to_numpy(), df[column].to_numpy()
    if res["n"] >= 1:
        res.update(loss_bin_summary(loss, sign * value, min(args.bins, res["n"])))
        with figure_provenance(provenance):
            png = plot_loss_vs_metric(loss, value, scatter_png, column, args.plot_title, res["vice"],
                                      (res["ci_low"], res["ci_high"]), sign)
        print(f"wrote {png}")
    print(f"{args.dir_csv} [{column}, {res['orientation']}]: VICE = {_fmt(res['vice'])}  95% CI "
          f"[{_fmt(res['ci_low'])}, {_fmt(res['ci_high'])}]  n = {res['n']}  Spearman = {_fmt(res['spearman'])}")
    print(f"wrote {write_json_atomic(json_path, res)}")
    return res


def write_metrics_table(args: argparse.Namespace, table: dict) -> None:
    """``vice_metrics.json`` (one row per metric) and ``loss_vs_metrics.png`` (one panel per metric)."""
    import pandas as pd

    from dywsss.viz.map_metrics import plot_loss_vs_metrics

    d = args.dir_csv.parent
    prefix = "" if args.dir_csv.name == "per_sample.csv" else f"{args.dir_csv.stem}_"
    out = args.json or d / f"{prefix}vice_metrics.json"
    provenance = read_csv_provenance(args.dir_csv)
    print(f"wrote {write_json_atomic(out, {'csv': str(args.dir_csv), 'metrics': table, 'provenance': provenance})}")
    full = pd.read_csv(args.dir_csv)
    values = {m: pd.to_numeric(full[m], errors="coerce").to_numpy(float) for m in table}
    with figure_provenance(provenance):
        png = plot_loss_vs_metrics(full["loss"].to_numpy(float), values, d / f"{prefix}loss_vs_metrics.png", table,
                                   args.plot_title)
    print(f"wrote {png}")


def compare(args: argparse.Namespace) -> int:
    """``--compare CSV_A CSV_B``: VICE(A) - VICE(B) of one metric on the same images."""
    from dywsss.metrics.metric_vice import align_runs, compare_runs, orientation_of, read_metric_table

    metric = args.metric
    if "," in metric or metric == "all":
        raise ConfigError(f"--compare takes one --metric, got {metric!r}")
    sign = orientation_of(metric, args.orientation)
    path_a, path_b = args.compare
    allow_nan = args.drop_nan or metric not in ("miou", "ji_reference", "ji_paper")
    a, b = (read_metric_table(p, metric, allow_nan) for p in (path_a, path_b))
    a, b = align_runs(a, b, path_a, path_b)
    res = compare_runs(a, b, metric, sign, n_boot=args.bootstrap, n_permutations=args.permutations, seed=args.seed)
    res.update(csv_a=str(path_a), csv_b=str(path_b),
               provenance=dict(a=read_csv_provenance(path_a), b=read_csv_provenance(path_b)))
    print(f"[{metric}] VICE(A) = {_fmt(res['vice_a'])}  VICE(B) = {_fmt(res['vice_b'])}  A - B = "
          f"{_fmt(res['difference'])}  95% CI [{_fmt(res['ci_low'])}, {_fmt(res['ci_high'])}]  "
          f"p = {_fmt(res['p_value'])}  n = {res['n']}")
    prefix = "" if path_a.name == "per_sample.csv" else f"{path_a.stem}_"
    out = args.json or path_a.parent / f"{prefix}vice_compare_{metric}.json"
    print(f"wrote {write_json_atomic(out, res)}")
    return 0


def _fmt(x) -> str:
    return "nan" if x is None else f"{x:.4f}"


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
