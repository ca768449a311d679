"""Collect finished runs into the paper's table layout (Tables 1-5), as Markdown, CSV or LaTeX.

Columns: model, what differs from the default recipe (pre-training checkpoint,
fc/head-only fine-tuning, weight decay, random erasing), parameter count,
mAP, ML-accuracy, ECE_ML (%), VICE with its 95% interval, JI (the best
dataset mIoU) and the per-image JI definition VICE used.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ConfigError, InputError, MissingInputError, StaleError
from ..provenance import short_hash
from .summary import RunNotFinished, RunSummary, format_metric, load_run

PathLike = str | os.PathLike
# Non-parameter entries of a state dict (BatchNorm statistics).
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
FORMATS = ("md", "csv", "latex")
# (row key, header): order of the columns in every format
COLUMNS: tuple[tuple[str, str], ...] = (
    ("session", "session"), ("model", "model"), ("variant", "variant"), ("params", "params (M)"),
    ("map", "mAP %"), ("acc_ml", "Acc %"), ("ece_ml", "ECE_ML %"), ("vice", "VICE"),
    ("vice_ci", "VICE 95% CI"), ("best_miou", "JI (best mIoU %)"), ("ji_definition", "JI def."),
    ("weights_sha256", "weights sha256"),
)


@dataclass(frozen=True)
class TableRow:
    """One run's entries; metric values are the stored fractions (not percent)."""

    session: str
    model: str
    variant: str
    params: int | None
    metrics: dict[str, Any]
    ji_definition: str
    weights_sha256: str | None = None


def count_params(checkpoint: PathLike) -> int:
    """Number of parameters in a checkpoint's state dict (``model`` entry or a plain state dict).

    BatchNorm running statistics are buffers, not parameters, and are left out.
    The file is memory-mapped, so only the headers of the tensors are read.
    """
    import torch

    path = Path(checkpoint)
    if not path.is_file():
        raise MissingInputError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated file, pickle with disallowed globals, ...
        raise InputError(f"{path}: cannot read checkpoint ({exc})") from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path}: no state dict (expected a dict with 'model' or a plain state dict)")
    from ..models.checkpoint import is_aux_key

    return sum(int(v.numel()) for k, v in state.items()
               if isinstance(v, torch.Tensor) and not k.endswith(BUFFER_SUFFIXES) and not is_aux_key(k))


