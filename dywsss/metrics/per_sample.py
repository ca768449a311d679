"""The per-sample CSV (stage 4): build it from logits and per-image JI, read it back checked.

Columns: ``name_image, loss, confidence, entropy, label, prediction, miou,
ji_reference, ji_paper, p_00..p_19``; ``label``/``prediction`` are space-separated
0-based class ids; ``miou`` is the JI of the chosen ``ji_definition``.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.voc import NUM_CLASSES
from ..errors import InputError, MissingInputError
from ..io import atomic_path
from .calibration import check_labels, ml_confidence
from .classification import check_logits, binary_entropy, per_sample_loss, sigmoid
from .segmentation import JI_DEFINITIONS, image_confusions, per_image_ji_from_confusions

PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{c:02d}" for c in range(NUM_CLASSES))
PER_SAMPLE_COLUMNS: tuple[str, ...] = (
    "name_image", "loss", "confidence", "entropy", "label", "prediction", "miou", "ji_reference", "ji_paper",
) + PROB_COLUMNS
#: What compute_VICE.py needs (the original CSVs have these).
VICE_COLUMNS: tuple[str, ...] = ("name_image", "loss", "miou")
#: What compute_ECE.py needs.
ECE_COLUMNS: tuple[str, ...] = ("name_image", "label") + PROB_COLUMNS
_UNIT = (0.0, 1.0)
#: Allowed range (inclusive) of each numeric column a reader checks; other columns: finite or NaN.
COLUMN_RANGES: dict[str, tuple[float, float]] = {
    "loss": (0.0, np.inf), "confidence": _UNIT, "entropy": (0.0, float(np.log(2.0)) + 1e-12),
    "miou": _UNIT, "ji_reference": _UNIT, "ji_paper": _UNIT, **{c: _UNIT for c in PROB_COLUMNS},
    # map metrics (dywsss.metrics.map_metrics; NaN where undefined) and their covariates
    "epg": _UNIT, "epg_box": _UNIT, "pg": _UNIT, "ap_mask": _UNIT, "gini": _UNIT, "insertion": _UNIT,
    "deletion": _UNIT, "insertion_norm": (0.0, np.inf), "deletion_norm": (0.0, np.inf), "fg_fraction": _UNIT,
    "n_objects": (0.0, np.inf), "n_classes": (0.0, 20.0), "probe_loss": (0.0, np.inf),
}


def format_ids(row: np.ndarray) -> str:
    """Boolean/0-1 class vector -> ``"4 14"``."""
    return " ".join(str(i) for i in np.flatnonzero(np.asarray(row)))


def parse_ids(text: object, num_classes: int = NUM_CLASSES) -> list[int]:
    """``"4 14"`` (also the original's ``"[ 4 14]"`` / ``"[4, 14]"``; empty -> []) to ids."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    tokens = re.sub(r"[\[\],]", " ", str(text)).split()
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise InputError(f"not a list of class ids: {text!r}") from None
    if any(v != int(v) for v in values):
        raise InputError(f"class ids must be integers, got {text!r}")
    ids = [int(v) for v in values]
    bad = [i for i in ids if not 0 <= i < num_classes]
    if bad:
        raise InputError(f"class ids {bad} outside 0..{num_classes - 1} in {text!r}")
    return ids


def ids_to_multi_hot(texts: Sequence[object], num_classes: int = NUM_CLASSES) -> np.ndarray:
    """A column of id strings to a 0/1 matrix [N, C]."""
    out = np.zeros((len(texts), num_classes), np.int64)
    for i, text in enumerate(texts):
        try:
            out[i, parse_ids(text, num_classes)] = 1
        except InputError as exc:
            raise InputError(f"row {i + 1}: {exc}") from None
    return out


def per_sample_table(
    names: Sequence[str],
    logits: np.ndarray,
    labels: np.ndarray,
    ji_reference: np.ndarray,
    ji_paper: np.ndarray,
    ji_definition: str = "reference",
    pred_threshold: float = 0.5,
    extra: Mapping[str, np.ndarray] | None = None,
    probs: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per image with loss (Eq. 7), ML-confidence (Eq. 2), entropy, label and
    predicted ids (``p > pred_threshold``), both JIs and ``miou`` = the chosen one; ``extra``
    columns (map metrics, covariates) follow the JIs, then the class probabilities. ``probs``
    replaces the sigmoid of the logits where a model's outputs are read otherwise (softmax of a
    CE-trained probe); the loss column stays Eq. 7 on the logits."""
    if ji_definition not in JI_DEFINITIONS:
        raise ValueError(f"ji_definition must be one of {JI_DEFINITIONS}, got {ji_definition!r}")
    x = check_logits(np.asarray(logits))
    if x.shape[1] != NUM_CLASSES:
        raise ValueError(f"logits must have {NUM_CLASSES} classes, got shape {x.shape}")
    y = check_labels(np.asarray(labels), x.shape)
    n = len(names)
    ji_ref = np.asarray(ji_reference, dtype=np.float64).reshape(-1)
    ji_pap = np.asarray(ji_paper, dtype=np.float64).reshape(-1)
    if not x.shape[0] == n == ji_ref.size == ji_pap.size:
        raise ValueError(f"lengths differ: {n} names, {x.shape[0]} logits, {ji_ref.size} / {ji_pap.size} JI values")
    p = sigmoid(x) if probs is None else np.asarray(probs, dtype=np.float64)
    if p.shape != x.shape:
        raise ValueError(f"probs {p.shape} do not match logits {x.shape}")
    table = {
        "name_image": list(names),
        "loss": per_sample_loss(x, y),
        "confidence": ml_confidence(p, pred_threshold),
        "entropy": binary_entropy(x),
        "label": [format_ids(r) for r in y],
        "prediction": [format_ids(r) for r in p > pred_threshold],
        "miou": ji_ref if ji_definition == "reference" else ji_pap,
        "ji_reference": ji_ref,
        "ji_paper": ji_pap,
    }
    extra = {k: np.asarray(v) for k, v in (extra or {}).items() if k not in table}
    bad = [k for k, v in extra.items() if v.shape != (n,)]
    if bad:
        raise ValueError(f"extra columns {bad} do not have {n} values")
    table.update(extra)
    table.update({col: p[:, c] for c, col in enumerate(PROB_COLUMNS)})
    base = [c for c in PER_SAMPLE_COLUMNS if c not in PROB_COLUMNS]
    return pd.DataFrame(table, columns=base + list(extra) + list(PROB_COLUMNS))


def write_per_sample_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the table atomically (floats at full precision)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def per_image_ji(
    map_dir: str | os.PathLike,
    names: Sequence[str],
    gt_dir: str | os.PathLike,
    t: float = 0.1,
    allow_pickle: bool = False,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(ji_reference, ji_paper)`` [N] of the maps in ``map_dir`` at background threshold ``t``.

    Map files ``<name>.npz`` (or legacy ``.npy`` with ``allow_pickle``) via
    :func:`dywsss.mapfile.load_maps`; masks ``gt_dir/<name>.png``. Missing files,
    size mismatches and bad values raise errors naming the file.
    """
    conf = image_confusions(map_dir, names, gt_dir, t=t, allow_pickle=allow_pickle, progress=progress)
    return per_image_ji_from_confusions(conf, names)


def read_per_sample_csv(
    path: str | os.PathLike, columns: Sequence[str] = PER_SAMPLE_COLUMNS, dropna: bool = False
) -> pd.DataFrame:
    """Read a per-sample CSV and check ``columns``: present, numeric, in range, no NaN, no repeated image.

    ``label``/``prediction`` stay strings (empty string for no class); numeric
    columns must parse as numbers within :data:`COLUMN_RANGES`. Errors name the
    file, the column, the 1-based data row and the value. ``dropna=True`` drops
    rows with a NaN in a numeric column of ``columns`` (e.g. images without valid
    mask pixels) with a warning instead; ``df.attrs["n_dropped"]``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: per-sample CSV not found")
    try:
        df = pd.read_csv(path, dtype={"label": str, "prediction": str, "name_image": str},
                         keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    if df.empty:
        raise InputError(f"{path}: no rows")
    for col in ("label", "prediction"):
        if col in df.columns:
            df[col] = df[col].fillna("")  # an empty id list is written as an empty field
    if "name_image" in df.columns:
        _check_names(path, df["name_image"])
    numeric = [c for c in columns if c not in ("name_image", "label", "prediction")]
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            row = _rows(bad)[0]
            raise InputError(f"{path}: row {row}: column {col!r} = {df[col].iloc[row - 1]!r} is not a number")
        df[col] = values.astype(np.float64)
        _check_range(path, col, df[col])
    bad = df[numeric].isna().any(axis=1) if numeric else pd.Series(False, index=df.index)
    n_dropped = int(bad.sum())
    if n_dropped and not dropna:
        col = next(c for c in numeric if df[c].isna().any())
        raise InputError(f"{path}: column {col!r} has NaN values (rows {_rows(df[col].isna())}); "
                         "drop them explicitly if intended (e.g. compute_VICE.py --drop_nan)")
    if n_dropped:
        warnings.warn(f"{path}: dropping {n_dropped} row(s) with NaN in {numeric} (rows {_rows(bad)})",
                      stacklevel=2)
        df = df[~bad].reset_index(drop=True)
        if df.empty:
            raise InputError(f"{path}: no rows left after dropping NaN")
    df.attrs["n_dropped"] = n_dropped
    return df


def _check_names(path: Path, names: pd.Series) -> None:
    if names.isna().any():
        raise InputError(f"{path}: column name_image has empty entries (rows {_rows(names.isna())})")
    dup = names.duplicated(keep="first")
    if dup.any():
        row = _rows(dup)[0]
        first = int(np.flatnonzero((names == names.iloc[row - 1]).to_numpy())[0]) + 1
        raise InputError(f"{path}: row {row}: image {names.iloc[row - 1]!r} appears twice (first at row {first}); "
                         "each image must have one row")


def _check_range(path: Path, col: str, values: pd.Series) -> None:
    v = values.to_numpy()
    lo, hi = COLUMN_RANGES.get(col, (-np.inf, np.inf))
    with np.errstate(invalid="ignore"):
        bad = np.isinf(v) if np.isinf(lo) and np.isinf(hi) else ~np.isnan(v) & ((v < lo) | (v > hi) | np.isinf(v))
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        what = "finite" if np.isinf(lo) and np.isinf(hi) else f"in [{lo:g}, {hi:g}]"
        raise InputError(f"{path}: row {row}: column {col!r} = {float(v[row - 1])!r} must be {what} "
                         f"({int(bad.sum())} row(s) out of range)")


def _rows(mask: pd.Series) -> list[int]:
    """First few offending data rows, 1-based as a spreadsheet after the header."""
    return (np.flatnonzero(mask.to_numpy())[:5] + 1).tolist()


# ------------------------------------------------------------------ provenance
def csv_meta_path(csv: str | os.PathLike) -> Path:
    """The record beside a per-sample CSV: ``per_sample.csv`` -> ``per_sample.meta.json``."""
    return Path(csv).with_suffix(".meta.json")


def write_csv_meta(csv: str | os.PathLike, record: dict) -> Path:
    """Write the CSV's record (what it was computed from), with the sha256 of the CSV as written."""
    from ..io import write_json_atomic
    from ..provenance import sha256_file

    return write_json_atomic(csv_meta_path(csv), {"csv": Path(csv).name, "csv_sha256": sha256_file(csv), **record})


def read_csv_provenance(csv: str | os.PathLike) -> dict:
    """What a per-sample CSV came from: ``csv_sha256`` always; ``weights_sha256``, ``maps`` and the rest
    from its record when the record matches the CSV. A CSV without a record (the original's, or one
    edited by hand) gets ``record: "none"`` / ``"does not match the CSV"`` and a warning."""
    from ..provenance import sha256_file

    csv = Path(csv)
    digest = sha256_file(csv)
    meta_path = csv_meta_path(csv)
    if not meta_path.is_file():
        warnings.warn(f"{csv}: no {meta_path.name} beside it, so the weights it came from are unknown", stacklevel=2)
        return {"csv": str(csv), "csv_sha256": digest, "record": "none"}
    from ..io import read_json_object

    record = read_json_object(meta_path, "a valid per-sample record")
    if record.get("csv_sha256") != digest:
        warnings.warn(f"{csv}: changed since {meta_path.name} was written (sha256 differs), so the weights it came "
                      "from are unknown; rerun the per-sample stage to restore the record", stacklevel=2)
        return {"csv": str(csv), "csv_sha256": digest, "record": "does not match the CSV"}
    weights = record.get("weights") or {}
    _check_record_inputs(csv, record)
    return {"csv": str(csv), "csv_sha256": digest, "record": meta_path.name,
            "weights_sha256": weights.get("sha256"), "maps_stamp": (record.get("maps") or {}).get("stamp"),
            "ji_definition": (record.get("settings") or {}).get("ji_definition")}


def _check_record_inputs(csv: Path, record: dict) -> None:
    """Refuse a CSV whose weights file or maps folder changed since it was computed."""
    from ..errors import StaleError
    from ..mapfile import meta_stamp, read_maps_meta
    from ..provenance import sha256_file, short_hash

    redo = "rerun the per-sample stage (compute_each_image_loss.py) with the same --options"
    weights = record.get("weights") or {}
    path = Path(weights.get("path") or "")
    if weights.get("sha256") and path.is_file() and sha256_file(path) != weights["sha256"]:
        raise StaleError(f"{csv}: computed from weights sha256 {short_hash(weights['sha256'])}, but {path} is now "
                         f"{short_hash(sha256_file(path))} (retrained?); rerun the map stage and then the "
                         "per-sample stage")
    maps = record.get("maps") or {}
    meta = read_maps_meta(maps["dir"]) if maps.get("stamp") and Path(maps.get("dir", "")).is_dir() else None
    if meta is not None and meta_stamp(meta) != maps["stamp"]:
        raise StaleError(f"{csv}: computed from other maps than {maps['dir']} holds now; {redo}")
