"""The cross-model report of a study (beyond-spec §2.1 step 5, §3.3): one row per model, every pair
of its quantities correlated across models, the "does the more accurate model explain better"
answer with its interval, and the study's HTML page.

Per-model quantities (columns of ``models.csv``; fractions as stored):

* ``map``, ``acc_ml``, ``ece_ml``: clean mAP, ML-accuracy and ECE_ML (``ece.json`` of the model's
  first session; they do not depend on the map method);
* ``ood_map``, ``ood_acc_ml``, ``ood_ece_ml``: their means over the study's OOD trees, and
  ``ood_map:<tree>`` per tree;
* per method ``m``: ``best_miou:m`` (best dataset mIoU of the JI curve), ``vice:m`` (VICE),
  ``consensus_score:m`` (the model's consensus score in the committee of method m),
  ``mask_ap:m`` (mAP of its maps against the masks), ``vice_consensus:m`` (Pearson of -loss
  and the per-image consensus score); every map metric of the run's ``map_metrics.json``
  (``epg:m``, ``epg_box:m``, ``pg:m``, ``ap_mask:m``, ``gini:m``, ``insertion:m``, ``deletion:m``:
  the dataset means) and the VICE of each (``vice_<metric>:m``, ``vice_metrics.json``).

Each pair gets Pearson and Spearman with p-values and paired percentile bootstrap intervals
(models resampled with their pair of values), from :func:`dywsss.metrics.correlation.correlate`.
"""
from __future__ import annotations

import html
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import write_text_atomic
from ..metrics.correlation import Correlation, correlate

PathLike = str | os.PathLike
ACCURACY = "map"
#: columns that do not depend on the map method (``ood_map:<OOD list>`` per tree besides)
MODEL_COLUMNS: tuple[str, ...] = ("map", "acc_ml", "ece_ml", "ood_map", "ood_acc_ml", "ood_ece_ml")
#: explanation quantities, each higher-is-better, per method
MAP_METRICS: tuple[str, ...] = ("best_miou", "vice", "consensus_score", "mask_ap", "vice_consensus")
LABELS: dict[str, str] = {
    "map": "clean mAP", "acc_ml": "clean ML-accuracy", "ece_ml": "ECE_ML", "ood_map": "OOD mAP",
    "ood_acc_ml": "OOD ML-accuracy", "ood_ece_ml": "OOD ECE_ML", "best_miou": "best mIoU", "vice": "VICE",
    "consensus_score": "consensus score", "mask_ap": "mAP of maps vs masks", "vice_consensus": "VICE vs consensus",
    "epg": "EPG", "epg_box": "EPG (boxes)", "pg": "pointing game", "ap_mask": "AP of map vs mask",
    "gini": "Gini sparsity", "insertion": "insertion", "deletion": "deletion", "miou": "JI",
}


def label(column: str) -> str:
    """Display name of a column: ``best_miou:gradcam`` -> ``best mIoU (gradcam)``, ``vice_epg:cam`` -> ``VICE of
    EPG (cam)``."""
    base, _, method = column.partition(":")
    if base not in LABELS and base.startswith("vice_"):
        text = f"VICE of {LABELS.get(base[5:], base[5:])}"
    else:
        text = LABELS.get(base, base)
    return f"{text} ({method})" if method else text


def known_columns(methods: Sequence[str], ood_lists: Sequence[str] = ()) -> list[str]:
    """Every column ``models.csv`` can have for these study methods and OOD list stems: :data:`MODEL_COLUMNS`,
    ``ood_map:<list>``, and per method :data:`MAP_METRICS`, each registered map metric's ``map_metrics.json``
    entries (its name and per-image columns, e.g. ``deletion``, ``deletion_norm``) and their ``vice_`` forms."""
    from ..metrics.map_metrics import MAP_METRICS as REGISTERED

    entries = list(dict.fromkeys(c for n in REGISTERED.names() for c in (n, *REGISTERED.get(n).columns)))
    per_method = [*MAP_METRICS, *entries, *(f"vice_{e}" for e in entries)]
    return [*MODEL_COLUMNS, *(f"ood_map:{s}" for s in ood_lists),
            *(f"{c}:{m}" for m in methods for c in per_method)]


def explanation_columns(frame: pd.DataFrame, method: str) -> list[str]:
    """The explanation quantities of ``method`` in the frame: :data:`MAP_METRICS` first, then the
    run's map metrics and their VICE (``<name>:<method>``) in the frame's order; all-NaN ones left out."""
    own = [f"{m}:{method}" for m in MAP_METRICS]
    rest = [c for c in frame.columns if c.endswith(f":{method}") and c not in own and not c.startswith("ood_")]
    return [c for c in own + rest if c in frame.columns and frame[c].notna().any()]


def default_columns(frame: pd.DataFrame, methods: Sequence[str]) -> list[str]:
    """clean mAP, OOD mAP, ECE_ML, then every explanation quantity per method, where the frame has them."""
    cols = [c for c in ("map", "ood_map", "ece_ml") if c in frame.columns and frame[c].notna().any()]
    return cols + [c for meth in methods for c in explanation_columns(frame, meth)]


