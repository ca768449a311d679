"""Several attribution methods on one trained model, side by side: one row per method.

Each method's evaluation lives in the session under its ``map_tag``
(``eval/<list>_<weights>_<tag>/``). :func:`collect_comparison` reads every one
through :func:`dywsss.report.summary.load_run`, which checks the chain weights ->
maps -> per-sample CSV -> summaries and refuses stale outputs, and takes the
numbers from the files the stages wrote:

* ``best_miou``, ``best_threshold``: ``ji_curve.json`` (the paper's JI curve);
* ``epg``, ``pg``, ``insertion``, ``deletion``: ``map_metrics.json`` ``metrics.<m>.mean``
  (docs/MAP_METRICS.md: the dataset mean; for ``pg`` the per-class hit rate averaged over classes);
* ``vice_<m>``, ``vice_<m>_ci_low``, ``vice_<m>_ci_high``: ``vice_metrics.json`` ``metrics.<m>``
  (VICE of JI under ``miou``; deletion enters negated, so higher VICE is better for every metric).

:func:`write_comparison` writes ``compare_methods.{csv,md,tex,json,png}`` into the
session; the JSON records each method's maps stamp, CSV sha256 and settings and
the weights' sha256, and the HTML report (``dywsss.report.html``) shows it in its
"Methods compared" section after :func:`comparison_problems` found it current.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..errors import MissingInputError, StaleError
from ..io import read_json_object, write_json_atomic, write_text_atomic
from ..provenance import library_versions, short_hash
from .summary import RunNotFinished, RunSummary, load_run

PathLike = str | os.PathLike

#: Metrics of the table: the dataset value and the VICE [95% CI] of each.
TABLE_METRICS: tuple[str, ...] = ("miou", "epg", "pg", "insertion", "deletion")
#: Map metrics the comparison needs in ``map_metrics`` (JI is always computed).
REQUIRED_MAP_METRICS: tuple[str, ...] = ("epg", "pg", "insertion", "deletion")
STEM = "compare_methods"
OUTPUTS = tuple(f"{STEM}.{ext}" for ext in ("json", "csv", "md", "tex", "png"))
LABELS = {"miou": "best mIoU (%)", "epg": "EPG", "pg": "PG", "insertion": "insertion", "deletion": "deletion (lower)"}


@dataclass
class Comparison:
    """The table (one row per method, numbers as stored) and the record of where each number came from."""

    frame: pd.DataFrame
    record: dict[str, Any] = field(default_factory=dict)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _read(path: Path) -> dict:
    if not path.is_file():
        raise RunNotFinished(f"{path}: not found (written by the per-sample stage / compute_VICE.py --metric all)")
    return read_json_object(path)


def method_row(run: RunSummary, metrics: Sequence[str] = TABLE_METRICS) -> tuple[dict[str, Any], dict[str, Any]]:
    """One method's numbers (``best_miou``, ``best_threshold``, each metric's dataset value, ``vice_<m>``
    and its interval, ``n``) and its provenance, read from the files of ``run.eval_dir``."""
    map_metrics = _read(run.eval_dir / "map_metrics.json")
    vices = _read(run.eval_dir / "vice_metrics.json").get("metrics", {})
    if "miou" not in vices:  # older vice_metrics.json: the paper's VICE of JI is vice.json
        vices = {**vices, "miou": run.vice}
    row: dict[str, Any] = {"best_miou": _finite(run.ji_curve["best_miou"]),
                           "best_threshold": _finite(run.ji_curve["best_threshold"])}
    missing = []
    for m in metrics:
        if m != "miou":
            entry = map_metrics.get("metrics", {}).get(m)
            if entry is None:
                missing.append(m)
            row[m] = _finite(None if entry is None else entry.get("mean"))
        v = vices.get(m) or {}
        row.update({f"vice_{m}": _finite(v.get("vice")), f"vice_{m}_ci_low": _finite(v.get("ci_low")),
                    f"vice_{m}_ci_high": _finite(v.get("ci_high"))})
    row["n"] = int(run.vice["n"])
    csv_record = read_json_object(run.per_sample_csv.with_suffix(".meta.json")) \
        if run.per_sample_csv.with_suffix(".meta.json").is_file() else {}
    maps_meta = run.cam_dir / "maps_meta.json"
    meta = read_json_object(maps_meta) if maps_meta.is_file() else {}
    prov = {"tag": run.tag, "maps_dir": str(run.cam_dir.relative_to(run.paths.root)),
            "eval_dir": str(run.eval_dir.relative_to(run.paths.root)),
            "maps_stamp": run.provenance.get("maps_stamp"), "csv_sha256": run.provenance.get("csv_sha256"),
            "weights_sha256": run.provenance.get("weights_sha256"), "chain": run.provenance.get("status"),
            "method": meta.get("method"), "method_params": meta.get("method_params"),
            "metric_settings": {k: (csv_record.get("settings") or {}).get(k)
                                for k in ("map_metrics", "insdel_steps", "pg_tolerance", "loss_input")},
            "metrics_missing": missing}
    return row, prov


def collect_comparison(root: PathLike, tags: Mapping[str, str], list_name: str | None = None,
                       weights: str | None = None, metrics: Sequence[str] = TABLE_METRICS) -> Comparison:
    """Read every method's evaluation (``tags``: method -> ``map_tag``) of the session ``root``.

    All methods are read first; then a :class:`StaleError` names every method whose outputs do not come
    from the current weights or from each other, and a :class:`RunNotFinished` every unfinished one, so no
    table is made from stale or missing numbers.
    """
    rows, provs, stale, unfinished, evals = [], {}, [], [], set()
    for method, tag in tags.items():
        try:
            run = load_run(root, list_name, weights, tag)
            row, prov = method_row(run, metrics)
            evals.add((run.list_stem, run.weights_stem))
        except StaleError as exc:
            stale.append(f"{method}: {exc}")
            continue
        except (RunNotFinished, MissingInputError) as exc:
            unfinished.append(f"{method}: {exc}")
            continue
        rows.append({"method": method, **row})
        provs[method] = prov
    if stale:
        raise StaleError(f"stale outputs of {len(stale)} method(s), rerun them with --force: " + " | ".join(stale))
    if unfinished:
        raise RunNotFinished(f"unfinished method(s): " + " | ".join(unfinished))
    weights_sha = {p["weights_sha256"] for p in provs.values()}
    if len(weights_sha) > 1:  # load_run checks each against the current file, so this cannot happen silently
        raise StaleError(f"{root}: the methods' outputs come from different weights ({', '.join(map(short_hash, weights_sha))})")
    first = next(iter(provs.values()), {})
    (lst, wts), = evals or {(None, None)}
    record = {
        "session": str(root), "weights_sha256": first.get("weights_sha256"), "list": lst, "weights": wts,
        "metrics": list(metrics), "methods": provs,
        "definitions": {
            "best_miou": "ji_curve.json best_miou (dataset mIoU at the best background threshold)",
            "metric": "map_metrics.json metrics.<m>.mean (docs/MAP_METRICS.md)",
            "vice_<m>": "vice_metrics.json metrics.<m>: Pearson(-loss, sign * metric), bootstrap 95% CI",
        },
        "versions": library_versions(("numpy", "pandas", "matplotlib", "torch", "timm", "captum", "zennit")),
    }
    return Comparison(pd.DataFrame(rows, columns=["method", *_numeric_columns(metrics)]), record)


def _numeric_columns(metrics: Sequence[str]) -> list[str]:
    cols = ["best_miou", "best_threshold"] + [m for m in metrics if m != "miou"]
    for m in metrics:
        cols += [f"vice_{m}", f"vice_{m}_ci_low", f"vice_{m}_ci_high"]
    return cols + ["n"]


# ------------------------------------------------------------------ formats
def _num(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) \
        else f"{scale * float(value):.{digits}f}"


def display_frame(frame: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS) -> pd.DataFrame:
    """Strings as shown in the md/latex/html tables: mIoU in %, metrics with 3 decimals, VICE [CI]."""
    out = pd.DataFrame({"method": frame["method"]})
    for m in metrics:
        out[LABELS.get(m, m)] = [_num(v, 2, 100.0) for v in frame["best_miou"]] if m == "miou" \
            else [_num(v) for v in frame[m]]
    for m in metrics:
        out[f"VICE {m}"] = [f"{_num(v)} [{_num(lo)}, {_num(hi)}]" for v, lo, hi in
                            zip(frame[f"vice_{m}"], frame[f"vice_{m}_ci_low"], frame[f"vice_{m}_ci_high"])]
    out["n"] = frame["n"].astype(str)
    return out


def to_markdown(display: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (method column left-aligned, the rest right-aligned)."""
    cols = list(display.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c == "method" else "---:" for c in cols) + "|"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
              for row in display.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(display: pd.DataFrame) -> str:
    """A booktabs table (pandas' ``to_latex``, special characters escaped)."""
    return display.to_latex(index=False, escape=True, column_format="l" + "r" * (display.shape[1] - 1))


