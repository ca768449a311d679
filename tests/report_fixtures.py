"""Synthetic finished runs in the formats of docs/DESIGN.md, for the report and table tests.

The summaries are computed here from the synthetic per-sample table with
plain numpy (not with dywsss), so the tests compare the pages against
independently produced numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dywsss.mapfile import save_maps


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> None:
    Image.new("RGB", size, colour).save(path)


def make_data(root: Path, names: list[str], seed: int = 0) -> tuple[Path, Path]:
    """Images and masks: one rectangle of class ``i % 20`` per image. Returns (voc12_root, gt_dir)."""
    rng = np.random.default_rng(seed)
    voc = root / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    gt = voc / "SegmentationClassAug"
    gt.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        h, w = 40 + 4 * (i % 3), 56
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros((h, w), np.uint8)
        mask[8:30, 10:40] = i % 20 + 1
        mask[8, 10:40] = 255
        Image.fromarray(mask, mode="L").save(gt / f"{name}.png")
    return voc, gt


def make_run(
    work: Path, session: str, voc: Path, gt: Path, names: list[str], seed: int = 0, network: str = "resnet18",
    extra_cfg: str = "", params_shape: tuple[int, int] = (20, 8), ji_definition: str = "reference",
) -> Path:
    """A run directory with config.py, model/best.pth, maps, per_sample.csv, JSON summaries and figures."""
    rng = np.random.default_rng(seed)
    root = work / session
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "log").mkdir(exist_ok=True)
    (root / "config.py").write_text(
        f"session_name = {session!r}\nnetwork = {network!r}\npretrained = False\nfinetune = False\n"
        f"voc12_root = {str(voc)!r}\ngt_dir = {str(gt)!r}\nimg_dir = 'JPEGImages'\n"
        f"eval_list = 'val.txt'\nweights = 'best.pth'\neval_thresh = 0.1\nji_definition = {ji_definition!r}\n"
        "crop_size = 32\nmax_epoches = 2\noptimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4)\n"
        "cut_p = 0.0\ncut_s = 0.25\ncam_method = 'cam'\nfignote = 'Synthetic'\n" + extra_cfg
    )
    state = {"fc.weight": torch.zeros(params_shape), "fc.bias": torch.zeros(params_shape[0]),
             "bn.weight": torch.ones(3), "bn.running_mean": torch.zeros(3), "bn.running_var": torch.ones(3),
             "bn.num_batches_tracked": torch.tensor(5)}
    torch.save({"model": state, "epoch": 2}, root / "model" / "best.pth")

    cam_dir = root / "test" / "cam_val_best"
    ev = root / "eval" / "val_best"
    ev.mkdir(parents=True, exist_ok=True)
    n = len(names)
    loss = rng.uniform(0.02, 0.4, n)
    ji = np.clip(0.8 - 1.2 * loss + rng.normal(0, 0.15, n), 0, 1)
    rows = ["name_image,loss,confidence,entropy,label,prediction,miou,ji_reference,ji_paper,"
            + ",".join(f"p_{c:02d}" for c in range(20))]
    for i, name in enumerate(names):
        c = i % 20
        img = np.asarray(Image.open(voc / "JPEGImages" / f"{name}.jpg"))
        cam = rng.uniform(0, 0.3, (1,) + img.shape[:2]).astype(np.float32)
        cam[0, 10:28, 12:38] = ji[i]
        save_maps(cam_dir / f"{name}.npz", np.array([c]), cam)
        probs = np.full(20, 0.01)
        probs[c] = 0.9
        rows.append(f"{name},{float(loss[i])!r},0.9,0.3,{c},{c},{float(ji[i])!r},{float(ji[i])!r},{float(ji[i])!r},"
                    + ",".join(f"{p:.3f}" for p in probs))
    (ev / "per_sample.csv").write_text("\n".join(rows) + "\n")

    t = np.round(np.arange(60) * 0.01, 2)
    miou = 0.3 + 0.2 * np.exp(-((t - 0.2 - 0.05 * seed) ** 2) / 0.02)
    best = int(miou.argmax())
    r = float(np.corrcoef(-loss, ji)[0, 1])
    summaries = {
        "ji_curve.json": dict(thresholds=t.tolist(), miou=miou.tolist(), best_threshold=float(t[best]),
                              best_miou=float(miou[best]), per_class_iou=[[0.5] * 21] * 60),
        "ece.json": dict(ece_ml=float(rng.uniform(0.05, 0.2)), acc_ml=float(rng.uniform(0.6, 0.9)),
                         mAP=float(rng.uniform(0.7, 0.95)), bins=20, n=n, binning="width", pred_threshold=0.5),
        "vice.json": dict(vice=r, n=n, ci_low=r - 0.1, ci_high=min(1.0, r + 0.1), spearman=r - 0.02,
                          p_value=0.001, ji_definition=ji_definition),
    }
    for fname, obj in summaries.items():
        (ev / fname).write_text(json.dumps(obj))
    for fname, colour in (("reliability.png", (200, 30, 30)), ("vice_bins.png", (30, 200, 30)),
                          ("loss_vs_ji.png", (30, 30, 200))):
        _png(ev / fname, colour)
    return root


def make_study_inputs(tmp: Path, n: int, base_extra: str = "") -> tuple[list[str], Path, Path, Path, Path]:
    """A val list of ``n`` synthetic images with one class each, its labels and a model config on
    ``_base_``: (names, voc root, gt dir, labels file, config file)."""
    names = [f"img_{i:03d}" for i in range(n)]
    voc, gt = make_data(tmp / "data", names)
    (tmp / "data" / "val.txt").write_text("".join(f"{name}\n" for name in names))
    labels = tmp / "data" / "cls_labels.json"
    labels.write_text(json.dumps({name: [i % 20] for i, name in enumerate(names)}))
    base = tmp / "base.py"
    repo = Path(__file__).resolve().parents[1]
    base.write_text(f"_base_ = [{str(repo / 'config' / '_base_.py')!r}]\nnetwork = 'resnet18'\npretrained = False\n"
                    f"eval_list = {str(tmp / 'data' / 'val.txt')!r}\nweights = 'best.pth'\n" + base_extra)
    return names, voc, gt, labels, base
