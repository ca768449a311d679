"""Stage 4 driver: the per-sample CSV from the model's logits and the map files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F

from dywsss.config import session_paths
from dywsss.data.transforms import full_image_transform, val_transform
from dywsss.data.voc import load_image
from dywsss.engine.maps import generate_maps
from dywsss.engine.per_sample import compat_csv_path, compute_per_sample
from dywsss.metrics.per_sample import PER_SAMPLE_COLUMNS, per_image_ji
from test_maps_engine import REPO, make_tiny_voc, tiny_cfg

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_ps")
    info = make_tiny_voc(root)
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=20).eval()
    generate_maps(tiny_cfg(root, session_name="ps"), model=model)
    return root, info, model


def hand_logits(model, root, names, transform):
    imgs = [transform(load_image(root / "VOC2012/JPEGImages" / f"{n}.jpg")) for n in names]
    with torch.no_grad():
        return torch.cat([model(x[None]) for x in imgs])


@pytest.mark.parametrize("loss_input", ["center_crop", "full_image"])
def test_per_sample_csv(setup, loss_input, tmp_path, monkeypatch):
    root, info, model = setup
    monkeypatch.chdir(tmp_path)  # the original's miou_loss_csv/ is relative to the working directory
    cfg = tiny_cfg(root, session_name="ps", loss_input=loss_input, ji_definition="paper")
    out = compute_per_sample(cfg, model=model)
    assert out == session_paths(cfg).eval_dir(cfg.eval_list, cfg.weights) / "per_sample.csv"
    df = pd.read_csv(out, dtype={"label": str, "prediction": str}, keep_default_na=False)
    metric_cols = ["epg", "epg_box", "pg", "ap_mask", "gini", "fg_fraction", "n_objects", "n_classes"]
    base = [c for c in PER_SAMPLE_COLUMNS if not c.startswith("p_")]
    assert list(df.columns) == base + metric_cols + [f"p_{c:02d}" for c in range(20)]
    names = info["names"]
    assert df["name_image"].tolist() == names

    tf = val_transform(32) if loss_input == "center_crop" else full_image_transform(32)
    logits = hand_logits(model, root, names, tf)
    y = torch.zeros(len(names), 20)
    for i, n in enumerate(names):
        y[i, info["labels"][n]] = 1
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)
    np.testing.assert_allclose(df["loss"], loss.numpy(), rtol=1e-5)
    p = torch.sigmoid(logits).numpy()
    np.testing.assert_allclose(df[[f"p_{c:02d}" for c in range(20)]].to_numpy(), p, rtol=1e-5, atol=1e-7)
    assert df["label"].tolist() == [" ".join(map(str, sorted(info["labels"][n]))) for n in names]
    assert df["prediction"].tolist() == [" ".join(map(str, np.flatnonzero(r > 0.5))) for r in p]
    ref, paper = per_image_ji(session_paths(cfg).cam_dir("val.txt", "best.pth"), names, cfg.gt_dir, progress=False)
    np.testing.assert_allclose(df["ji_reference"], ref)
    np.testing.assert_allclose(df["miou"], paper)  # ji_definition=paper

    # the map metrics of the same pass equal the one-pass evaluation of the metrics module
    from dywsss.metrics.map_eval import evaluate_maps

    ev = evaluate_maps(names, session_paths(cfg).cam_dir("val.txt", "best.pth"), cfg.gt_dir,
                       [sorted(info["labels"][n]) for n in names], progress=False)
    for col, values in ev.columns().items():
        np.testing.assert_allclose(pd.to_numeric(df[col], errors="coerce").to_numpy(float), values, equal_nan=True)
    summary = json.loads((out.parent / "map_metrics.json").read_text())
    assert summary["metrics"]["epg"]["mean"] == pytest.approx(np.nanmean(pd.to_numeric(df["epg"], errors="coerce")))

    compat = tmp_path / compat_csv_path(cfg)
    assert compat.name == "miou_loss_ps_best_val.csv"
    pd.testing.assert_frame_equal(pd.read_csv(compat), pd.read_csv(out))


def test_missing_maps_are_reported(setup, tmp_path):
    root, _, model = setup
    with pytest.raises(FileNotFoundError, match="no map files; run the map stage first"):
        compute_per_sample(tiny_cfg(root, session_name="nomaps"), model=model)
    with pytest.raises(ValueError, match="loss_input='crop'"):
        compute_per_sample(tiny_cfg(root, session_name="ps", loss_input="crop"), model=model)


@pytest.mark.slow
def test_original_invocation(setup, tmp_path):
    root, _, model = setup
    torch.save(model.state_dict(), tmp_path / "w.pth")
    cfg = tiny_cfg(root, session_name="ps_cli", weights=str(tmp_path / "w.pth"))
    generate_maps(cfg)
    keys = ("network", "voc12_root", "gt_dir", "cls_label", "eval_list", "work_dir_root", "session_name", "weights",
            "num_workers", "device", "crop_size")
    proc = subprocess.run(
        [sys.executable, str(REPO / "compute_each_image_loss.py"), str(REPO / "config/resnet50.py"), "--options",
         *[f"{k}={cfg[k]}" for k in keys]], cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "per_sample.csv" in proc.stdout and "miou_loss_ps_cli_w_val.csv" in proc.stdout
    assert len(pd.read_csv(tmp_path / "miou_loss_csv/miou_loss_ps_cli_w_val.csv")) == 7


def test_insertion_and_deletion_columns_come_from_the_same_inputs(setup, tmp_path, monkeypatch):
    from dywsss.metrics.faithfulness import image_faithfulness, input_frame_maps

    root, info, model = setup
    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(root, session_name="ps", map_metrics=("epg", "insertion", "deletion"), insdel_steps=4)
    df = pd.read_csv(compute_per_sample(cfg, model=model))
    for col in ("insertion", "insertion_norm", "deletion", "deletion_norm"):
        assert col in df.columns
    # the first image, directly: its val-transform input and its maps put in that input's frame
    name = info["names"][0]
    classes = sorted(info["labels"][name])
    x = val_transform(32)(load_image(root / "VOC2012/JPEGImages" / f"{name}.jpg"))[None]
    maps = [input_frame_maps(session_paths(cfg).cam_dir("val.txt", "best.pth") / f"{name}.npz", classes,
                             "center_crop", 32)]
    direct = image_faithfulness(model, x, maps, [classes], steps=4)
    for col in ("insertion", "deletion"):
        assert df[col].iloc[0] == pytest.approx(float(np.asarray(direct[col])[0]), rel=1e-5)