def write_comparison(root: PathLike, comparison: Comparison, title: str = "") -> list[Path]:
    """``compare_methods.{csv,md,tex,png,json}`` in the session ``root``; returns the paths written.

    The CSV holds the numbers as stored (fractions, full precision); md and tex the display strings.
    """
    from ..viz.compare_methods import plot_method_comparison
    from ..viz.reliability import figure_provenance

    root = Path(root)
    frame, metrics = comparison.frame, comparison.record["metrics"]
    display = display_frame(frame, metrics)
    out = [root / f"{STEM}.csv", root / f"{STEM}.md", root / f"{STEM}.tex", root / f"{STEM}.png"]
    write_text_atomic(out[0], frame.to_csv(index=False))
    write_text_atomic(out[1], to_markdown(display))
    write_text_atomic(out[2], to_latex(display))
    figure_record = {"weights_sha256": comparison.record["weights_sha256"],
                     "methods": {m: {k: p[k] for k in ("maps_stamp", "csv_sha256")}
                                 for m, p in comparison.record["methods"].items()}}
    with figure_provenance(figure_record):
        plot_method_comparison(frame, out[3], metrics, title)
    record = {**comparison.record, "table": _json_rows(frame), "files": [p.name for p in out]}
    out.append(write_json_atomic(root / f"{STEM}.json", record))
    return out


