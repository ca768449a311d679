"""One self-contained ``report.html`` per run: settings, metrics, figures and galleries.

Every figure is embedded as a base64 PNG ``data:`` URI and the page loads
nothing else, so it opens offline and can be mailed as one file. Each number
sits in an element with a ``data-key`` (and its stored value in
``data-value``) so tests and scripts can read the page back.
"""
from __future__ import annotations

import datetime as _dt
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..data.voc import CLASS_NAMES, IGNORE_INDEX, image_path, load_image, load_mask, palette_rgb
from ..errors import InputError
from ..io import write_text_atomic
from ..mapfile import load_maps
from ..metrics.segmentation import maps_to_mask
from ..provenance import short_hash
from ..recipe import recipe_of
from .compare import comparison_problems, display_frame, read_comparison, stale_message
from .images import png_data_uri
from .map_metrics import map_quality_sections
from .summary import FIGURES, PRODUCER, RunNotFinished, RunSummary, format_metric, load_run

PathLike = str | os.PathLike
THUMB_SIDE = 200  # longest side of a gallery panel, pixels
PER_SAMPLE_COLUMNS = ("name_image", "loss", "miou", "label", "prediction")

# (label, dotted config key) of the settings table
SETTINGS: tuple[tuple[str, str], ...] = (
    ("session", "session_name"), ("network", "network"), ("pretrained", "pretrained"),
    ("pretrain (checkpoint)", "pretrain"), ("model kwargs", "model_kwargs"),
    ("fine-tune fc/head only", "finetune"), ("crop size", "crop_size"), ("resize long side", "resize_long"),
    ("epochs", "max_epoches"), ("batch size", "batch_size"), ("optimizer", "optimizer.type"),
    ("lr", "optimizer.lr"), ("weight decay", "optimizer.weight_decay"), ("lr schedule", "lr_scheduler"),
    ("warmup epochs", "warmup_epochs"), ("lr warmup (recipe)", "lr_warmup"),
    ("BN in fc/head-only fine-tuning (recipe)", "finetune_bn"), ("bf16 autocast (recipe)", "amp"),
    ("best.pth on the first N//batch*batch val images (recipe)", "val_drop_last"),
    ("ViT map protocol (recipe)", "vit_map_protocol"),
    ("random erasing p", "cut_p"), ("random erasing s", "cut_s"), ("seed", "random_seed"),
    ("map method", "cam_method"), ("map scales", "cam_scales"), ("map flip", "cam_flip"),
    ("weights", "weights"), ("evaluation list", "eval_list"), ("per-sample loss input", "loss_input"),
    ("JI definition", "ji_definition"), ("per-image JI threshold", "eval_thresh"),
    ("prediction threshold", "pred_threshold"), ("ECE bins", "ece_bins"), ("ECE binning", "ece_binning"),
    ("VICE loss bins", "vice_bins"), ("bootstrap resamples", "bootstrap"),
)

# (data-key, label, what it means)
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("map", "mAP (%)", "mean over classes of the average precision of the class scores"),
    ("acc_ml", "ML-accuracy (%)", "mean over images of |y &cap; &ycirc;| / |y &cup; &ycirc;|"),
    ("ece_ml", "ECE<sub>ML</sub> (%)", "gap between ML-confidence and ML-accuracy (lower is better)"),
    ("vice", "VICE", "Pearson correlation of (&minus;loss, JI) over images (higher is better)"),
    ("n", "images (n)", "images in the per-sample CSV"),
    ("spearman", "Spearman &rho;", "rank correlation of (&minus;loss, JI): a check robust to outliers"),
    ("p_value", "p-value", "of the VICE correlation against zero"),
    ("best_threshold", "best JI threshold", "background threshold with the highest dataset mIoU"),
    ("best_miou", "best mIoU (%)", "dataset mIoU of the maps at that threshold (21 classes)"),
)

