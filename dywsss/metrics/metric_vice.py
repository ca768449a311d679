"""VICE of any per-image map metric of a per-sample CSV, per class, partial, and between two runs.

The CSV columns come from the per-sample stage: ``miou`` / ``ji_reference`` / ``ji_paper``
(the paper's JI) and the columns of the metrics of :mod:`dywsss.metrics.map_metrics`
(``epg``, ``pg``, ``deletion``, ...), with the covariates ``fg_fraction`` and ``n_objects``.
Every metric enters VICE oriented so that higher is better: a lower-is-better metric
(deletion) is negated, and the JSON says so.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..data.voc import CLASS_NAMES
from ..errors import InputError
from .map_eval import PARTIAL_COVARIATES
from .map_metrics import JI_COLUMNS, MAP_METRICS, column_orientation
from .per_sample import ids_to_multi_hot, read_per_sample_csv
from .vice import compare_vice, loss_bins, oriented, partial_vice, per_class_vice, vice

PathLike = str | os.PathLike


def orientation_of(column: str, override: str = "auto") -> int:
    """+1 / -1 for a CSV column: from its registered metric (``auto``), or ``higher`` / ``lower``."""
    if override == "higher":
        return 1
    if override == "lower":
        return -1
    if override != "auto":
        raise ValueError(f"orientation must be auto, higher or lower, got {override!r}")
    try:
        return column_orientation(column)[1]
    except KeyError as exc:
        raise InputError(f"--metric {column}: {exc.args[0]}; pass --orientation higher|lower for another "
                         "column") from None


def orientation_text(sign: int) -> str:
    return "higher is better" if sign > 0 else "lower is better: negated before the correlation"


def metric_columns_in(df: pd.DataFrame) -> list[str]:
    """``miou`` and every registered metric column the table has, in registry order."""
    cols = [c for c in ("miou",) if c in df.columns]
    return cols + [c for n in MAP_METRICS.names() for c in MAP_METRICS.get(n).columns if c in df.columns]


def finite_rows(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Rows whose ``columns`` are all finite; ``attrs['n_dropped']`` counts the others."""
    ok = np.isfinite(df[list(columns)].to_numpy(np.float64)).all(1)
    out = df[ok].reset_index(drop=True)
    out.attrs["n_dropped"] = int((~ok).sum()) + int(df.attrs.get("n_dropped", 0))
    return out


def metric_vice(
    df: pd.DataFrame, column: str, sign: int, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
) -> dict:
    """The ``vice.json`` fields of one metric column: VICE with interval, Spearman and p
    (:func:`dywsss.metrics.vice.vice` on (-loss, sign * metric)) and :func:`vice_breakdown`."""
    loss, value = df["loss"].to_numpy(np.float64), oriented(df[column].to_numpy(np.float64), sign)
    out = vice(loss, value, n_boot=n_boot, level=level, seed=seed).summary()
    out.update(metric=column, orientation=orientation_text(sign), sign=sign,
               mean=float(df[column].mean()) if len(df) else None)
    out.update(vice_breakdown(df, column, sign, n_boot=n_boot, level=level, seed=seed))
    return out


def vice_breakdown(
    df: pd.DataFrame, column: str, sign: int, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
) -> dict:
    """``per_class``: VICE over the images of each class (when the table has ``label``);
    ``partial``: the partial VICE given the object area fraction and object count (when it has
    ``fg_fraction`` and ``n_objects``; else ``partial_vice: None`` and the reason)."""
    loss, value = df["loss"].to_numpy(np.float64), oriented(df[column].to_numpy(np.float64), sign)
    out: dict = {}
    if "label" in df.columns:
        labels = ids_to_multi_hot(df["label"].tolist())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small classes: undefined resamples are reported per class
            out["per_class"] = per_class_vice(loss, value, labels, CLASS_NAMES, n_boot=n_boot, level=level, seed=seed)
    missing = [c for c in PARTIAL_COVARIATES if c not in df.columns]
    if missing:
        out["partial"] = {"partial_vice": None, "reason": f"the CSV lacks {missing} (written by the per-sample "
                                                           "stage together with the map metrics)"}
        return out
    z = df[list(PARTIAL_COVARIATES)].to_numpy(np.float64)
    ok = np.isfinite(z).all(1)
    part = partial_vice(loss[ok], value[ok], z[ok], list(PARTIAL_COVARIATES), n_boot=n_boot, level=level, seed=seed)
    out["partial"] = {**part.summary(), "n_without_covariates": int((~ok).sum()),
                      "definition": "Pearson correlation of the residuals of -loss and of the metric after "
                                    "least squares on (1, fg_fraction, n_objects)"}
    return out