def pairwise_correlations(frame: pd.DataFrame, columns: Sequence[str], n_boot: int = 2000, level: float = 0.95,
                          seed: int = 0) -> pd.DataFrame:
    """Every pair (x, y) of ``columns`` across the frame's rows (models): one row of
    :class:`Correlation` fields per pair, with ``x``, ``y`` and their labels."""
    rows = []
    for x, y in itertools.combinations(columns, 2):
        c = correlate(frame[x].to_numpy(float), frame[y].to_numpy(float), n_boot=n_boot, level=level, seed=seed)
        rows.append(dict(x=x, y=y, x_label=label(x), y_label=label(y), **c.summary()))
    return pd.DataFrame(rows)


def verdict(c: Correlation | Mapping[str, Any], higher_is_better: bool = True) -> str:
    """``yes`` (interval above 0), ``opposite`` (below 0), ``not shown`` (contains 0), ``undefined``;
    for a quantity where lower is better (deletion) the sides swap."""
    get = c.get if isinstance(c, Mapping) else lambda k: getattr(c, k)
    lo, hi = get("pearson_ci_low"), get("pearson_ci_high")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "undefined"
    if lo > 0:
        return "yes" if higher_is_better else "opposite"
    if hi < 0:
        return "opposite" if higher_is_better else "yes"
    return "not shown"


def _f(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(float(v), spec)


def accuracy_sentence(c: Correlation | Mapping[str, Any], explain_label: str, accuracy_label: str = "clean mAP",
                      higher_is_better: bool = True) -> str:
    """The answer to "does the more accurate model explain better?" for one explanation quantity."""
    get = c.get if isinstance(c, Mapping) else lambda k: getattr(c, k)
    n, level = get("n"), get("ci_level")
    head = f"Does the more accurate model explain better (by {explain_label}{'' if higher_is_better else ', lower is better'})? "
    v = verdict(c, higher_is_better)
    better, worse = ("higher", "lower") if higher_is_better else ("lower", "higher")
    r = get("pearson")
    if r is None or not np.isfinite(r):
        return head + f"Undefined over {n} models ({get('reason') or 'no correlation'})."
    stats_text = (f"Pearson r = {_f(get('pearson'))} [{_f(get('pearson_ci_low'))}, {_f(get('pearson_ci_high'))}] "
                  f"({level:.0%} bootstrap interval over {n} models, p = {_f(get('pearson_p'), '.2g')}; "
                  f"Spearman rho = {_f(get('spearman'))} [{_f(get('spearman_ci_low'))}, "
                  f"{_f(get('spearman_ci_high'))}]).")
    answer = {
        "yes": f"Yes: across models, higher {accuracy_label} goes with {better} {explain_label}",
        "opposite": f"No, the opposite: higher {accuracy_label} goes with {worse} {explain_label}",
        "not shown": f"Not shown: the interval of the correlation of {accuracy_label} and {explain_label} includes 0",
        "undefined": "Undefined: no bootstrap interval",
    }[v]
    return f"{head}{answer}; {stats_text}"


@dataclass(frozen=True)
class Answer:
    column: str
    sentence: str
    verdict: str
    correlation: dict
    higher_is_better: bool = True


def accuracy_answers(frame: pd.DataFrame, methods: Sequence[str], n_boot: int, level: float, seed: int,
                     accuracy: str = ACCURACY, lower_is_better: frozenset[str] | set[str] = frozenset()) -> list[Answer]:
    """One answer per explanation column present (:func:`explanation_columns` of every method);
    ``lower_is_better``: base names (before ``:``) of quantities where lower is better (deletion)."""
    out = []
    if accuracy not in frame.columns:
        return out
    for meth in methods:
        for col in explanation_columns(frame, meth):
            higher = col.partition(":")[0] not in lower_is_better
            c = correlate(frame[accuracy].to_numpy(float), frame[col].to_numpy(float), n_boot, level, seed)
            out.append(Answer(col, accuracy_sentence(c, label(col), label(accuracy), higher), verdict(c, higher),
                              c.summary(), higher))
    return out


# -------------------------------------------------------------------- HTML
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.6em 0}td,th{border:1px solid #ccc;padding:3px 7px}
th{background:#f0f3f8}td.num{text-align:right}.failed{color:#b00020}.ok{color:#1b7f3b}.blocked{color:#a66}
img{max-width:100%;border:1px solid #ddd;margin:4px 0}.answer{background:#f6f8fb;padding:8px;border-left:3px solid #2776B7}
code{background:#f3f3f3;padding:0 3px}"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def html_table(frame: pd.DataFrame, floats: str = "{:.4g}", index: bool = False) -> str:
    """A plain HTML table of a frame (numbers right-aligned)."""
    df = frame.reset_index() if index else frame
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = []
    for _, row in df.iterrows():
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append(f'<td class="num">{"" if not np.isfinite(v) else floats.format(v)}</td>')
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                cells.append(f'<td class="num">{v}</td>')
            else:
                cells.append(f"<td>{v if str(v).startswith('<a ') else _esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_study_html(path: PathLike, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write the study page: ``sections`` are (heading, inner HTML); links and images are relative."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{_esc(title)}</h1>"]
    toc = "".join(f'<li><a href="#s{i}">{_esc(h)}</a></li>' for i, (h, _) in enumerate(sections))
    parts.append(f"<ul>{toc}</ul>")
    for i, (heading, inner) in enumerate(sections):
        parts.append(f'<section id="s{i}"><h2>{_esc(heading)}</h2>{inner}</section>')
    parts.append("</body></html>\n")
    return write_text_atomic(path, "\n".join(parts))


def relative(target: PathLike, start: PathLike) -> str:
    return os.path.relpath(Path(target).resolve(), Path(start).resolve())