HOW_TO_READ = """
<p><b>ECE<sub>ML</sub></b> asks whether the classifier's confidence can be trusted.
Each image gets an ML-confidence (the mean of the class probabilities above the
prediction threshold, or the largest probability when none is above it) and an
ML-accuracy (|y &cap; &ycirc;| / |y &cup; &ycirc;| between its label set and its predicted set).
Images are binned by confidence; ECE<sub>ML</sub> is the image-weighted mean of
|mean accuracy &minus; mean confidence| over the bins. 0 means calibrated. In the
reliability diagram, bars below the diagonal are over-confident bins, bars above it
under-confident ones.</p>
<p><b>VICE</b> asks whether performance and explanation agree <i>per image</i>:
the Pearson correlation between &minus;loss (the image's multi-label loss) and JI (how well
its maps, thresholded, overlap the ground-truth segmentation). Near +1, the images the model
gets right are the ones whose maps sit on the objects; near 0, map quality says nothing about
whether a prediction is right; below 0, good maps come with bad predictions. The interval is a
bootstrap 95% interval over images. VICE is the mean of the per-image products
z(&minus;loss)&middot;z(JI); the galleries below show the images with the most negative products:
confident, correct classifications whose maps miss the objects, and poor classifications whose
maps find them. These are the samples that keep VICE low.</p>
"""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:24px auto;
padding:0 16px;color:#1d232a;line-height:1.45}
h1{margin-bottom:4px}h2{border-bottom:1px solid #d8dde3;padding-bottom:4px;margin-top:36px}
.sub{color:#5b6570;margin-top:0}nav a{margin-right:14px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d8dde3;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.note{color:#5b6570;font-size:90%}
.settings{columns:2;column-gap:24px}.settings table{width:100%}
.figs{display:flex;flex-wrap:wrap;gap:16px}.figs figure{margin:0;flex:1 1 340px}
.figs img{max-width:100%;border:1px solid #e3e7eb}
figcaption{font-size:90%;color:#5b6570}
.sample{border:1px solid #d8dde3;border-radius:6px;padding:8px;margin:10px 0}
.panels{display:flex;gap:6px;flex-wrap:wrap}.panels figure{margin:0}.panels img{display:block}
.cap{font-size:90%}.empty{color:#8a4b00}
"""


# ------------------------------------------------------------------ helpers
def _cfg_get(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, "get"):
            return None
        node = node.get(part)
    return node


def _fmt_setting(value: Any) -> str:
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"
    return "—" if value is None or value == "" else str(value)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


# ------------------------------------------------------------------ gallery selection
def vice_contributions(loss: np.ndarray, ji: np.ndarray) -> np.ndarray:
    """Per-image terms of VICE (Eq. 8): ``z(-loss_i) * z(JI_i)`` with population z-scores.

    Their mean is the Pearson correlation of (-loss, JI), i.e. VICE. A constant
    column has no defined correlation; its terms are returned as 0.
    """
    a = -np.asarray(loss, dtype=np.float64)
    b = np.asarray(ji, dtype=np.float64)
    if a.size == 0 or np.ptp(a) == 0 or np.ptp(b) == 0:  # ptp, not std: std of a constant rounds to ~1e-17
        return np.zeros_like(a)
    return (a - a.mean()) / a.std() * (b - b.mean()) / b.std()


def select_gallery(per_sample: pd.DataFrame, k: int = 4) -> dict[str, pd.DataFrame]:
    """The ``k`` images that lower VICE most in each discordant quadrant.

    ``low_loss_poor_map``: loss below the mean and JI below the mean;
    ``high_loss_good_map``: loss above the mean and JI above the mean. Each is
    sorted by its VICE term, most negative first (column ``contribution``).
    Rows with an undefined loss or JI (NaN) are left out.
    """
    df = per_sample[np.isfinite(per_sample["loss"]) & np.isfinite(per_sample["miou"])].copy()
    df["contribution"] = vice_contributions(df["loss"].to_numpy(), df["miou"].to_numpy())
    low_loss = df["loss"] < df["loss"].mean()
    low_ji = df["miou"] < df["miou"].mean()
    pick = lambda m: df[m & (df["contribution"] < 0)].nsmallest(k, "contribution")  # noqa: E731
    return {"low_loss_poor_map": pick(low_loss & low_ji), "high_loss_good_map": pick(~low_loss & ~low_ji)}


def read_per_sample(path: PathLike) -> pd.DataFrame:
    """The per-sample CSV with the columns the report needs; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise RunNotFinished(f"{path}: not found (written by {PRODUCER['per_sample.csv']})")
    df = pd.read_csv(path, dtype={"name_image": str, "label": str, "prediction": str}, keep_default_na=False)
    missing = [c for c in PER_SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    for col in ("loss", "miou"):
        try:  # empty cells become NaN (an undefined JI); text is an error
            df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="raise")
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: column {col!r} has non-numeric values ({exc})") from exc
    return df


# ------------------------------------------------------------------ panels
def _thumb_size(h: int, w: int, side: int = THUMB_SIDE) -> tuple[int, int]:
    s = min(1.0, side / max(h, w))
    return max(1, round(w * s)), max(1, round(h * s))


def _blend_labels(image: np.ndarray, labels: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Colour the non-background pixels of ``labels`` (VOC palette) over ``image``."""
    out = image.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * palette_rgb(labels)[fg]
    out[labels == IGNORE_INDEX] = 255.0
    return out.round().astype(np.uint8)


def _heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    from matplotlib import colormaps

    lut = (colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
    colour = lut[np.clip(heat * 255, 0, 255).astype(np.uint8)]
    return ((1 - alpha) * image.astype(np.float32) + alpha * colour).round().astype(np.uint8)


def _resize_maps(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of [K, h, w] maps to ``size`` = (width, height)."""
    if cams.shape[0] == 0:
        return np.zeros((0, size[1], size[0]), np.float32)
    return np.stack([np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
                     for c in cams])


def render_panels(
    image: np.ndarray, classes: np.ndarray, cams: np.ndarray, mask: np.ndarray, thresh: float,
    side: int = THUMB_SIDE,
) -> list[tuple[str, np.ndarray]]:
    """Thumbnails (title, uint8 RGB) of image, map overlay, thresholded maps and ground truth.

    The thresholded panel is the mask the per-image JI scores: per pixel the
    argmax over [``thresh``, maps], i.e. background where every map is below
    ``thresh``.
    """
    h, w = image.shape[:2]
    size = _thumb_size(h, w, side)
    img = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    maps = _resize_maps(cams, size)
    heat = maps.max(axis=0) if len(maps) else np.zeros(img.shape[:2], np.float32)
    pred = maps_to_mask(classes, maps, thresh, shape=img.shape[:2])
    gt = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    return [
        ("image", img),
        ("maps (max over classes)", _heat_overlay(img, heat)),
        (f"maps &gt; {thresh:g}", _blend_labels(img, pred)),
        ("ground truth", _blend_labels(img, gt)),
    ]


def _class_names(ids: str) -> str:
    names = [CLASS_NAMES[int(t)] if t.isdigit() and int(t) < len(CLASS_NAMES) else t for t in ids.split()]
    return ", ".join(names) or "none"


def _gallery_html(run: RunSummary, key: str, title: str, rows: pd.DataFrame, thresh: float) -> str:
    out = [f'<section id="{key}"><h2>{title}</h2>']
    if rows.empty:
        out.append(f'<p class="empty" data-key="{key}_count" data-value="0">No image falls in this quadrant.</p>')
    voc_root, gt_dir = Path(run.cfg.get("voc12_root")), Path(run.cfg.get("gt_dir"))
    img_dir = run.cfg.get("img_dir", "JPEGImages")
    for row in rows.itertuples(index=False):
        name = row.name_image
        image = load_image(image_path(voc_root, name, img_dir))
        classes, cams = load_maps(run.cam_dir / f"{name}.npz")
        mask = load_mask(gt_dir, name, expect_shape=image.shape)
        panels = "".join(
            f'<figure style="width:{arr.shape[1]}px"><img src="{png_data_uri(arr)}" alt="{_esc(name)}: {t}" '
            f'width="{arr.shape[1]}" height="{arr.shape[0]}"><figcaption>{t}</figcaption></figure>'
            for t, arr in render_panels(image, classes, cams, mask, thresh)
        )
        out.append(
            f'<div class="sample" data-name="{_esc(name)}"><div class="cap"><b>{_esc(name)}</b> &middot; '
            f'loss <span data-key="loss">{row.loss:.4f}</span> &middot; JI <span data-key="ji">{row.miou:.3f}</span>'
            f' &middot; VICE term {row.contribution:+.3f} &middot; labels: {_esc(_class_names(row.label))}'
            f' &middot; predicted: {_esc(_class_names(row.prediction))}</div><div class="panels">{panels}</div></div>'
        )
    out.append("</section>")
    return "".join(out)


# ------------------------------------------------------------------ sections
def _ji_curve_png(ji: dict) -> bytes:
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(4.6, 3.2), dpi=100)
    ax = fig.subplots()
    t, m = np.asarray(ji["thresholds"], float), 100 * np.asarray(ji["miou"], float)
    ax.plot(t, m, color="#1f5fa8")
    ax.axvline(float(ji["best_threshold"]), color="#b03a2e", ls="--", lw=1)
    ax.set_xlabel("background threshold t")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"best {100 * float(ji['best_miou']):.2f}% at t = {float(ji['best_threshold']):.2f}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _metrics_html(run: RunSummary) -> str:
    m = run.metrics()
    rows = []
    for key, label, note in METRIC_ROWS:
        cell = f'<td class="num" data-key="{key}" data-value="{_esc(m[key])}">{format_metric(key, m[key])}</td>'
        if key == "vice":
            lo, hi = m["vice_ci_low"], m["vice_ci_high"]
            cell += (f'<td class="num">[<span data-key="vice_ci_low" data-value="{_esc(lo)}">'
                     f'{format_metric("vice_ci_low", lo)}</span>, <span data-key="vice_ci_high" '
                     f'data-value="{_esc(hi)}">{format_metric("vice_ci_high", hi)}</span>]</td>')
        else:
            cell += "<td></td>"
        rows.append(f"<tr><th>{label}</th>{cell}<td class='note'>{note}</td></tr>")
    ji_def = run.ji_definition
    ji_text = {
        "reference": "the original code's: per-image mean of the non-zero class IoUs at the JI threshold",
        "paper": "the paper's Eq. 6: mean IoU over the classes in the ground truth or the prediction",
    }.get(ji_def, ji_def)
    return (
        '<section id="metrics"><h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>95% interval</th>'
        f'<th>meaning</th></tr>{"".join(rows)}</table>'
        f'<p>Per-image JI used by VICE: <b data-key="ji_definition" data-value="{_esc(ji_def)}">{_esc(ji_def)}</b>'
        f' ({ji_text}). The best mIoU comes from the dataset-level JI curve (pixel counts accumulated over all '
        f'images per class, 21 classes).</p>{_baseline_html(run)}{_recorded_html(run)}</section>'
    )


def _baseline_html(run: RunSummary) -> str:
    """How the maps compare with centred blobs on the same classes (a map-quality floor)."""
    blob = run.blob_curve
    if blob is None:
        return ""
    ours, base = float(run.ji_curve["best_miou"]), float(blob["best_miou"])
    verdict = "beat" if ours > base else "do not beat"
    return (
        f'<p>Baseline: centred Gaussian blobs on the ground-truth classes reach a best mIoU of '
        f'<b data-key="blob_best_miou" data-value="{_esc(base)}">{format_metric("best_miou", base)}%</b> '
        f'(t = {float(blob["best_threshold"]):.2f}); the model\'s maps {verdict} it by '
        f'{100 * (ours - base):+.2f} points.</p>'
    )


def _recorded_html(run: RunSummary) -> str:
    """Scalar settings each summary recorded about itself (bins, thresholds, sources...)."""
    items = []
    for fname, data in (("ji_curve.json", run.ji_curve), ("ece.json", run.ece), ("vice.json", run.vice)):
        extra = [f"{_esc(k)}={_esc(v)}" for k, v in data.items()
                 if isinstance(v, (str, int, float, bool)) and k not in {"vice", "ece_ml", "acc_ml", "mAP",
                                                                        "best_miou", "best_threshold"}]
        if extra:
            items.append(f"<li><code>{fname}</code>: {', '.join(extra)}</li>")
    return f'<details><summary>Recorded with the summaries</summary><ul>{"".join(items)}</ul></details>'


def _settings_html(run: RunSummary) -> str:
    rows = f'<tr><th>recipe</th><td data-key="recipe">{_esc(recipe_of(run.cfg))}</td></tr>' + "".join(
        f'<tr><th>{label}</th><td data-key="cfg.{key}">{_esc(_fmt_setting(_cfg_get(run.cfg, key)))}</td></tr>'
        for label, key in SETTINGS
    )
    return (f'<section id="settings"><h2>Settings</h2><p class="sub">from <code>{_esc(run.paths.config_file)}</code>'
            f'</p><div class="settings"><table>{rows}</table></div></section>')


def _figures_html(run: RunSummary) -> str:
    captions = {
        "reliability.png": "Reliability diagram of ECE<sub>ML</sub>: images per confidence bin, and each bin's "
                           "ML-accuracy against the diagonal.",
        "vice_bins.png": "VICE figure: images sorted by loss and split into equal-count bins; mean JI and mean "
                         "loss per bin.",
        "loss_vs_ji.png": "Per-image loss against JI; VICE is the correlation of &minus;loss with JI.",
    }
    figs = [f'<figure data-figure="{f}"><img src="{png_data_uri(run.eval_dir / f)}" alt="{f}">'
            f"<figcaption>{captions[f]}</figcaption></figure>" for f in FIGURES]
    figs.append(f'<figure data-figure="ji_curve"><img src="{png_data_uri(_ji_curve_png(run.ji_curve))}" '
                'alt="JI curve"><figcaption>Dataset mIoU of the maps against the background threshold.'
                "</figcaption></figure>")
    return f'<section id="figures"><h2>Figures</h2><div class="figs">{"".join(figs)}</div></section>'


# ------------------------------------------------------------------ report
def build_report(run: RunSummary, k: int = 4, galleries: bool = True) -> str:
    """The report page of ``run`` as one HTML string (no external resources)."""
    session = run.cfg.get("session_name") or run.paths.root.name
    model = run.cfg.get("fignote") or run.cfg.get("network")
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    compared = methods_compared_html(run)
    compared_link = '<a href="#methods-compared">methods compared</a>' if compared else ""
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>VICE report: {_esc(session)}</title><style>{CSS}</style></head><body>",
        f'<h1>VICE report: <span data-key="session">{_esc(session)}</span></h1>',
        f'<p class="sub">{_esc(model)} &middot; list <code>{_esc(run.list_stem)}</code> &middot; weights '
        f'<code>{_esc(run.weights_stem)}</code> (sha256 <code data-key="weights_sha256">'
        f'{_esc(short_hash(run.provenance.get("weights_sha256")))}</code>) &middot; generated {now}</p>',
        '<nav><a href="#metrics">metrics</a><a href="#how-to-read">how to read</a><a href="#figures">figures</a>'
        '<a href="#low_loss_poor_map">low loss, poor maps</a><a href="#high_loss_good_map">high loss, good maps</a>'
        '<a href="#map-metrics">map metrics</a><a href="#gridpg">GridPG</a><a href="#sanity">sanity checks</a>'
        f'{compared_link}<a href="#settings">settings</a></nav>',
        _metrics_html(run),
        f'<section id="how-to-read"><h2>How to read VICE and ECE<sub>ML</sub></h2>{HOW_TO_READ}</section>',
        _figures_html(run),
        map_quality_sections(run.eval_dir),
        compared,
    ]
    if galleries:
        chosen = select_gallery(read_per_sample(run.per_sample_csv), k)
        thresh = float(run.cfg.get("eval_thresh", 0.1))
        parts.append(_gallery_html(run, "low_loss_poor_map", "Low loss, poor maps", chosen["low_loss_poor_map"],
                                   thresh))
        parts.append(_gallery_html(run, "high_loss_good_map", "High loss, good maps",
                                   chosen["high_loss_good_map"], thresh))
    parts += [_settings_html(run), _provenance_html(run), _files_html(run), "</body></html>"]
    return "\n".join(parts)


def methods_compared_html(run: RunSummary) -> str:
    """The "Methods compared" section from the session's ``compare_methods.json`` (scripts/compare_methods.py):
    the table and figure, or a notice naming what changed since when it no longer describes the session;
    "" when the session has no comparison."""
    root = run.paths.root
    record = read_comparison(root)
    if record is None:
        return ""
    head = '<section id="methods-compared"><h2>Methods compared</h2>'
    problems = comparison_problems(root, record, run.provenance.get("weights_sha256"))
    if problems:
        return f'{head}<p class="empty" data-key="compare_stale">{_esc(stale_message(root, problems))}</p></section>'
    frame = pd.DataFrame(record["table"])
    metrics = record["metrics"]
    display = display_frame(frame, metrics)
    keys = ["method", *(("best_miou" if m == "miou" else m) for m in metrics), *(f"vice_{m}" for m in metrics), "n"]
    head_row = "".join(f"<th>{_esc(c)}</th>" for c in display.columns)
    body = []
    for i, row in enumerate(display.itertuples(index=False)):
        method = frame["method"].iloc[i]
        cells = [f"<th>{_esc(method)}</th>"] + [
            f'<td class="num" data-key="{_esc(method)}.{k}" data-value="{_esc(frame[k].iloc[i])}">{_esc(v)}</td>'
            for k, v in zip(keys[1:], row[1:])]
        body.append(f'<tr data-method="{_esc(method)}">{"".join(cells)}</tr>')
    settings = {m: (p.get("metric_settings") or {}).get("insdel_steps") for m, p in record["methods"].items()}
    steps = sorted({str(v) for v in settings.values()})
    fig = root / "compare_methods.png"
    figure = (f'<div class="figs"><figure data-figure="compare_methods.png"><img src="{png_data_uri(fig)}" '
              'alt="methods compared"><figcaption>Left: each metric\'s dataset value per method. Right: VICE of each '
              "metric with its bootstrap 95% interval.</figcaption></figure></div>") if fig.is_file() else ""
    return (
        f"{head}<p>The same trained network (weights sha256 <code>{_esc(short_hash(record.get('weights_sha256')))}"
        f"</code>), one row per attribution method (<code>scripts/compare_methods.py</code>). best mIoU: the JI "
        "curve's best dataset mIoU; EPG, PG, insertion, deletion: dataset means of the map metrics (deletion: lower "
        f"is better; insertion/deletion with {_esc(', '.join(steps))} steps); VICE [95% CI] of each metric "
        "(deletion negated, so higher VICE is better throughout).</p>"
        f'<table><tr>{head_row}</tr>{"".join(body)}</table>{figure}</section>'
    )


def _provenance_html(run: RunSummary) -> str:
    """Which weights, maps and CSV the numbers come from (all checked against each other by ``load_run``)."""
    prov = run.provenance
    rows = [("weights", run.weights_file, prov.get("weights_sha256")),
            ("maps record (stamp)", run.cam_dir / "maps_meta.json", prov.get("maps_stamp")),
            ("per-sample CSV", run.per_sample_csv, prov.get("csv_sha256"))]
    body = "".join(f'<tr><th>{label}</th><td><code>{_esc(path)}</code></td><td><code title="{_esc(h or "")}">'
                   f"{_esc(short_hash(h))}</code></td></tr>" for label, path, h in rows)
    return (f'<section id="provenance"><h2>Provenance</h2><p class="sub">sha256 of the inputs; chain '
            f'{_esc(prov.get("status", "unchecked"))}</p><table>{body}</table></section>')


def _files_html(run: RunSummary) -> str:
    files = [run.paths.config_file, run.weights_file, run.cam_dir, run.per_sample_csv,
             *(run.eval_dir / f for f in ("ji_curve.json", "ece.json", "vice.json", "map_metrics.json",
                                          "vice_metrics.json", "gridpg.json", "sanity.json")
               if f in ("ji_curve.json", "ece.json", "vice.json") or (run.eval_dir / f).is_file())]
    items = "".join(f"<li><code>{_esc(p)}</code></li>" for p in files)
    return f'<section id="files"><h2>Files</h2><ul>{items}</ul></section>'


def write_report(
    root: PathLike, list_name: str | None = None, weights: str | None = None, out: PathLike | None = None,
    k: int = 4, galleries: bool = True, tag: str = "",
) -> Path:
    """Build the report of run ``root`` (evaluation ``tag``) and write it atomically to ``out``
    (default ``root/report.html``, or ``root/report_<tag>.html``)."""
    run = load_run(root, list_name, weights, tag)
    page = build_report(run, k=k, galleries=galleries)
    default = Path(root) / (f"report_{tag}.html" if tag else "report.html")
    return write_text_atomic(Path(out) if out else default, page)


__all__ = [
    "build_report", "png_data_uri", "read_per_sample", "render_panels", "select_gallery", "vice_contributions",
    "write_report",
]
