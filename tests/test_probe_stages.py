"""A probe session as a stage run: the training stage's completeness check, the pipeline's checks, the
recipe label, GridPG's reading of a probe's outputs, and one feature-cache build at a time."""
from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dywsss.errors import ConfigError
from dywsss.stages import decide, study_stages, without_stages

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def test_training_stage_of_a_probe_counts_probe_epochs(tmp_path):
    plan = study_stages(REPO / "config" / "probe_demo.py", "p1",
                        [f"work_dir_root={tmp_path}", "probe=mlp2", "probe_epochs=4", "max_epoches=9"])
    train = {s.name: s for s in plan.stages}["train"]
    assert "train_multi_scale=True" in train.command and "probe=mlp2" in train.command
    model = tmp_path / "p1" / "model"
    model.mkdir(parents=True)
    for name in ("best.pth", "last.pth"):
        torch.save({"model": {}, "epoch": 3}, model / name)
    d = decide(train)
    assert d.action == "resume" and "3 of 4 epochs" in d.reason  # probe_epochs, not max_epoches
    torch.save({"model": {}, "epoch": 4}, model / "last.pth")
    assert decide(train).action == "skip"
    assert "probe mlp2 (bce, adam, 4 epochs) on frozen efficientnet_lite0" in plan.recipe


def test_without_stages_names_unknown_stages(tmp_path):
    plan = study_stages(REPO / "config" / "probe_demo.py", "p2", [f"work_dir_root={tmp_path}"])
    assert "sanity" not in [s.name for s in without_stages(plan.stages, ["sanity"])]
    with pytest.raises(ConfigError, match="--skip: unknown stage.*sanityy"):
        without_stages(plan.stages, ["sanityy"])


def test_pipeline_checks_probe_keys_before_any_work(tmp_path):
    from dywsss.config import load_config
    from dywsss.pipeline import run_pipeline

    cfg = load_config(REPO / "config" / "probe_demo.py", {"work_dir_root": str(tmp_path), "probe": "mlp9",
                                                          "train_multi_scale": True, "gen_mask_for_multi_crop": True,
                                                          "cam_method": "nope"})
    with pytest.raises(ConfigError) as err:
        run_pipeline(cfg)
    msg = str(err.value)
    assert "mlp9" in msg and "nope" in msg and "\n" not in msg  # both problems, one line
    assert not (tmp_path / cfg.session_name).exists()


def test_gridpg_reads_a_ce_probe_with_softmax():
    from dywsss.engine.gridpg import input_probs

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 20)).eval()
    inputs = [torch.randn(3, 2, 2) for _ in range(5)]
    with torch.no_grad():
        z = model(torch.stack(inputs)).double().numpy()
    soft = np.exp(z - z.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    got = input_probs(model, inputs, torch.device("cpu"), batch_size=2, head={"type": "linear", "loss": "ce"})
    np.testing.assert_allclose(got, soft, rtol=1e-5)
    np.testing.assert_allclose(input_probs(model, inputs, torch.device("cpu"), head={"type": "linear", "loss": "bce"}),
                               1 / (1 + np.exp(-z)), rtol=1e-5)
    np.testing.assert_allclose(input_probs(model, inputs, torch.device("cpu")), 1 / (1 + np.exp(-z)), rtol=1e-5)


def test_a_second_cache_builder_waits_and_opens_what_the_first_built(demo_voc, tmp_path):
    import timm

    from dywsss.engine import feature_cache as fc

    model = timm.create_model("resnet18", pretrained=False, num_classes=0, global_pool="").eval()
    root = tmp_path / "cache" / "val"
    root.parent.mkdir()
    lock = os.open(root.parent / ".val.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # another process building this cache
    messages: list[str] = []
    result: dict = {}

    def build() -> None:
        result["cache"] = fc.feature_cache(model, demo_voc / "val.txt", demo_voc / "cls_labels.json",
                                           demo_voc / "VOC2012", root, 32, batch_size=6, progress=False,
                                           log=messages.append)

    worker = threading.Thread(target=build)
    worker.start()
    deadline = time.time() + 30
    while not messages and time.time() < deadline:
        time.sleep(0.05)
    assert messages and "another process is building this cache; waiting" in messages[0]
    assert not (root / "features.npy").exists()  # nothing computed while the lock is held
    fcntl.flock(lock, fcntl.LOCK_UN)
    os.close(lock)
    worker.join(60)
    assert result["cache"].built and len(result["cache"]) == len((demo_voc / "val.txt").read_text().split())
    again = fc.feature_cache(model, demo_voc / "val.txt", demo_voc / "cls_labels.json", demo_voc / "VOC2012", root,
                             32, progress=False)
    assert not again.built and np.array_equal(np.asarray(again.features), np.asarray(result["cache"].features))