def recorded_params(run: RunSummary) -> int | None:
    """A parameter count the training stage recorded in ``log/env.json``, if any."""
    env = run.paths.log_dir / "env.json"
    if not env.is_file():
        return None
    try:
        data = json.loads(env.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    for key in ("num_params", "n_params", "params"):
        if isinstance(data, dict) and isinstance(data.get(key), int):
            return data[key]
    return None


def variant_of(cfg: Any) -> str:
    """What differs from the default recipe, in the paper's terms (Tables 3-5)."""
    parts = []
    pre = cfg.get("pretrain") or cfg.get("pretrained")
    if isinstance(pre, str) and pre not in ("", "lite0_package", "lite_package"):
        parts.append(f"init {Path(pre).stem}")
    elif pre is False:
        parts.append("from scratch")
    if cfg.get("finetune"):
        parts.append("head only" if "vit" in str(cfg.get("network", "")) else "fc only")
    opt = cfg.get("optimizer") or {}
    if opt.get("weight_decay", None) == 0:
        parts.append("no weight decay")
    if float(cfg.get("cut_p", 0) or 0) > 0:
        parts.append(f"random erasing p={cfg.get('cut_p')} s={cfg.get('cut_s')}")
    if cfg.get("probe"):
        parts.append(f"{cfg.get('probe')} probe ({str(cfg.get('probe_loss', 'bce')).upper()}) on the frozen backbone")
    adv = str(cfg.get("adv_train", "none") or "none")
    if adv != "none":
        kind, norm = adv.split("_")
        parts.append(f"{'PGD' if kind == 'pgd' else 'AdvProp'}-{norm.upper() if norm == 'l2' else 'Linf'} "
                     f"eps={cfg.get('adv_eps')} x{cfg.get('adv_steps')}")
    return "; ".join(parts) or "default"


def row_of(run: RunSummary, with_params: bool = True) -> TableRow:
    params = None
    if with_params:
        params = recorded_params(run)
        if params is None and run.weights_file.is_file():
            params = count_params(run.weights_file)
    return TableRow(
        session=str(run.cfg.get("session_name") or run.paths.root.name),
        model=str(run.cfg.get("network")),
        variant=variant_of(run.cfg),
        params=params,
        metrics=run.metrics(),
        ji_definition=run.ji_definition,
        weights_sha256=run.provenance.get("weights_sha256"),
    )


def collect_rows(
    run_dirs: Iterable[PathLike], list_name: str | None = None, weights: str | None = None,
    with_params: bool = True,
) -> tuple[list[TableRow], list[str]]:
    """Rows of the finished runs among ``run_dirs``, and a note for each one skipped."""
    rows, notes = [], []
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            notes.append(f"{d}: not a directory, skipped")
            continue
        try:
            rows.append(row_of(load_run(d, list_name, weights), with_params))
        except RunNotFinished as exc:
            notes.append(f"{d}: unfinished, skipped ({exc})")
        except StaleError as exc:
            notes.append(f"{d}: stale, skipped ({exc})")
    return rows, notes


def _cells(row: TableRow, numeric: bool) -> dict[str, str]:
    """Cell text of a row: display precision, or full precision in the same units when ``numeric``."""
    m = row.metrics

    def num(key: str) -> str:
        if m[key] is None:
            return ""
        if numeric:
            scale = 100.0 if key in ("map", "acc_ml", "ece_ml", "best_miou") else 1.0
            return repr(scale * float(m[key]))
        return format_metric(key, m[key])

    params = "" if row.params is None else (str(row.params) if numeric else f"{row.params / 1e6:.2f}")
    return dict(session=row.session, model=row.model, variant=row.variant, params=params,
                map=num("map"), acc_ml=num("acc_ml"), ece_ml=num("ece_ml"), vice=num("vice"),
                vice_ci=f"[{num('vice_ci_low')}, {num('vice_ci_high')}]", vice_ci_low=num("vice_ci_low"),
                vice_ci_high=num("vice_ci_high"), best_miou=num("best_miou"), ji_definition=row.ji_definition,
                weights_sha256=(row.weights_sha256 or "") if numeric else short_hash(row.weights_sha256))


_LATEX = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}
TEXT_COLUMNS = frozenset({"session", "model", "variant", "ji_definition", "weights_sha256"})


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def format_table(rows: Sequence[TableRow], fmt: str = "md") -> str:
    """The table in ``fmt``: ``md`` (display precision), ``latex`` (booktabs, display precision) or
    ``csv`` (full precision in the same units: params as a count, rates in percent, the interval as
    columns ``vice_ci_low, vice_ci_high``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    keys = [k for k, _ in COLUMNS]
    if fmt == "csv":
        keys = [c for k in keys for c in (("vice_ci_low", "vice_ci_high") if k == "vice_ci" else (k,))]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(keys)
        for r in rows:
            c = _cells(r, numeric=True)
            writer.writerow([c[k] for k in keys])
        return buf.getvalue()
    heads = [h for _, h in COLUMNS]
    body = [[_cells(r, numeric=False)[k] for k in keys] for r in rows]
    if fmt == "md":
        align = ["---" if k in TEXT_COLUMNS else "---:" for k in keys]
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
        return "\n".join(lines) + "\n"
    spec = "".join("l" if k in TEXT_COLUMNS else "r" for k in keys)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_latex_escape(h) for h in heads).replace("ECE\\_ML", "ECE$_{ML}$") + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(c) for c in cells) + r" \\" for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
