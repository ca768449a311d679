"""Two-process torchrun (gloo, CPU) through the original driver: one set of checkpoints, reduced val loss."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import dywsss.engine.train as train_mod
from dywsss.config import load_config
from dywsss.models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_train_and_write_once(demo_voc: Path, tmp_path: Path) -> None:
    options = {
        "train_multi_scale": "True", "session_name": "ddp", "work_dir_root": str(tmp_path),
        "list_root": str(demo_voc), "voc12_root": str(demo_voc / "VOC2012"),
        "cls_label": str(demo_voc / "cls_labels.json"), "train_list": str(demo_voc / "train_aug.txt"),
        "val_list": str(demo_voc / "val.txt"), "network": "resnet18", "pretrained": "False",
        "batch_size": "4", "max_epoches": "2", "crop_size": "40", "resize_long": "(40,56)", "num_workers": "0",
        "device": "cpu", "optimizer.lr": "0.05", "log_interval": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "run_resnet50.py", "config/resnet50.py", "--options", *[f"{k}={v}" for k, v in options.items()]]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    model_dir = tmp_path / "ddp" / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["best.pth", "epoch_001.pth", "epoch_002.pth", "last.pth"]
    log = (tmp_path / "ddp" / "log" / "train.log").read_text()
    assert log.count("training resnet18 on cpu x2") == 1 and log.count("epoch 2: val loss") == 1
    ckpt = load_checkpoint(model_dir / "last.pth")
    # 24 images on 2 ranks with 4 per rank and step: 3 steps per epoch
    assert (ckpt["world_size"], ckpt["steps_per_epoch"], ckpt["step"], ckpt["epoch"]) == (2, 3, 6, 2)

    # The saved val loss is the mean over the whole val list (both ranks' shards reduced)
    data_keys = ("list_root", "voc12_root", "cls_label", "train_list", "val_list")
    cfg = load_config(ROOT / "config" / "resnet50.py", {k: options[k] for k in data_keys}
                      | {"batch_size": 4, "crop_size": 40, "resize_long": (40, 56), "num_workers": 0})
    model = timm.create_model("resnet18", num_classes=20)
    model.load_state_dict(ckpt["model"])
    _, _, val_loader = train_mod.build_loaders(cfg, train_mod.check_training_data(cfg), 0, 1, False)
    assert len(val_loader.dataset) == 12
    full = train_mod.validation_loss(model, val_loader, torch.device("cpu"), False, False)
    assert full == pytest.approx(ckpt["val_loss"], rel=1e-5)
    best = load_checkpoint(model_dir / "best.pth")
    epochs = [load_checkpoint(model_dir / f"epoch_{e:03d}.pth")["val_loss"] for e in (1, 2)]
    assert best["val_loss"] == min(epochs)
