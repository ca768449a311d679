"""Read one finished run (``work_dirs/<session>``): its config, JSON summaries and per-sample CSV.

Shared by the HTML report and the cross-run table so that both show the same
numbers, formatted the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mmengine.config import Config

from ..config import SessionPaths
from ..io import read_json_object

PathLike = str | os.PathLike

# Keys each summary must hold (docs/DESIGN.md, "JSON summaries").
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "ji_curve.json": ("thresholds", "miou", "best_threshold", "best_miou"),
    "ji_curve_blob.json": ("thresholds", "miou", "best_threshold", "best_miou"),
    "ece.json": ("ece_ml", "acc_ml", "mAP"),
    "vice.json": ("vice", "n", "ci_low", "ci_high", "spearman", "p_value"),
}
FIGURES = ("reliability.png", "vice_bins.png", "loss_vs_ji.png")
# Which stage writes which file, for error messages.
PRODUCER = {
    "ji_curve.json": "evaluation.py",
    "ji_curve_blob.json": "evaluation.py on scripts/make_blob_maps.py's maps",
    "per_sample.csv": "compute_each_image_loss.py",
    "ece.json": "compute_ECE.py",
    "reliability.png": "compute_ECE.py",
    "vice.json": "compute_VICE.py",
    "vice_bins.png": "compute_VICE.py",
    "loss_vs_ji.png": "compute_VICE.py",
}

# Headline metrics: key -> (source file, key in it). Fractions in [0, 1] as stored.
METRIC_SOURCES: dict[str, tuple[str, str]] = {
    "map": ("ece.json", "mAP"),
    "acc_ml": ("ece.json", "acc_ml"),
    "ece_ml": ("ece.json", "ece_ml"),
    "vice": ("vice.json", "vice"),
    "vice_ci_low": ("vice.json", "ci_low"),
    "vice_ci_high": ("vice.json", "ci_high"),
    "n": ("vice.json", "n"),
    "spearman": ("vice.json", "spearman"),
    "p_value": ("vice.json", "p_value"),
    "best_threshold": ("ji_curve.json", "best_threshold"),
    "best_miou": ("ji_curve.json", "best_miou"),
}
PERCENT_KEYS = frozenset({"map", "acc_ml", "ece_ml", "best_miou"})


class RunNotFinished(FileNotFoundError):
    """A run directory lacks an output of a later stage."""


@dataclass(frozen=True)
class RunSummary:
    """Everything the report and the table read from one run."""

    paths: SessionPaths
    cfg: Config
    list_stem: str
    weights_stem: str
    ji_curve: dict
    ece: dict
    vice: dict

    @property
    def eval_dir(self) -> Path:
        return self.paths.eval_dir(self.list_stem, self.weights_stem)

    @property
    def cam_dir(self) -> Path:
        return self.paths.cam_dir(self.list_stem, self.weights_stem)

    @property
    def per_sample_csv(self) -> Path:
        return self.eval_dir / "per_sample.csv"

    @property
    def weights_file(self) -> Path:
        return self.paths.model_dir / f"{self.weights_stem}.pth"

    @property
    def ji_definition(self) -> str:
        """The per-image JI definition VICE used (vice.json), else the config's."""
        return str(self.vice.get("ji_definition") or self.cfg.get("ji_definition", "reference"))

    @property
    def blob_curve(self) -> dict | None:
        """JI curve of the centred-blob baseline maps (``ji_curve_blob.json``), when it was run."""
        path = self.eval_dir / "ji_curve_blob.json"
        return read_summary(path) if path.is_file() else None

    def metrics(self) -> dict[str, Any]:
        """Headline numbers as stored (fractions), keyed as :data:`METRIC_SOURCES`."""
        files = {"ece.json": self.ece, "vice.json": self.vice, "ji_curve.json": self.ji_curve}
        return {key: files[src][name] for key, (src, name) in METRIC_SOURCES.items()}


def format_metric(key: str, value: Any) -> str:
    """Display text of a headline number: percent for rates (2 decimals), 3 decimals for correlations."""
    if value is None:
        return "n/a"
    if key in PERCENT_KEYS:
        return f"{100 * float(value):.2f}"
    if key == "n":
        return str(int(value))
    if key == "p_value":
        return f"{float(value):.2g}"
    if key == "best_threshold":
        return f"{float(value):.2f}"
    return f"{float(value):.3f}"


def read_summary(path: PathLike) -> dict:
    """A JSON summary with its required keys (:data:`REQUIRED_KEYS`); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise RunNotFinished(f"{path}: not found (written by {PRODUCER.get(path.name, 'a pipeline stage')})")
    data = read_json_object(path)
    missing = [k for k in REQUIRED_KEYS.get(path.name, ()) if k not in data]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    return data


def read_run_config(root: PathLike) -> Config:
    """The merged ``config.py`` a run saved when it trained."""
    path = Path(root) / "config.py"
    if not path.is_file():
        raise RunNotFinished(f"{path}: not found; is {root} a run directory (work_dirs/<session>)?")
    try:
        return Config.fromfile(str(path))
    except Exception as exc:  # mmengine raises SyntaxError, KeyError, ...
        raise ValueError(f"{path}: unreadable config ({exc})") from exc


def pick_eval(root: PathLike, cfg: Mapping[str, Any], list_name: str | None, weights: str | None) -> tuple[str, str]:
    """``(list stem, weights stem)`` of the evaluation to read.

    Defaults come from the config (``eval_list``, ``weights``); when that
    evaluation does not exist and the run has exactly one, that one is used.
    """
    lst = Path(list_name or cfg.get("eval_list") or "val.txt").stem
    wts = Path(weights or cfg.get("weights") or "best.pth").stem
    eval_root = Path(root) / "eval"
    if list_name is None and weights is None and not (eval_root / f"{lst}_{wts}").is_dir() and eval_root.is_dir():
        dirs = [d for d in eval_root.iterdir() if d.is_dir() and "_" in d.name]
        if len(dirs) == 1:
            # the list stem may contain "_" (train_aug): the weights stem is the last part
            lst, wts = dirs[0].name.rsplit("_", 1)
    return lst, wts


def load_run(root: PathLike, list_name: str | None = None, weights: str | None = None) -> RunSummary:
    """Read a finished run; :class:`RunNotFinished` names the first missing output."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: run directory not found")
    cfg = read_run_config(root)
    lst, wts = pick_eval(root, cfg, list_name, weights)
    paths = SessionPaths(root)
    eval_dir = paths.eval_dir(lst, wts)
    if not eval_dir.is_dir():
        raise RunNotFinished(f"{eval_dir}: no evaluation for list {lst!r} and weights {wts!r}")
    return RunSummary(
        paths=paths, cfg=cfg, list_stem=lst, weights_stem=wts,
        ji_curve=read_summary(eval_dir / "ji_curve.json"),
        ece=read_summary(eval_dir / "ece.json"),
        vice=read_summary(eval_dir / "vice.json"),
    )
