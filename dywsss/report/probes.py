"""The probe study's numbers ("How to Probe", beyond-spec §1; its Table E2 and Figs. E16-E19).

:func:`read_probe_eval` reads one (probe, method) evaluation of a finished probe session into a row:

- through :func:`dywsss.report.summary.load_run`, which refuses a stale chain (weights -> maps ->
  per-sample CSV -> ``ece.json`` / ``vice.json``, the JI curve -> the maps);
- and checks the rest of what the row reads: ``map_metrics.json`` and ``vice_epg.json`` were
  computed from that CSV, ``gridpg.json`` from those weights, the CSV's architecture record is the
  probe (head and loss) the row names and the maps are of the method it names.

Every number is the file's value; rates are shown in percent (the CSV keeps full precision in the
same units). :func:`bce_vs_ce` sets each BCE probe beside the CE probe of the same head and method,
with intervals: paired percentile bootstrap over images for mean EPG and mean JI, an unpaired one
over grid cells for GridPG (each probe draws its own grids), and the paired VICE comparison of
:func:`dywsss.metrics.metric_vice.compare_runs` (bootstrap interval, permutation p-value).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ConfigError, InputError, StaleError
from ..io import read_json_object
from ..mapfile import read_maps_meta
from ..metrics.metric_vice import align_runs, compare_runs
from ..metrics.per_sample import PROB_COLUMNS, ids_to_multi_hot, read_csv_provenance, read_per_sample_csv
from ..metrics.vice import vice
from ..provenance import sha256_file, short_hash
from .summary import load_run
from .table import FORMATS

PathLike = str | os.PathLike

#: Row columns: (key, header, kind). kind: text | pct (a fraction shown in percent) | corr | int | sha.
ROW_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("probe", "probe", "text"), ("head", "head", "text"), ("loss", "loss", "text"), ("method", "method", "text"),
    ("map", "mAP %", "pct"), ("f1", "F1 %", "pct"), ("acc_ml", "Acc %", "pct"), ("ece_ml", "ECE_ML %", "pct"),
    ("best_miou", "best mIoU %", "pct"), ("ji", "JI %", "pct"), ("epg", "EPG %", "pct"),
    ("gridpg", "GridPG %", "pct"),
    ("vice", "VICE (JI)", "corr"), ("vice_epg", "VICE (EPG)", "corr"),
    ("vice_probe", "VICE probe loss (JI)", "corr"), ("vice_probe_epg", "VICE probe loss (EPG)", "corr"),
    ("n", "n", "int"), ("weights_sha256", "weights sha256", "sha"),
)
#: Correlations shown with their interval: key -> (low key, high key).
INTERVALS = {k: (f"{k}_ci_low", f"{k}_ci_high") for k in ("vice", "vice_epg", "vice_probe", "vice_probe_epg")}
#: Where each number of a row comes from (documentation; also in ``probe_study.json``).
ROW_SOURCES = {
    "map": "ece.json: mAP", "acc_ml": "ece.json: acc_ml", "ece_ml": "ece.json: ece_ml",
    "f1": "per_sample.csv: micro-F1 of the prediction column (p > pred_threshold) against the label column",
    "best_miou": "ji_curve.json: best_miou", "ji": "per_sample.csv: mean of miou (per-image JI at eval_thresh)",
    "epg": "map_metrics.json: metrics.epg.mean", "gridpg": "gridpg.json: gridpg",
    "vice": "vice.json: vice, ci_low, ci_high (Eq. 7 loss vs JI)",
    "vice_epg": "vice_epg.json: vice, ci_low, ci_high (Eq. 7 loss vs EPG)",
    "vice_probe": "dywsss.metrics.vice.vice(probe_loss, miou) on per_sample.csv (the probe's own loss)",
    "vice_probe_epg": "dywsss.metrics.vice.vice(probe_loss, epg) on per_sample.csv, rows with finite EPG",
}


@dataclass(frozen=True)
class ProbeEval:
    """Where one (probe, method) evaluation lives: ``session`` folder, ``tag`` (``map_tag``; "" for the
    session's own method), evaluation list and weights."""

    session: Path
    head: str
    loss: str
    method: str
    tag: str
    list_name: str
    weights: str

    @property
    def probe(self) -> str:
        return f"{self.head}_{self.loss}"


def _stale(path: Path, what: str, stage: str) -> StaleError:
    return StaleError(f"{path}: {what}; redo the {stage} stage (scripts/run_stages.py with the study's options, "
                      "or rerun scripts/probe_study.py)")


def _finite(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def micro_f1(df: pd.DataFrame) -> float:
    """Micro-F1 of the predicted class sets (``prediction``) against the labels (``label``): 2TP / (2TP + FP + FN)."""
    y, p = ids_to_multi_hot(df["label"].tolist()), ids_to_multi_hot(df["prediction"].tolist())
    tp = float((y * p).sum())
    denom = 2 * tp + float(((1 - y) * p).sum()) + float((y * (1 - p)).sum())
    return 2 * tp / denom if denom else float("nan")


def _vice_fields(prefix: str, loss: np.ndarray, metric: np.ndarray, n_boot: int, level: float, seed: int
                 ) -> dict[str, Any]:
    ok = np.isfinite(loss) & np.isfinite(metric)
    r = vice(loss[ok], metric[ok], n_boot=n_boot, level=level, seed=seed)
    return {prefix: _finite(r.vice), f"{prefix}_ci_low": _finite(r.ci_low), f"{prefix}_ci_high": _finite(r.ci_high)}


def read_probe_eval(ev: ProbeEval, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                    with_gridpg: bool = True) -> dict[str, Any]:
    """One row (:data:`ROW_COLUMNS` keys, values as stored: fractions and correlations) plus ``sources``
    (file -> sha256), ``chain`` (``load_run``'s status) and ``eval_dir``; ``gridpg`` is None without
    ``with_gridpg`` (GridPG left out or failed). Raises the
    :class:`dywsss.report.summary.RunNotFinished` / :class:`StaleError` / :class:`InputError` of the
    first missing, stale or foreign file."""
    run = load_run(ev.session, ev.list_name, ev.weights, ev.tag)
    ed, prov = run.eval_dir, run.provenance
    csv_sha, weights_sha = prov.get("csv_sha256"), prov.get("weights_sha256")
    record = read_csv_provenance(run.per_sample_csv)
    head = ((read_json_object(run.per_sample_csv.with_suffix(".meta.json")).get("arch") or {}).get("head") or {}
            if record.get("record") == "per_sample.meta.json" else {})
    if head.get("type") != ev.head or head.get("loss") != ev.loss:
        raise InputError(f"{run.per_sample_csv}: computed from {head.get('type')}/{head.get('loss')} "
                         f"(its record's architecture), not the probe {ev.head}/{ev.loss} of {ev.session}")
    maps = read_maps_meta(run.cam_dir) or {}
    if maps.get("method") != ev.method:
        raise InputError(f"{run.cam_dir}: maps of method {maps.get('method')!r}, not {ev.method!r}")
    mm_path, gp_path, ve_path = ed / "map_metrics.json", ed / "gridpg.json", ed / "vice_epg.json"
    mm, ve = (read_json_object(p) for p in (mm_path, ve_path))
    if (mm.get("provenance") or {}).get("csv_sha256") != csv_sha:
        raise _stale(mm_path, "computed from another version of per_sample.csv", "per_sample")
    if (ve.get("provenance") or {}).get("csv_sha256") != csv_sha:
        raise _stale(ve_path, "computed from another version of per_sample.csv", "vice")
    gp: dict[str, Any] = {}
    if with_gridpg:
        gp = read_json_object(gp_path)
        gp_w = ((gp.get("provenance") or {}).get("weights") or {}).get("sha256")
        if gp_w != weights_sha:
            raise _stale(gp_path, f"computed from weights {short_hash(gp_w)}, not {short_hash(weights_sha)}", "gridpg")
        if gp.get("settings", {}).get("method") != ev.method:
            raise InputError(f"{gp_path}: GridPG of method {gp.get('settings', {}).get('method')!r}, not {ev.method!r}")
    df = read_eval_csv(run.per_sample_csv)
    loss_probe = df["probe_loss"].to_numpy(np.float64)
    row: dict[str, Any] = dict(
        probe=ev.probe, head=ev.head, loss=ev.loss, method=ev.method, tag=ev.tag,
        map=run.ece["mAP"], acc_ml=run.ece["acc_ml"], ece_ml=run.ece["ece_ml"], f1=micro_f1(df),
        best_miou=run.ji_curve["best_miou"], ji=float(np.nanmean(df["miou"].to_numpy(np.float64))),
        epg=mm["metrics"]["epg"]["mean"], gridpg=gp.get("gridpg"), gridpg_cells=gp.get("n_cells"),
        vice=run.vice["vice"], vice_ci_low=run.vice["ci_low"], vice_ci_high=run.vice["ci_high"],
        vice_epg=ve["vice"], vice_epg_ci_low=ve["ci_low"], vice_epg_ci_high=ve["ci_high"],
        **_vice_fields("vice_probe", loss_probe, df["miou"].to_numpy(np.float64), n_boot, level, seed),
        **_vice_fields("vice_probe_epg", loss_probe, df["epg"].to_numpy(np.float64), n_boot, level, seed),
        n=int(run.vice["n"]), weights_sha256=weights_sha, chain=prov.get("status"), eval_dir=str(ed),
    )
    read = [run.weights_file, run.per_sample_csv, ed / "ece.json", ed / "vice.json", ed / "ji_curve.json", mm_path,
            ve_path, *((gp_path, gp_path.with_name("gridpg.csv")) if with_gridpg else ())]
    row["sources"] = {str(p): sha256_file(p) for p in read}
    return row


def read_eval_csv(path: PathLike) -> pd.DataFrame:
    """A probe evaluation's per-sample CSV (``probe_loss``, ``miou`` checked; ``epg`` kept with its NaNs:
    EPG is undefined for an all-zero map)."""
    df = read_per_sample_csv(path, ("name_image", "loss", "probe_loss", "miou", "label", "prediction"))
    if "epg" not in df.columns:
        raise InputError(f"{path}: no epg column (the per-sample stage's map_metrics must include epg)")
    df["epg"] = pd.to_numeric(df["epg"], errors="coerce").astype(np.float64)
    return df


# ------------------------------------------------------------------ a CE probe's one-class cap
def single_class_cap(labels: Sequence[object]) -> dict[str, Any]:
    """What a classifier predicting at most one class per image can reach on these label sets (id strings, as
    the per-sample CSV's ``label`` column): at most one true positive per labelled image, so TP <= N+ (images
    with a label) of the L labels; recall <= N+ / L and micro-F1 = 2TP / (P + L) <= 2 N+ / (N+ + L)."""
    y = ids_to_multi_hot(list(labels))
    per_image = y.sum(1)
    n_pos, n_labels = int((per_image > 0).sum()), int(per_image.sum())
    return dict(n_images=int(len(y)), n_multi=int((per_image > 1).sum()), n_labels=n_labels, max_tp=n_pos,
                max_recall=n_pos / n_labels if n_labels else float("nan"),
                max_f1=2 * n_pos / (n_pos + n_labels) if n_labels else float("nan"))


def ce_cap_note(rows: Sequence[Mapping[str, Any]], losses: Sequence[str], pred_threshold: float) -> str | None:
    """The caveat of reading a CE probe through softmax (None when the study has no CE probe, or its
    ``pred_threshold`` is below 0.5): probabilities that sum to 1 let at most one class exceed a threshold
    >= 0.5. With the numbers of the evaluation list's labels when a CE row was read."""
    if "ce" not in losses or pred_threshold < 0.5:
        return None
    text = (f"A CE probe is read through softmax (its class probabilities sum to 1), so with pred_threshold="
            f"{pred_threshold:g} it predicts at most one class per image. On multi-label data this caps its F1 and "
            "ML accuracy, the classes explained with cam_classes=pred and GridPG's candidate images (images "
            "predicted as exactly their class); the decision rule is the same for every probe and is not changed.")
    ce = next((r for r in rows if r.get("loss") == "ce" and r.get("eval_dir")), None)
    if ce is None:
        return text
    cap = single_class_cap(read_eval_csv(Path(ce["eval_dir"]) / "per_sample.csv")["label"].tolist())
    return text + (f" Here {cap['n_multi']} of the {cap['n_images']} evaluation images have more than one class: a "
                   f"CE probe can find at most {cap['max_tp']} of the {cap['n_labels']} labels (recall <= "
                   f"{100 * cap['max_recall']:.2f}%, micro-F1 <= {100 * cap['max_f1']:.2f}%).")


# ------------------------------------------------------------------ BCE vs CE
#: Quantities compared between the BCE and the CE probe of one head and method:
#: (key, header, kind, how the interval is made: None | "images" | "cells" | (VICE metric column, loss column)).
COMPARED: tuple[tuple[str, str, str, Any], ...] = (
    ("map", "mAP", "pct", None), ("f1", "F1", "pct", None), ("best_miou", "best mIoU", "pct", None),
    ("ji", "JI", "pct", "images"), ("epg", "EPG", "pct", "images"), ("gridpg", "GridPG", "pct", "cells"),
    ("vice", "VICE (JI)", "corr", ("miou", "loss")), ("vice_epg", "VICE (EPG)", "corr", ("epg", "loss")),
    ("vice_probe", "VICE probe loss (JI)", "corr", ("miou", "probe_loss")),
    ("vice_probe_epg", "VICE probe loss (EPG)", "corr", ("epg", "probe_loss")),
)
LOCALISATION = ("ji", "epg", "gridpg", "best_miou")


def mean_difference(a: np.ndarray, b: np.ndarray, paired: bool, n_boot: int = 2000, level: float = 0.95,
                    seed: int = 0) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its percentile bootstrap interval (``scipy.stats.bootstrap``): resampling the
    pairs (a_i, b_i) together when ``paired`` (same images; pairs with a non-finite value left out), else
    each sample on its own (finite values). NaN when a side has fewer than 2 values."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if paired:
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
    else:
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    nan = float("nan")
    if a.size < 2 or b.size < 2:
        return nan, nan, nan
    d = float(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    if paired:
        diff = a - b
        if np.ptp(diff) == 0:
            return d, d, d
        res = stats.bootstrap((diff,), np.mean, vectorized=True, n_resamples=n_boot, confidence_level=level,
                              method="percentile", rng=rng)
    else:
        res = stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), vectorized=True,
                              n_resamples=n_boot, confidence_level=level, method="percentile", rng=rng)
    lo, hi = res.confidence_interval
    return d, float(lo), float(hi)


def _pair_order(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["head"], r["method"]) for r in rows))


