"""Read one finished run (``work_dirs/<session>``): its config, JSON summaries and per-sample CSV.

Shared by the HTML report and the cross-run table so that both show the same
numbers, formatted the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mmengine.config import Config

from ..config import SessionPaths
from ..errors import InputError, MissingInputError, StaleError
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


class RunNotFinished(MissingInputError):
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
    #: sha256 of the weights, maps record, CSV and the chain's status (:func:`check_chain`)
    provenance: dict = field(default_factory=dict)
    #: ``map_tag`` of the evaluation ("" for the run's own method)
    tag: str = ""

    @property
    def eval_dir(self) -> Path:
        return self.paths.eval_dir(self.list_stem, self.weights_stem, self.tag)

    @property
    def cam_dir(self) -> Path:
        return self.paths.cam_dir(self.list_stem, self.weights_stem, self.tag)

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
        raise InputError(f"{path}: missing key(s) {', '.join(missing)}")
    return data


def read_run_config(root: PathLike) -> Config:
    """The merged ``config.py`` a run saved when it trained."""
    path = Path(root) / "config.py"
    if not path.is_file():
        raise RunNotFinished(f"{path}: not found; is {root} a run directory (work_dirs/<session>)?")
    try:
        return Config.fromfile(str(path))
    except Exception as exc:  # mmengine raises SyntaxError, KeyError, ...
        raise InputError(f"{path}: unreadable config ({exc})") from exc


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


def load_run(root: PathLike, list_name: str | None = None, weights: str | None = None, tag: str = "") -> RunSummary:
    """Read a finished run (the evaluation with ``map_tag`` ``tag``); :class:`RunNotFinished` names the
    first missing output."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"{root}: run directory not found")
    cfg = read_run_config(root)
    lst, wts = pick_eval(root, cfg, list_name, weights)
    paths = SessionPaths(root)
    eval_dir = paths.eval_dir(lst, wts, tag)
    if not eval_dir.is_dir():
        raise RunNotFinished(f"{eval_dir}: no evaluation for list {lst!r} and weights {wts!r}")
    run = RunSummary(
        paths=paths, cfg=cfg, list_stem=lst, weights_stem=wts, tag=tag,
        ji_curve=read_summary(eval_dir / "ji_curve.json"),
        ece=read_summary(eval_dir / "ece.json"),
        vice=read_summary(eval_dir / "vice.json"),
    )
    return RunSummary(**{**run.__dict__, "provenance": check_chain(run)})


def _redo(stage: str, run: RunSummary) -> str:
    return (f"redo the {stage} stage (bash run.sh, or scripts/run_stages.py with the run's config, redoes what is "
            f"stale; or run {PRODUCER.get(stage, stage)} again)")


def check_chain(run: RunSummary) -> dict[str, Any]:
    """Check that every output of the run comes from the current weights and from each other.

    weights file -> maps (``maps_meta.json``, stamps) -> per-sample CSV (its record) -> ECE/VICE (the CSV's
    sha256); the JI curve -> the maps' stamp. Raises :class:`StaleError` naming the stage to redo; an output
    without a record (older versions) is reported as ``unknown`` with a warning rather than refused.
    """
    import warnings

    from ..mapfile import read_maps_meta
    from ..mapfile import meta_stamp
    from ..metrics.per_sample import csv_meta_path
    from ..provenance import sha256_file, short_hash

    out: dict[str, Any] = {"weights_sha256": sha256_file(run.weights_file) if run.weights_file.is_file() else None}
    csv_sha = sha256_file(run.per_sample_csv) if run.per_sample_csv.is_file() else None
    out["csv_sha256"] = csv_sha
    maps = read_maps_meta(run.cam_dir) if run.cam_dir.is_dir() else None
    out["maps_stamp"] = meta_stamp(maps) if maps else None
    if maps and maps.get("weights_sha256") and out["weights_sha256"] and maps["weights_sha256"] != out["weights_sha256"]:
        raise StaleError(f"{run.cam_dir}: maps from weights {short_hash(maps['weights_sha256'])} but "
                         f"{run.weights_file} is {short_hash(out['weights_sha256'])}; {_redo('maps', run)}")
    record_path = csv_meta_path(run.per_sample_csv)
    record = read_json_object(record_path) if record_path.is_file() else None
    unknown = []
    if record is None:
        unknown.append(str(record_path))
    else:
        if record.get("csv_sha256") != csv_sha:
            raise StaleError(f"{run.per_sample_csv}: changed since its record was written; {_redo('per_sample.csv', run)}")
        rec_w = (record.get("weights") or {}).get("sha256")
        if rec_w and out["weights_sha256"] and rec_w != out["weights_sha256"]:
            raise StaleError(f"{run.per_sample_csv}: computed from weights {short_hash(rec_w)} but {run.weights_file} "
                             f"is {short_hash(out['weights_sha256'])}; {_redo('per_sample.csv', run)}")
        rec_stamp = (record.get("maps") or {}).get("stamp")
        if rec_stamp and out["maps_stamp"] and rec_stamp != out["maps_stamp"]:
            raise StaleError(f"{run.per_sample_csv}: computed from other maps than {run.cam_dir} holds now; "
                             f"{_redo('per_sample.csv', run)}")
    for name, summary in (("ece.json", run.ece), ("vice.json", run.vice)):
        got = (summary.get("provenance") or {}).get("csv_sha256")
        if got is None:
            unknown.append(name)
        elif got != csv_sha:
            raise StaleError(f"{run.eval_dir / name}: computed from another version of {run.per_sample_csv.name}; "
                             f"{_redo(name, run)}")
    curve_stamp = ((run.ji_curve.get("provenance") or {}).get("maps") or {}).get("stamp")
    if curve_stamp is None:
        unknown.append("ji_curve.json")
    elif out["maps_stamp"] and curve_stamp != out["maps_stamp"]:
        raise StaleError(f"{run.eval_dir / 'ji_curve.json'}: computed from other maps than {run.cam_dir} holds now; "
                         f"{_redo('ji_curve.json', run)}")
    if unknown:
        warnings.warn(f"{run.paths.root}: no provenance record in {', '.join(unknown)} (made by an older version); "
                      "cannot check that they come from the current weights", stacklevel=2)
    out["status"] = "checked" if not unknown else f"unknown for {', '.join(unknown)}"
    return out