def loss_bin_summary(loss: np.ndarray, value: np.ndarray, n_bins: int) -> dict:
    mean_loss, mean_value, count = loss_bins(loss, value, n_bins)
    return dict(bin_mean_loss=mean_loss.tolist(), bin_mean_metric=mean_value.tolist(), bin_count=count.tolist())


def read_metric_table(path: PathLike, column: str, allow_nan: bool = True) -> pd.DataFrame:
    """A per-sample CSV checked for ``name_image``, ``loss`` and a numeric ``column``; NaN in
    ``column`` is kept (an undefined value) when ``allow_nan``, else an error naming the rows."""
    df = read_per_sample_csv(path, ("name_image", "loss"))
    if column not in df.columns:
        raise InputError(f"{path}: missing column {column!r}; has {list(df.columns)}")
    values = pd.to_numeric(df[column], errors="coerce")
    if (values.isna() & df[column].notna()).any():
        raise InputError(f"{path}: column {column!r} has non-numeric values")
    if not allow_nan and values.isna().any():
        rows = (np.flatnonzero(values.isna().to_numpy())[:5] + 1).tolist()
        raise InputError(f"{path}: column {column!r} has NaN values (rows {rows}); pass --drop_nan to leave "
                         "those images out")
    df[column] = values.astype(np.float64)
    return df


def align_runs(a: pd.DataFrame, b: pd.DataFrame, path_a: PathLike, path_b: PathLike
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two tables with rows in the same image order; refuses differing or repeated image sets."""
    for df, path in ((a, path_a), (b, path_b)):
        dup = df["name_image"][df["name_image"].duplicated()]
        if len(dup):
            raise InputError(f"{path}: image {dup.iloc[0]!r} appears more than once")
    names_a, names_b = set(a["name_image"]), set(b["name_image"])
    if names_a != names_b:
        only_a, only_b = sorted(names_a - names_b), sorted(names_b - names_a)
        where = (f"{only_a[0]!r} is in {path_a} but not in {path_b}" if only_a
                 else f"{only_b[0]!r} is in {path_b} but not in {path_a}")
        raise InputError(f"{path_b}: not the same images as {path_a} ({len(only_a)} only in A, {len(only_b)} "
                         f"only in B; e.g. {where}); compare runs scored on the same list")
    b = b.set_index("name_image").loc[a["name_image"]].reset_index()
    return a.reset_index(drop=True), b


def compare_runs(
    a: pd.DataFrame, b: pd.DataFrame, column: str, sign: int, n_boot: int = 2000, n_permutations: int = 9999,
    level: float = 0.95, seed: int = 0,
) -> dict:
    """VICE(A) - VICE(B) of ``column`` on aligned tables (:func:`align_runs`): images where either
    run's loss or metric is not finite are left out of both."""
    ok = (np.isfinite(a[["loss", column]].to_numpy(np.float64)).all(1)
          & np.isfinite(b[["loss", column]].to_numpy(np.float64)).all(1))
    res = compare_vice(a["loss"].to_numpy(np.float64)[ok], oriented(a[column].to_numpy(np.float64)[ok], sign),
                       b["loss"].to_numpy(np.float64)[ok], oriented(b[column].to_numpy(np.float64)[ok], sign),
                       n_boot=n_boot, n_permutations=n_permutations, level=level, seed=seed)
    return {**res.summary(), "metric": column, "orientation": orientation_text(sign), "sign": sign,
            "n_dropped": int((~ok).sum()),
            "definition": "VICE(A) - VICE(B); interval: paired percentile bootstrap over images "
                          "(scipy.stats.bootstrap, paired=True); p: paired permutation test swapping the runs "
                          "within images (scipy.stats.permutation_test, permutation_type='samples')"}


def is_ji_column(column: str) -> bool:
    return column in JI_COLUMNS


def output_stem(csv: Path, column: str) -> str:
    """File-name stem of a metric's outputs: ``vice`` for miou, ``vice_<column>`` otherwise,
    prefixed with the CSV's stem unless it is ``per_sample.csv``."""
    prefix = "" if csv.name == "per_sample.csv" else f"{csv.stem}_"
    return f"{prefix}vice" if column == "miou" else f"{prefix}vice_{column}"