def _gridpg_scores(row: Mapping[str, Any]) -> np.ndarray | None:
    """The GridPG cell scores of a row (None when the row has no GridPG)."""
    if row.get("gridpg") is None:
        return None
    return pd.read_csv(Path(row["eval_dir"]) / "gridpg.csv")["score"].to_numpy(np.float64)


def comparison_columns() -> list[str]:
    """The columns of :func:`bce_vs_ce`, in order (every column, whatever the rows)."""
    cols = ["head", "method", "probe_bce", "probe_ce"]
    for key, _, _, how in COMPARED:
        cols += [f"{key}_ce", f"{key}_bce", f"d_{key}"]
        if how is not None:
            cols += [f"d_{key}_ci_low", f"d_{key}_ci_high"]
        if isinstance(how, tuple):
            cols.append(f"d_{key}_p")
    return cols + ["note"]


def bce_vs_ce(rows: Sequence[Mapping[str, Any]], n_boot: int = 2000, n_permutations: int = 9999,
              level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (head, method) with both a BCE and a CE probe: for each :data:`COMPARED` quantity
    ``<q>_ce``, ``<q>_bce``, ``d_<q>`` = BCE - CE and, where an interval is defined, ``d_<q>_ci_low``,
    ``d_<q>_ci_high`` (and ``d_<q>_p``, the permutation p-value, for VICE). Values as stored (fractions).

    A pair whose per-sample CSVs do not hold the same images (:func:`align_runs` refuses them) is not
    comparable: its row has only the names and ``note`` (``not comparable: <why>``), and the others go on."""
    by = {(r["head"], r["method"], r["loss"]): r for r in rows}
    out = []
    for head, method in _pair_order(rows):
        b, c = by.get((head, method, "bce")), by.get((head, method, "ce"))
        if b is None or c is None:
            continue
        row: dict[str, Any] = dict(head=head, method=method, probe_bce=b["probe"], probe_ce=c["probe"], note="")
        pb, pc = Path(b["eval_dir"]) / "per_sample.csv", Path(c["eval_dir"]) / "per_sample.csv"
        try:
            db, dc = align_runs(read_eval_csv(pb), read_eval_csv(pc), pb, pc)
        except InputError as exc:
            out.append(dict(row, note=f"not comparable: {exc}"))
            continue
        gb, gc = (_gridpg_scores(r) for r in (b, c))
        for key, _, _, how in COMPARED:
            vb, vc = b.get(key), c.get(key)
            row[f"{key}_ce"], row[f"{key}_bce"] = vc, vb
            row[f"d_{key}"] = None if vb is None or vc is None else float(vb) - float(vc)
            if how == "cells" and (gb is None or gc is None):
                row.update({f"d_{key}_ci_low": None, f"d_{key}_ci_high": None})
            elif how in ("images", "cells"):
                col = {"ji": "miou"}.get(key, key)
                xb, xc = (db[col].to_numpy(np.float64), dc[col].to_numpy(np.float64)) if how == "images" else (gb, gc)
                d, lo, hi = mean_difference(xb, xc, how == "images", n_boot, level, seed)
                row.update({f"d_{key}_ci_low": _finite(lo), f"d_{key}_ci_high": _finite(hi)})
            elif isinstance(how, tuple):
                metric, loss = how
                res = compare_runs(db.assign(loss=db[loss]), dc.assign(loss=dc[loss]), metric, +1, n_boot=n_boot,
                                   n_permutations=n_permutations, level=level, seed=seed)
                row.update({f"d_{key}_ci_low": res["ci_low"], f"d_{key}_ci_high": res["ci_high"],
                            f"d_{key}_p": res["p_value"]})
        out.append(row)
    return pd.DataFrame(out, columns=comparison_columns())


def not_comparable(comparisons: pd.DataFrame) -> list[str]:
    """``head/method: why`` for each pair :func:`bce_vs_ce` could not compare."""
    if comparisons.empty:
        return []
    notes = comparisons["note"].fillna("").astype(str)
    return [f"{r['head']}/{r['method']}: {n}" for (_, r), n in zip(comparisons.iterrows(), notes) if n]


def answer_lines(comparisons: pd.DataFrame, level: float = 0.95) -> list[str]:
    """The study's question in numbers: for each compared quantity, in how many (head, method) pairs BCE
    is above CE and where the interval lies; and whether VICE moves in the direction of its metric."""
    if comparisons.empty:
        return ["no (head, method) has both a BCE and a CE probe finished: nothing to compare"]
    header = {k: h for k, h, _, _ in COMPARED}
    lines = [f"{pair} (left out of the counts below)" for pair in not_comparable(comparisons)]
    for key, _, _, how in COMPARED:
        d = pd.to_numeric(comparisons[f"d_{key}"], errors="coerce")
        n = int(d.notna().sum())
        if not n:
            continue
        text = f"{header[key]}: BCE > CE in {int((d > 0).sum())} of {n} (head, method) pairs"
        if how is not None:
            lo = pd.to_numeric(comparisons[f"d_{key}_ci_low"], errors="coerce")
            hi = pd.to_numeric(comparisons[f"d_{key}_ci_high"], errors="coerce")
            text += (f"; the {100 * level:g}% interval of BCE - CE lies above 0 in {int((lo > 0).sum())}, "
                     f"below 0 in {int((hi < 0).sum())}, covers 0 in {int(((lo <= 0) & (hi >= 0)).sum())}")
        lines.append(text)
    for vkey, mkey in (("vice", "ji"), ("vice_epg", "epg"), ("vice_probe", "ji"), ("vice_probe_epg", "epg")):
        dv = pd.to_numeric(comparisons[f"d_{vkey}"], errors="coerce")
        dm = pd.to_numeric(comparisons[f"d_{mkey}"], errors="coerce")
        ok = dv.notna() & dm.notna()
        same = int((np.sign(dv[ok]) == np.sign(dm[ok])).sum())
        lines.append(f"{header[vkey]} moves in the direction of {header[mkey]} (same sign of BCE - CE) in "
                     f"{same} of {int(ok.sum())} pairs")
    return lines


# ------------------------------------------------------------------ tables
def _number(value: Any, kind: str, numeric: bool) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if kind == "pct":
        return repr(100.0 * float(value)) if numeric else f"{100.0 * float(value):.2f}"
    if kind == "corr":
        return repr(float(value)) if numeric else f"{float(value):.3f}"
    if kind == "int":
        return str(int(value))
    if kind == "sha":
        return str(value) if numeric else short_hash(value)
    return str(value)


def row_table(rows: Sequence[Mapping[str, Any]], numeric: bool) -> pd.DataFrame:
    """The probe table as text cells: one row per (probe, method). ``numeric``: full precision in the same units
    (percent for rates), intervals as their own columns; else display precision, ``v [lo, hi]``."""
    out = []
    for r in rows:
        cells: dict[str, str] = {}
        for key, header, kind in ROW_COLUMNS:
            value = _number(r.get(key), kind, numeric)
            if key in INTERVALS:
                lo, hi = (_number(r.get(k), kind, numeric) for k in INTERVALS[key])
                if numeric:
                    cells.update({key: value, INTERVALS[key][0]: lo, INTERVALS[key][1]: hi})
                    continue
                value = f"{value} [{lo}, {hi}]" if value else ""
            cells[key if numeric else header] = value
        out.append(cells)
    return pd.DataFrame(out)


def comparison_table(comparisons: pd.DataFrame, numeric: bool) -> pd.DataFrame:
    """The BCE-vs-CE table as text cells: ``ce -> bce (Δ [lo, hi])`` per quantity, or every number on its own
    column (``numeric``, percent for rates)."""
    if comparisons.empty:
        return pd.DataFrame()
    if numeric:
        kinds = {k: kind for k, _, kind, _ in COMPARED}
        cols = {}
        for col in comparisons.columns:
            base = col.removeprefix("d_").removesuffix("_ci_low").removesuffix("_ci_high").removesuffix("_p")
            base = base.removesuffix("_ce").removesuffix("_bce") if base not in kinds else base
            kind = "corr" if col.endswith("_p") else kinds.get(base, "text")
            cols[col] = [_number(v, kind, True) for v in comparisons[col]]
        return pd.DataFrame(cols)
    out = []
    for _, r in comparisons.iterrows():
        cells = {"head": r["head"], "method": r["method"]}
        for key, header, kind, how in COMPARED:
            ce, bce, d = (_number(r.get(k), kind, False) for k in (f"{key}_ce", f"{key}_bce", f"d_{key}"))
            text = f"{ce} → {bce}" if ce and bce else ""
            if d:
                sign = "+" if float(r[f"d_{key}"]) >= 0 else ""
                text += f" ({sign}{d}"
                if how is not None:
                    lo, hi = (_number(r.get(f"d_{key}_ci_{s}"), kind, False) for s in ("low", "high"))
                    text += f" [{lo}, {hi}]"
                text += ")"
            cells[f"{header} CE → BCE (Δ)" if how is None else f"{header} CE → BCE (Δ [CI])"] = text
        if not_comparable(comparisons):
            cells["note"] = str(r.get("note") or "")
        out.append(cells)
    return pd.DataFrame(out)


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table (text columns left, the rest right-aligned); pandas' ``to_markdown`` needs tabulate."""
    if frame.empty:
        return "(no rows)\n"
    heads = [str(c) for c in frame.columns]
    right = [c not in TEXT_HEADERS for c in heads]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.to_numpy()]
    return "\n".join(lines) + "\n"


TEXT_HEADERS = frozenset({"probe", "head", "loss", "method", "weights sha256", "probe_bce", "probe_ce", "note"})


def format_frames(display: pd.DataFrame, numeric: pd.DataFrame, fmt: str) -> str:
    """``md`` and ``latex`` (booktabs, via pandas) of the display cells; ``csv`` of the numeric cells."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return numeric.to_csv(index=False, lineterminator="\n")
    if fmt == "md":
        return markdown(display)
    if display.empty:
        return "% no rows\n"
    return display.to_latex(index=False, escape=True, column_format="".join(
        "l" if c in TEXT_HEADERS else "r" for c in display.columns))