def _json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for rec in frame.to_dict(orient="records"):
        rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()})
    return rows


# ------------------------------------------------------------------ reading it back (the report)
def read_comparison(root: PathLike) -> dict | None:
    """The session's ``compare_methods.json`` (None when the session has none)."""
    path = Path(root) / f"{STEM}.json"
    return read_json_object(path, "a valid compare_methods.json") if path.is_file() else None


def comparison_problems(root: PathLike, record: Mapping[str, Any], weights_sha256: str | None) -> list[str]:
    """Why a recorded comparison no longer describes the session (empty when it does): other weights than
    ``weights_sha256`` (the current file's), or a method whose maps stamp or per-sample CSV changed since."""
    problems = []
    if weights_sha256 and record.get("weights_sha256") != weights_sha256:
        problems.append(f"made from weights {short_hash(record.get('weights_sha256'))}, the session's are now "
                        f"{short_hash(weights_sha256)}")
    from ..mapfile import meta_stamp, read_maps_meta
    from ..provenance import sha256_file

    for method, prov in (record.get("methods") or {}).items():
        csv = Path(root) / prov.get("eval_dir", "?") / "per_sample.csv"
        maps_dir = Path(root) / prov.get("maps_dir", "?")
        maps = read_maps_meta(maps_dir) if maps_dir.is_dir() else None
        if maps is None or meta_stamp(maps) != prov.get("maps_stamp"):
            problems.append(f"{method}: its maps changed since")
        elif not csv.is_file() or sha256_file(csv) != prov.get("csv_sha256"):
            problems.append(f"{method}: its per-sample CSV changed since")
    return problems


def stale_message(root: PathLike, problems: Sequence[str]) -> str:
    return (f"{Path(root) / (STEM + '.json')} is out of date ({'; '.join(problems)}); rerun "
            f"scripts/compare_methods.py {root} --methods ...")


__all__ = ["Comparison", "OUTPUTS", "REQUIRED_MAP_METRICS", "TABLE_METRICS", "collect_comparison",
           "comparison_problems", "display_frame", "method_row", "read_comparison", "stale_message", "to_latex",
           "to_markdown", "write_comparison"]
