"""Stage 4: the per-sample CSV (loss, confidence, labels, predictions, per-image JI).

The classifier runs on the original's validation input (``loss_input =
center_crop``: the ``crop_size`` centre crop of the unresized image, zero padded;
``full_image`` resizes the whole image instead); its logits give the loss
(Eq. 7) and the rest of the row (:func:`dywsss.metrics.per_sample.per_sample_table`),
joined with the per-image JI of the map files of stage 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from mmengine.config import Config
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import data_path, session_paths
from ..data.transforms import full_image_transform, val_transform
from ..data.voc import VOCClassification, label_matrix, load_cls_labels, read_image_list
from ..metrics.per_sample import per_image_ji, per_sample_table, write_per_sample_csv
from .dist import env_world
from .runtime import resolve_num_workers, select_device

LOSS_INPUTS = ("center_crop", "full_image")
COMPAT_DIR = "miou_loss_csv"


def prediction_transform(cfg: Config) -> Callable[[np.ndarray], torch.Tensor]:
    """The classifier's input for loss and predictions: ``cfg.loss_input`` at ``cfg.crop_size``."""
    if cfg.loss_input == "center_crop":
        return val_transform(int(cfg.crop_size))
    if cfg.loss_input == "full_image":
        return full_image_transform(int(cfg.crop_size))
    raise ValueError(f"loss_input={cfg.loss_input!r}: expected one of {', '.join(LOSS_INPUTS)}")


@torch.no_grad()
def compute_logits(model: nn.Module, names: Sequence[str], labels: np.ndarray, cfg: Config,
                   device: torch.device) -> np.ndarray:
    """Logits float32 [N, 20] of the listed images on :func:`prediction_transform`, in list order."""
    dataset = VOCClassification(names, cfg.voc12_root, dict(zip(names, labels)), prediction_transform(cfg),
                                img_dir=cfg.img_dir)
    loader = DataLoader(dataset, batch_size=int(cfg.batch_size), shuffle=False,
                        num_workers=resolve_num_workers(cfg.num_workers))
    model.eval()
    out = []
    for batch in tqdm(loader, desc="per-sample logits", unit="batch"):
        out.append(model(batch["img"].to(device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, labels.shape[1]), np.float32)


def compat_csv_path(cfg: Config) -> Path:
    """The original's file: ``miou_loss_csv/miou_loss_<session>_<weights stem>_<list stem>.csv`` (cwd)."""
    return Path(COMPAT_DIR) / f"miou_loss_{cfg.session_name}_{Path(cfg.weights).stem}_{Path(cfg.eval_list).stem}.csv"


def compute_per_sample(cfg: Config, model: nn.Module | None = None) -> Path:
    """Write ``eval/<list>_<weights>/per_sample.csv`` (and the original's copy); return its path.

    The maps are read from ``test/cam_<eval_list stem>_<weights stem>/`` (stage 2
    run with ``infer_list`` = this ``eval_list``). ``model`` (optional) replaces
    loading ``model/<weights>``.
    """
    from .maps import load_model

    if cfg.loss_input not in LOSS_INPUTS:
        raise ValueError(f"loss_input={cfg.loss_input!r}: expected one of {', '.join(LOSS_INPUTS)}")
    paths = session_paths(cfg)
    list_file = data_path(cfg, cfg.eval_list)
    names = read_image_list(list_file)
    labels = label_matrix(names, load_cls_labels(cfg.cls_label, allow_pickle=cfg.allow_pickle), source=cfg.cls_label)
    map_dir = paths.cam_dir(cfg.eval_list, cfg.weights)
    if not map_dir.is_dir():
        raise FileNotFoundError(
            f"{map_dir}: no map files; run the map stage first (gen_mask_for_multi_crop=True "
            f"infer_list={cfg.eval_list} weights={cfg.weights})"
        )
    ji_ref, ji_paper = per_image_ji(map_dir, names, cfg.gt_dir, t=float(cfg.eval_thresh),
                                    allow_pickle=cfg.allow_pickle)
    device = select_device(cfg.get("device", "auto"), env_world()[2])
    model = load_model(cfg, device) if model is None else model.to(device).eval()
    logits = compute_logits(model, names, labels, cfg, device)
    table = per_sample_table(names, logits, labels, ji_ref, ji_paper, cfg.ji_definition, float(cfg.pred_threshold))
    out = write_per_sample_csv(table, paths.eval_dir(cfg.eval_list, cfg.weights) / "per_sample.csv")
    write_per_sample_csv(table, compat_csv_path(cfg))
    return out
