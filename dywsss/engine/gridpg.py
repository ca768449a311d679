"""GridPG (Böhle et al. 2021; "How to Probe" §4, beyond-spec 1.4): localisation on grids of confident images.

1. Candidates: images of ``eval_list`` with exactly one labelled class that the model
   classifies correctly with confidence: on the per-sample stage's input
   (``loss_input`` at ``crop_size``), ``p_c >= min_conf`` for the true class c and
   ``p < pred_threshold`` for every other class (the predicted set is {c}); at most
   ``max_per_class`` per class (a seeded draw when there are more).
2. Grids: ``n_grids`` seeded g x g grids (g = 2, or 3): g*g distinct classes drawn at
   random, one random candidate of each; each cell is that image's network input
   (``crop_size`` x ``crop_size``), so the grid is ``g * crop_size`` a side.
3. Maps: the configured method (``cam_method``) on the whole grid, one map per cell's
   class, upsampled bilinearly to the grid: the raw maps, before the map stage's
   min-max step (which would change the ratios below). Explainers with a fixed input
   size (ViTs) get the grid resized to that size (recorded in the JSON).
4. Score of cell i (its class as the target): optional 5x5 mean smoothing (stride 1,
   zero padding 2, as the authors' code), then A+ = max(A, 0);
   ``L_i = sum_{p in cell i} A+(p) / sum_p A+(p)``. A map without positive mass is
   skipped (NaN). GridPG = the mean of L_i over all cells of all grids.

Outputs in ``eval/<list>_<weights>/``: ``gridpg.csv`` (one row per grid cell),
``gridpg.json`` (mean, counts, per-class means, settings, sha256 of the weights and
inputs); ``scripts/gridpg.py`` adds ``gridpg.png`` (example grids).
"""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import nn
from tqdm import tqdm

from ..config import data_path, prefixed_settings, session_paths
from ..metrics.probe_losses import output_kind, output_probs
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..data.voc import CLASS_NAMES, image_path, label_matrix, load_cls_labels, load_image, read_image_list
from ..errors import ConfigError, InputError
from ..explain import EXPLAINERS
from ..io import atomic_path, write_json_atomic
from ..provenance import file_record, sha256_file, sha256_files

GRID_SIZES = (2, 3)
SMOOTHING = ("none", "mean5")
CSV_COLUMNS = ("grid", "cell", "row", "col", "class_id", "class_name", "name_image", "score")


