"""HTML fragments of the map-quality sections of ``report.html`` (issue 11).

:func:`map_quality_sections` reads what the map-metric stages wrote in a run's
``eval/<list>_<weights>/`` folder and returns the sections to put after the figures:

* ``map-metrics``: one row per metric: definition, orientation, dataset mean, VICE
  [95% interval], partial VICE [interval], n; and the loss-vs-metric panels;
* ``per-class-vice``: per class, VICE [interval] of every metric over the images that
  contain the class;
* ``partial-vice``: VICE next to the partial VICE given object area fraction and count;
* ``gridpg``: the GridPG mean, its settings and the example grids;
* ``sanity``: the cascading-randomisation table and figures, with the verdicts.

A section whose files are missing is left out (the stage did not run). Every number
sits in an element with ``data-key`` and ``data-value`` like the rest of the report.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Mapping

from ..io import read_json_object
from ..metrics.map_metrics import JI_COLUMNS
from .images import png_data_uri

PathLike = str | os.PathLike
SECTION_IDS = ("map-metrics", "per-class-vice", "partial-vice", "gridpg", "sanity")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    return "&mdash;" if value is None else f"{float(value):.{digits}f}"


def _cell(key: str, value: Any, digits: int = 3) -> str:
    return f'<td class="num" data-key="{_esc(key)}" data-value="{_esc(value)}">{_num(value, digits)}</td>'


def _interval(lo: Any, hi: Any) -> str:
    return "" if lo is None or hi is None else f" [{_num(lo)}, {_num(hi)}]"


def _figure(path: Path, caption: str, key: str) -> str:
    if not path.is_file():
        return ""
    return (f'<figure data-figure="{_esc(key)}"><img src="{png_data_uri(path)}" alt="{_esc(key)}">'
            f"<figcaption>{caption}</figcaption></figure>")


# ------------------------------------------------------------------ reading a run's files
def read_outputs(eval_dir: PathLike) -> dict:
    """The map-quality outputs of an eval folder: ``map_metrics``, ``vices`` ({column: vice JSON}),
    ``gridpg``, ``sanity`` (None when absent)."""
    d = Path(eval_dir)

    def load(name: str) -> dict | None:
        p = d / name
        return read_json_object(p) if p.is_file() else None

    vices = {}
    if (d / "vice.json").is_file():
        vices["miou"] = read_json_object(d / "vice.json")
    for p in sorted(d.glob("vice_*.json")):
        col = p.stem.removeprefix("vice_")
        if col not in ("metrics",) and not col.startswith("compare_"):
            vices[col] = read_json_object(p)
    return {"dir": d, "map_metrics": load("map_metrics.json"), "vices": vices, "gridpg": load("gridpg.json"),
            "sanity": load("sanity.json")}


# ------------------------------------------------------------------ sections
def map_metrics_table_html(map_metrics: Mapping | None, vices: Mapping[str, Mapping], figure: Path | None = None
                           ) -> str:
    """Metric, definition, orientation, dataset mean, VICE [CI], partial VICE [CI], n."""
    if not vices and not map_metrics:
        return ""
    defs = (map_metrics or {}).get("metrics", {})
    rows = []
    for col, v in vices.items():
        metric = defs.get(col, {})
        mean = metric.get("mean", v.get("mean"))
        part = v.get("partial") or {}
        sign = v.get("sign", 1)
        definition = metric.get("definition", "the paper's per-image JI" if col in JI_COLUMNS else "")
        rows.append(
            f'<tr data-metric="{_esc(col)}"><th>{_esc(col)}</th>'
            f'<td class="note">{_esc(definition)}</td><td>{"higher" if sign > 0 else "lower (negated in VICE)"}</td>'
            f'{_cell(f"{col}.mean", mean)}'
            f'<td class="num" data-key="{_esc(col)}.vice" data-value="{_esc(v.get("vice"))}">{_num(v.get("vice"))}'
            f'{_interval(v.get("ci_low"), v.get("ci_high"))}</td>'
            f'<td class="num" data-key="{_esc(col)}.partial_vice" data-value="{_esc(part.get("partial_vice"))}">'
            f'{_num(part.get("partial_vice"))}{_interval(part.get("ci_low"), part.get("ci_high"))}</td>'
            f'{_cell(f"{col}.n", v.get("n"), 0)}</tr>'
        )
    for col, metric in defs.items():  # metrics scored but without a VICE file yet
        if col not in vices:
            better = "higher" if metric.get("higher_is_better", True) else "lower"
            rows.append(f'<tr data-metric="{_esc(col)}"><th>{_esc(col)}</th><td class="note">'
                        f'{_esc(metric.get("definition", ""))}</td><td>{better}</td>'
                        f'{_cell(f"{col}.mean", metric.get("mean"))}<td></td><td></td><td></td></tr>')
    fig = _figure(figure, "Per-image loss against each map metric; the panel titles give VICE [95% interval].",
                  "loss_vs_metrics") if figure else ""
    return (
        '<section id="map-metrics"><h2>Map quality beyond JI</h2>'
        "<p>Each metric scores every (image, ground-truth class) map, averaged per image. VICE is the Pearson "
        "correlation of &minus;loss with the metric oriented so that higher is better (deletion enters negated); "
        "the interval is a bootstrap 95% interval over images. The dataset mean of <code>pg</code> is the per-class "
        "hit rate averaged over classes.</p>"
        "<table><tr><th>metric</th><th>definition</th><th>better</th><th>dataset mean</th><th>VICE [95% CI]</th>"
        f'<th>partial VICE [95% CI]</th><th>n</th></tr>{"".join(rows)}</table>'
        f'{f"<div class=figs>{fig}</div>" if fig else ""}</section>'
    )


def per_class_vice_html(vices: Mapping[str, Mapping]) -> str:
    """Rows = classes, columns = metrics: VICE [CI] over the images that contain the class (n)."""
    cols = [c for c, v in vices.items() if v.get("per_class")]
    if not cols:
        return ""
    classes = sorted({k for c in cols for k in vices[c]["per_class"]})
    rows = []
    for name in classes:
        cells = []
        for c in cols:
            r = vices[c]["per_class"].get(name)
            if r is None:
                cells.append("<td></td>")
                continue
            cells.append(f'<td class="num" data-key="{_esc(c)}.{_esc(name)}" data-value="{_esc(r.get("vice"))}">'
                         f'{_num(r.get("vice"))}{_interval(r.get("ci_low"), r.get("ci_high"))} '
                         f'<span class="note">(n={r.get("n")})</span></td>')
        rows.append(f"<tr><th>{_esc(name)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    return ('<section id="per-class-vice"><h2>VICE per class</h2><p>VICE over the images that contain the class; '
            'classes with few images have wide intervals (&mdash;: undefined, fewer than 3 images or a constant '
            f'column).</p><table><tr><th>class</th>{head}</tr>{"".join(rows)}</table></section>')


def partial_vice_html(vices: Mapping[str, Mapping]) -> str:
    """VICE next to the partial VICE that controls for object area fraction and object count."""
    rows = []
    for col, v in vices.items():
        part = v.get("partial") or {}
        if "partial_vice" not in part:
            continue
        reason = part.get("reason", "")
        rows.append(
            f'<tr><th>{_esc(col)}</th><td class="num">{_num(v.get("vice"))}'
            f'{_interval(v.get("ci_low"), v.get("ci_high"))}'
            f'</td><td class="num" data-key="{_esc(col)}.partial" data-value="{_esc(part.get("partial_vice"))}">'
            f'{_num(part.get("partial_vice"))}{_interval(part.get("ci_low"), part.get("ci_high"))}</td>'
            f'<td class="num">{_num(part.get("p_value"), 4)}</td><td class="note">{_esc(reason)}</td></tr>'
        )
    if not rows:
        return ""
    return ('<section id="partial-vice"><h2>Partial VICE</h2><p>The correlation of &minus;loss and the metric after '
            "removing, from both, what the object area fraction (<code>fg_fraction</code>) and the object count "
            "(<code>n_objects</code>: 8-connected components per class) explain linearly. A VICE that survives this "
            "is not merely &ldquo;large objects are easy to classify and easy to localise&rdquo;.</p>"
            "<table><tr><th>metric</th><th>VICE [95% CI]</th><th>partial VICE [95% CI]</th><th>p</th><th></th></tr>"
            f'{"".join(rows)}</table></section>')


def gridpg_html(gridpg: Mapping | None, figure: Path | None = None) -> str:
    """The GridPG mean, its settings and the example grids."""
    if not gridpg:
        return ""
    s = gridpg.get("settings", {})
    fig = _figure(figure, "Example grids: each cell's class map, its target cell outlined, with its score.",
                  "gridpg") if figure else ""
    return (
        f'<section id="gridpg"><h2>GridPG</h2><p>Method <code>{_esc(s.get("method"))}</code> on '
        f'{_esc(gridpg.get("n_grids"))} seeded {_esc(s.get("grid"))}&times;{_esc(s.get("grid"))} grids of images '
        f'classified correctly with confidence &ge; {_esc(s.get("min_conf"))}: GridPG = '
        f'<b data-key="gridpg" data-value="{_esc(gridpg.get("gridpg"))}">{_num(gridpg.get("gridpg"))}</b> '
        f'(mean share of the positive map mass inside the target cell over {_esc(gridpg.get("n_cells"))} cells, '
        f'{_esc(gridpg.get("n_skipped"))} without positive mass skipped; chance = '
        f'{_num(1 / (int(s.get("grid", 2)) ** 2))}; smoothing {_esc(s.get("smooth"))}).</p>'
        f'{f"<div class=figs>{fig}</div>" if fig else ""}</section>'
    )


def sanity_html(sanity: Mapping | None, cascade_png: Path | None = None, metrics_png: Path | None = None) -> str:
    """Per cascade step: Spearman and SSIM against the original maps, JI, EPG, VICE; the verdicts."""
    if not sanity:
        return ""
    keys = ("spearman", "ssim", "zero_maps", "ji", "epg", "vice")
    rows = "".join(f'<tr><th>{_esc(st["step"])}</th>'
                   + "".join(_cell(f"sanity.{st['step']}.{k}", st.get(k)) for k in keys) + "</tr>"
                   for st in sanity.get("steps", []))
    verdicts = "".join(f'<li data-key="verdict.{_esc(k)}">{_esc(v)}</li>'
                       for k, v in sanity.get("verdicts", {}).items())
    logit = sanity.get("random_logit", {})
    figs = "".join(f for f in (
        _figure(cascade_png, "Cascading randomisation: the maps after re-initialising the network from the head "
                "downward (cumulative, left to right).", "sanity_cascade") if cascade_png else "",
        _figure(metrics_png, "Similarity to the original maps and map quality after each step.", "sanity_metrics")
        if metrics_png else "") if f)
    return (
        '<section id="sanity"><h2>Sanity checks</h2><p>Adebayo et al. (2018): a map that does not change when the '
        f'model is randomised explains the image, not the model. {_esc(sanity.get("n_images"))} images, '
        f'method <code>{_esc(sanity.get("settings", {}).get("method"))}</code>.</p><ul>{verdicts}</ul>'
        "<table><tr><th>after re-initialising</th><th>Spearman</th><th>SSIM</th><th>all-zero maps</th><th>JI</th><th>EPG</th><th>VICE</th>"
        f'</tr>{rows}</table><p>Random-logit test: maps for a random absent class against a true class\'s map: '
        f'Spearman {_num(logit.get("spearman"))}, SSIM {_num(logit.get("ssim"))}; EPG on the true object '
        f'{_num(logit.get("epg_random_class"))} (random class) vs {_num(logit.get("epg_true_class"))} (true class).'
        f'</p>{f"<div class=figs>{figs}</div>" if figs else ""}</section>'
    )


def map_quality_sections(eval_dir: PathLike) -> str:
    """All map-quality sections of a run's eval folder, in report order ("" when none applies)."""
    out = read_outputs(eval_dir)
    d = out["dir"]
    vices = out["vices"]
    return "\n".join(part for part in (
        map_metrics_table_html(out["map_metrics"], vices, d / "loss_vs_metrics.png"),
        per_class_vice_html(vices),
        partial_vice_html(vices),
        gridpg_html(out["gridpg"], d / "gridpg.png"),
        sanity_html(out["sanity"], d / "sanity_cascade.png", d / "sanity_metrics.png"),
    ) if part)


__all__ = ["SECTION_IDS", "gridpg_html", "map_metrics_table_html", "map_quality_sections", "partial_vice_html",
           "per_class_vice_html", "read_outputs", "sanity_html"]