@dataclass
class GridPGSettings:
    """The GridPG choices; config keys ``gridpg_<field>`` (e.g. ``gridpg_grid``) give the defaults."""

    grid: int = 2
    n_grids: int = 100
    min_conf: float = 0.95
    max_per_class: int = 100
    smooth: str = "mean5"
    seed: int = 0
    batch_size: int = 4
    n_examples: int = 4

    @classmethod
    def from_cfg(cls, cfg: Config, **overrides: Any) -> "GridPGSettings":
        base = cls(seed=int(cfg.get("random_seed", 0)))  # the seed defaults to random_seed
        values = prefixed_settings(cfg, "gridpg_", base, overrides)
        return cls(**values).checked()

    def checked(self) -> "GridPGSettings":
        checks = [
            ("grid", self.grid in GRID_SIZES, f"one of {GRID_SIZES}"),
            ("n_grids", int(self.n_grids) >= 1, "an integer >= 1"),
            ("min_conf", 0.0 <= float(self.min_conf) <= 1.0, "a probability in [0, 1]"),
            ("max_per_class", int(self.max_per_class) >= 1, "an integer >= 1"),
            ("smooth", self.smooth in SMOOTHING, f"one of {SMOOTHING}"),
            ("batch_size", int(self.batch_size) >= 1, "an integer >= 1"),
            ("n_examples", int(self.n_examples) >= 0, "an integer >= 0"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ConfigError(f"gridpg_{name}={getattr(self, name)!r}: expected {what}")
        return self


# ------------------------------------------------------------------ selection and grids
def confident_images(probs: np.ndarray, labels: np.ndarray, min_conf: float, pred_threshold: float,
                     max_per_class: int, rng: np.random.Generator) -> dict[int, list[int]]:
    """{class: row indices} of single-class images predicted as exactly {c} with ``p_c >= min_conf``.

    With more than ``max_per_class`` candidates, a seeded draw keeps that many (in list order).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels) > 0.5
    single = labels.sum(1) == 1
    true = labels.argmax(1)
    rows = np.arange(len(probs))
    p_true = probs[rows, true]
    others = np.where(labels, -np.inf, probs).max(1)
    ok = single & (p_true >= min_conf) & (others < pred_threshold) & (p_true > pred_threshold)
    out: dict[int, list[int]] = {}
    for c in range(labels.shape[1]):
        idx = np.flatnonzero(ok & (true == c))
        if idx.size > max_per_class:
            idx = np.sort(rng.choice(idx, size=max_per_class, replace=False))
        if idx.size:
            out[c] = idx.tolist()
    return out


def build_grids(candidates: dict[int, list[int]], n_grids: int, grid: int,
                rng: np.random.Generator) -> list[list[tuple[int, int]]]:
    """``n_grids`` lists of g*g (class, image row) cells in row-major order: distinct classes, each
    with one random candidate image."""
    classes = sorted(candidates)
    need = grid * grid
    if len(classes) < need:
        raise InputError(
            f"GridPG {grid}x{grid} needs confident single-class images of {need} classes, but only "
            f"{len(classes)} class(es) have some ({[CLASS_NAMES[c] for c in classes]}); lower gridpg_min_conf, use "
            "gridpg_grid=2, or evaluate a stronger model / larger list"
        )
    grids = []
    for _ in range(n_grids):
        picked = rng.choice(classes, size=need, replace=False)
        grids.append([(int(c), int(rng.choice(candidates[int(c)]))) for c in picked])
    return grids


def assemble_grid(cells: torch.Tensor, grid: int) -> torch.Tensor:
    """Cells [g*g, C, s, s] -> one image [C, g*s, g*s], cells in row-major order."""
    n, ch, s, s2 = cells.shape
    if n != grid * grid or s != s2:
        raise ValueError(f"need {grid * grid} square cells, got {tuple(cells.shape)}")
    return cells.view(grid, grid, ch, s, s).permute(2, 0, 3, 1, 4).reshape(ch, grid * s, grid * s)


def smooth_maps(maps: torch.Tensor, smooth: str) -> torch.Tensor:
    """``mean5``: 5x5 mean filter, stride 1, zero padding 2 (border pixels average in zeros); ``none``."""
    if smooth == "none":
        return maps
    if smooth == "mean5":
        return F.avg_pool2d(maps[:, None], kernel_size=5, stride=1, padding=2, count_include_pad=True)[:, 0]
    raise ConfigError(f"gridpg_smooth={smooth!r}: expected one of {SMOOTHING}")


def cell_scores(maps: torch.Tensor, grid: int, smooth: str = "none") -> np.ndarray:
    """GridPG score of each cell: maps [g*g, H, W] (map i for cell i's class, H and W divisible by g)
    -> float64 [g*g]: positive mass inside cell i / total positive mass (NaN without positive mass)."""
    n, h, w = maps.shape
    if n != grid * grid or h % grid or w % grid:
        raise ValueError(f"need {grid * grid} maps of a size divisible by {grid}, got {tuple(maps.shape)}")
    pos = smooth_maps(maps.double(), smooth).clamp(min=0)
    per_cell = pos.view(n, grid, h // grid, grid, w // grid).sum((2, 4)).view(n, n)  # [map, cell]
    total = per_cell.sum(1)
    inside = per_cell.diagonal()
    out = torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)),
                      torch.full_like(total, float("nan")))
    return out.cpu().numpy()


# ------------------------------------------------------------------ model work
def raw_grid_maps(explainer: Any, grids: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """The explainer's raw maps for grids [B, 3, G, G], upsampled bilinearly to G x G (no normalisation).

    A fixed-input-size explainer (ViT) sees the grids resized to its input size.
    """
    size = tuple(grids.shape[-2:])
    fixed = getattr(explainer, "input_size", None)
    x = grids if not fixed or tuple(fixed) == size else F.interpolate(
        grids, size=tuple(fixed), mode="bilinear", align_corners=False, antialias=True)
    if explainer.batched:
        raw = explainer.explain(x, classes)
    else:
        raw = [explainer.explain(x[i:i + 1], [c])[0] for i, c in enumerate(classes)]
    return [F.interpolate(r[None].float(), size=size, mode="bilinear", align_corners=False)[0] for r in raw]


@torch.no_grad()
def input_probs(model: nn.Module, inputs: Sequence[torch.Tensor], device: torch.device, batch_size: int = 32,
                head: Mapping[str, Any] | None = None) -> np.ndarray:
    """Class probabilities [N, C] of the network inputs: sigmoid, or as a probe was trained (``head``: the
    ``ModelSpec.head`` record; softmax for a CE probe, whose logits are shift-invariant)."""
    out = []
    for i in range(0, len(inputs), batch_size):
        logits = model(torch.stack(inputs[i:i + batch_size]).to(device)).float()
        out.append(output_probs(logits, head).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 20), np.float32)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A normalised image [3, H, W] back to uint8 [H, W, 3] (for figures)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x.cpu().float() * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


# ------------------------------------------------------------------ the stage
def gridpg_dir(cfg: Config) -> Path:
    return session_paths(cfg).eval_dir(cfg.eval_list, cfg.weights, cfg.get("map_tag", ""))


@dataclass
class GridPGResult:
    """What :func:`run_gridpg` wrote, and the example grids for the figure (``dywsss.viz.gridpg``)."""

    json_path: Path
    csv_path: Path
    summary: dict
    examples: list  # (grid image uint8 [G, G, 3], maps [g*g, G, G], classes, scores)

    @property
    def figure_path(self) -> Path:
        return self.json_path.with_name("gridpg.png")


def run_gridpg(cfg: Config, model: nn.Module | None = None, settings: GridPGSettings | None = None,
               progress: bool = True) -> GridPGResult:
    """Write ``gridpg.csv`` and ``gridpg.json`` for ``cfg.eval_list``; the figure is drawn from
    ``result.examples`` by :func:`dywsss.viz.gridpg.plot_gridpg_examples` (``scripts/gridpg.py``).

    ``model`` (optional) replaces loading ``model/<weights>`` (tests).
    """
    from ..data.transforms import prediction_transform
    from ..models.spec import load_session_model
    from .runtime import select_device

    s = settings or GridPGSettings.from_cfg(cfg)
    if cfg.cam_method not in EXPLAINERS:
        EXPLAINERS.get(cfg.cam_method)  # raises with the close names
    list_file = data_path(cfg, cfg.eval_list)
    names = read_image_list(list_file)
    labels = label_matrix(names, load_cls_labels(cfg.cls_label, allow_pickle=cfg.allow_pickle), source=cfg.cls_label)
    weights_path = session_paths(cfg).weights_file(cfg.weights)
    device = select_device(cfg.get("device", "auto"))
    trained = load_session_model(cfg, device) if model is None else None
    model = trained.model if trained is not None else model.to(device).eval()
    explainer = EXPLAINERS.get(cfg.cam_method)(model, cfg)
    rng = np.random.default_rng(s.seed)

    mean, std = (trained.spec.mean, trained.spec.std) if trained is not None else ((0.485, 0.456, 0.406),
                                                                                   (0.229, 0.224, 0.225))
    tf = prediction_transform(cfg.loss_input, int(cfg.crop_size), mean, std)
    single = np.flatnonzero(labels.sum(1) == 1)
    image_files = [image_path(cfg.voc12_root, names[i], cfg.img_dir) for i in single]
    inputs = [tf(load_image(p)) for p in tqdm(image_files, desc="GridPG candidates", disable=not progress,
                                               leave=False)]
    head = trained.spec.head if trained is not None else None
    probs = input_probs(model, inputs, device, head=head)
    found = confident_images(probs, labels[single], float(s.min_conf), float(cfg.pred_threshold),
                             int(s.max_per_class), rng)
    candidates = {c: [int(single[i]) for i in rows] for c, rows in found.items()}
    cell_input = {int(single[i]): x for i, x in enumerate(inputs)}
    grids = build_grids(candidates, int(s.n_grids), int(s.grid), rng)

    rows, examples = [], []
    bar = tqdm(total=len(grids), unit="grid", desc=f"GridPG {cfg.cam_method}", disable=not progress, leave=False)
    for start in range(0, len(grids), int(s.batch_size)):
        chunk = grids[start:start + int(s.batch_size)]
        x = torch.stack([assemble_grid(torch.stack([cell_input[i] for _, i in g]), s.grid) for g in chunk]).to(device)
        maps = raw_grid_maps(explainer, x, [[c for c, _ in g] for g in chunk])
        for j, (g, m) in enumerate(zip(chunk, maps)):
            scores = cell_scores(m, s.grid, s.smooth)
            k = start + j
            for cell, ((c, i), score) in enumerate(zip(g, scores)):
                rows.append((k, cell, cell // s.grid, cell % s.grid, c, CLASS_NAMES[c], names[i], float(score)))
            if len(examples) < s.n_examples:
                examples.append((to_uint8(x[j]), smooth_maps(m.double(), s.smooth).clamp(min=0).cpu().numpy(),
                                 [c for c, _ in g], scores))
        bar.update(len(chunk))
    bar.close()

    table = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    out_dir = gridpg_dir(cfg)
    with atomic_path(out_dir / "gridpg.csv") as tmp:
        table.to_csv(tmp, index=False)
    summary = gridpg_summary(table, s, cfg, explainer, candidates, weights_path, list_file, image_files)
    summary["settings"]["outputs"] = output_kind(head)
    json_path = write_json_atomic(out_dir / "gridpg.json", summary)
    return GridPGResult(json_path, out_dir / "gridpg.csv", summary, examples)


def gridpg_summary(table: pd.DataFrame, s: GridPGSettings, cfg: Config, explainer: Any,
                   candidates: dict[int, list[int]], weights_path: Path, list_file: Path,
                   image_files: Sequence[Path]) -> dict:
    """The ``gridpg.json`` fields: the mean over scored cells and what produced it."""
    scored = table["score"].dropna()
    fixed = getattr(explainer, "input_size", None)
    crop = int(cfg.crop_size)
    return {
        "gridpg": float(scored.mean()) if len(scored) else None,
        "n_grids": int(table["grid"].nunique()),
        "n_cells": int(len(table)),
        "n_skipped": int(table["score"].isna().sum()),
        "per_class": {k: float(v) for k, v in table.groupby("class_name")["score"].mean().dropna().items()},
        "candidates_per_class": {CLASS_NAMES[c]: len(v) for c, v in sorted(candidates.items())},
        "definition": "mean over grid cells of (positive map mass inside the cell of the target class) / "
                      "(positive mass of the whole grid); maps without positive mass skipped",
        "settings": {**asdict(s), "method": cfg.cam_method, "cell_size": crop, "grid_side": s.grid * crop,
                     "explainer_input": list(fixed) if fixed else None, "cell_input": cfg.loss_input,
                     "pred_threshold": float(cfg.pred_threshold), "maps": "raw (before the min-max step), "
                     "upsampled bilinearly to the grid"},
        "provenance": {
            "weights": {"path": str(weights_path), "sha256": sha256_file(weights_path) if weights_path.is_file()
                        else None},
            "list": file_record(list_file), "labels": file_record(cfg.cls_label),
            "images_sha256": sha256_files(image_files),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__, **_timm_version()},
        },
    }


def _timm_version() -> dict:
    try:
        import timm

        return {"timm": timm.__version__}
    except ImportError:  # pragma: no cover - timm is a dependency
        return {}
