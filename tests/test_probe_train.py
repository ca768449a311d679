"""Probe trainer: schedules, cached vs recomputed features, frozen backbone, resume, config errors, the script."""
from __future__ import annotations

import copy
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from dywsss.config import load_config
from dywsss.data.transforms import train_transform, val_transform
from dywsss.data.datasets import VOCClassification
from dywsss.data.voc import load_cls_labels, read_image_list
from dywsss.engine import probe_train as pt
from dywsss.engine.feature_cache import feature_cache
from dywsss.errors import ConfigError
from dywsss.models.probes import build_probe_model
from dywsss.models.spec import load_trained_model

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:mAP:UserWarning")
ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def demo_options(demo: Path, work: Path, **extra) -> dict:
    opts = dict(list_root=str(demo), voc12_root=str(demo / "VOC2012"), cls_label=str(demo / "cls_labels.json"),
                train_list=str(demo / "train_aug.txt"), val_list=str(demo / "val.txt"), network="resnet18",
                pretrained=False, crop_size=SIZE, num_workers=0, device="cpu", work_dir_root=str(work),
                probe_epochs=2, probe_batch_size=8, session_name="probe_test")
    opts.update(extra)
    return opts


def settings(**keys) -> pt.ProbeSettings:
    return pt.probe_settings(dict(dict(probe="linear", probe_loss="bce", num_classes=20), **keys))


def probe(head: str = "linear", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_probe_model(timm.create_model("resnet18", num_classes=20), head, 20,
                             **({"hidden": 16} if "mlp" in head else {}))


def dataset(demo: Path, list_name: str, transform) -> VOCClassification:
    return VOCClassification(read_image_list(demo / list_name), demo / "VOC2012",
                             load_cls_labels(demo / "cls_labels.json"), transform)


def cached(model, demo: Path, where: Path, list_name: str) -> pt.CachedFeatures:
    return pt.CachedFeatures(feature_cache(model, demo / list_name, demo / "cls_labels.json", demo / "VOC2012",
                                           where / list_name, SIZE, batch_size=8, progress=False, log=lambda m: None))


def live(model, demo: Path, list_name: str, augment: bool = False) -> pt.LiveFeatures:
    tf = train_transform(SIZE, (64, 96)) if augment else val_transform(SIZE)
    return pt.LiveFeatures(model, dataset(demo, list_name, tf), torch.device("cpu"), seed=3)


# ---------------------------------------------------------------- schedules
def test_lr_factor_recipes():
    adam = pt.PROBE_RECIPES.get("adam")  # 5 warm-up epochs from 1e-3 of the lr, then cosine to 0
    f = lambda s: pt.lr_factor(s, 10, 20, adam)  # noqa: E731
    assert f(0) == pytest.approx(1e-3)
    assert f(25) == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)
    assert f(50) == pytest.approx(1.0)
    assert f(125) == pytest.approx(0.5)            # half-way through the 150 cosine steps
    assert f(199) == pytest.approx(0.5 * (1 + np.cos(np.pi * 149 / 150)))
    sgd = pt.PROBE_RECIPES.get("sgd")    # the code: lr 3 x head multiplier 10, 1 warm-up epoch, x0.1 / 6 epochs
    assert sgd.optimizer["lr"] == 30.0 and sgd.optimizer["momentum"] == 0.9 and sgd.optimizer["weight_decay"] == 0
    g = lambda s: pt.lr_factor(s, 10, 50, sgd)  # noqa: E731
    assert g(0) == pytest.approx(1e-7) and g(5) == pytest.approx(1e-7 + (1 - 1e-7) * 0.5)
    assert g(10) == 1.0 and g(59) == 1.0 and g(60) == pytest.approx(0.1) and g(125) == pytest.approx(0.01)


# ------------------------------------------------------- cached == recomputed
def test_cached_and_recomputed_sources_give_the_same_batches(demo_voc, tmp_path):
    model = probe().eval()
    c, l = cached(model, demo_voc, tmp_path, "train_aug.txt"), live(model, demo_voc, "train_aug.txt")
    sampler = pt.EpochBatchSampler(len(c), 8, seed=5)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        got = list(c.batches(sampler))
        want = list(l.batches(sampler))
        assert len(got) == len(want) == 3
        for (fc_, yc), (fl, yl) in zip(got, want):
            assert torch.equal(yc, yl)
            torch.testing.assert_close(fc_, fl, rtol=2 ** -10, atol=1e-6)  # float16 rounding only


@pytest.mark.parametrize("head", ["linear", "mlp2", "bcos_mlp2"])
def test_cached_training_equals_uncached(demo_voc, tmp_path, head):
    """Without augmentation, training on the cache is training on recomputed features rounded to
    float16, bit for bit (same batches, rows, labels, order; head BN statistics included), and
    matches training on recomputed float32 features up to the effect of that rounding."""
    s = settings(probe=head, probe_recipe="sgd", probe_lr=0.05, probe_epochs=2, probe_batch_size=8,
                 probe_warmup_epochs=0.5)
    init = probe(head).eval()
    cpu = torch.device("cpu")
    runs = {}
    for kind in ("cache", "float16", "float32"):
        m = copy.deepcopy(init)
        if kind == "cache":
            train, val = cached(m, demo_voc, tmp_path, "train_aug.txt"), cached(m, demo_voc, tmp_path, "val.txt")
        else:
            train, val = live(m, demo_voc, "train_aug.txt"), live(m, demo_voc, "val.txt")
            if kind == "float16":
                train.feature_dtype = val.feature_dtype = torch.float16
        result = pt.fit_probe(m, train, val, s, cpu, seed=11, progress=False, log=lambda m: None)
        assert result.steps == 6
        runs[kind] = (m.head.state_dict(), result)
    for name, value in runs["cache"][0].items():
        assert torch.equal(value, runs["float16"][0][name]), name
    assert runs["cache"][1].history == [dict(r, epoch_seconds=c["epoch_seconds"]) for r, c in
                                        zip(runs["float16"][1].history, runs["cache"][1].history)]
    # float32 features: SGD keeps weight differences proportional to the feature rounding
    for name, value in runs["cache"][0].items():
        moved = (runs["float32"][0][name] - init.head.state_dict()[name]).abs().max()
        diff = (value - runs["float32"][0][name]).abs().max()
        assert diff <= (1e-2 if head == "linear" else 1e-1) * moved + 1e-7, name
    assert runs["cache"][1].final["val_loss"] == pytest.approx(runs["float32"][1].final["val_loss"], rel=1e-3)


def test_frozen_backbone_unchanged_by_training(demo_voc, tmp_path):
    model = probe("mlp2")
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    s = settings(probe="mlp2", probe_epochs=2, probe_batch_size=8, probe_augment=True)
    pt.fit_probe(model, live(model, demo_voc, "train_aug.txt", augment=True), live(model, demo_voc, "val.txt"), s,
                 torch.device("cpu"), seed=0, progress=False, log=lambda m: None)
    for k, v in model.backbone.state_dict().items():  # weights and BN running statistics
        assert torch.equal(v, backbone[k]), k
    assert any(not torch.equal(v, head[k]) for k, v in model.head.state_dict().items())
    assert not torch.equal(model.head.layers[1].running_mean, head["layers.1.running_mean"])  # the head's BN did train


def test_resume_equals_uninterrupted(demo_voc, tmp_path, monkeypatch):
    s = settings(probe="mlp2", probe_epochs=3, probe_batch_size=8)
    init = probe("mlp2")
    cpu = torch.device("cpu")
    full = copy.deepcopy(init)
    src = lambda m: (cached(m, demo_voc, tmp_path / "cache", "train_aug.txt"),  # noqa: E731
                     cached(m, demo_voc, tmp_path / "cache", "val.txt"))
    pt.fit_probe(full, *src(full), s, cpu, seed=4, out_dir=tmp_path / "full", progress=False, log=lambda m: None)

    real_csv = pt._Writer.csv

    def stop_after_two(self, history):
        real_csv(self, history)
        if len(history) == 2:
            raise KeyboardInterrupt

    part = copy.deepcopy(init)
    monkeypatch.setattr(pt._Writer, "csv", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        pt.fit_probe(part, *src(part), s, cpu, seed=4, out_dir=tmp_path / "part", progress=False, log=lambda m: None)
    monkeypatch.setattr(pt._Writer, "csv", real_csv)
    ckpt = torch.load(tmp_path / "part" / "model" / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 2
    resumed = copy.deepcopy(init)
    result = pt.fit_probe(resumed, *src(resumed), s, cpu, seed=4, out_dir=tmp_path / "part", resume=ckpt,
                          progress=False, log=lambda m: None)
    assert result.epochs == 3
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, full.state_dict()[k]), k
    csv = pd.read_csv(tmp_path / "part" / "log" / "metrics.csv")
    pd.testing.assert_frame_equal(csv.drop(columns="epoch_seconds"),
                                  pd.read_csv(tmp_path / "full" / "log" / "metrics.csv").drop(columns="epoch_seconds"))


# ------------------------------------------------------------- config keys
@pytest.mark.parametrize("key,value,match", [
    ("probe", "foo", "probe='foo'"), ("probe_loss", "bar", "probe_loss='bar'"),
    ("probe_recipe", "rmsprop", "probe_recipe='rmsprop'"), ("probe_epochs", 0, "probe_epochs=0"),
    ("probe_batch_size", 2.5, "probe_batch_size=2.5"), ("probe_lr", -1.0, "probe_lr=-1.0"),
    ("probe_bce_off_value", 1.0, "probe_bce_off_value=1.0"), ("probe_hidden", 8, "probe_hidden=8"),
    ("probe_augment", "yes", "probe_augment='yes'"), ("probe", "", "probe=''"),
])
def test_bad_probe_keys_are_one_line_config_errors(key, value, match):
    with pytest.raises(ConfigError) as err:
        settings(**{key: value})
    assert match in str(err.value) and "\n" not in str(err.value)


def test_settings_defaults_and_overrides():
    s = settings(probe="bcos_mlp3", probe_recipe="sgd", probe_lr=3.0, probe_bce_off_value="1/C")
    assert s.head_kwargs == {"hidden": 0} and s.recipe.optimizer["lr"] == 3.0 and s.off_value == 0.05
    d = settings()
    assert (d.recipe_name, d.recipe.optimizer["lr"], d.epochs, d.augment, d.cache) == ("adam", 1e-3, 50, False, True)


# ----------------------------------------------------------------- the run
def test_train_probe_writes_rebuildable_checkpoints(demo_voc, tmp_path):
    cfg = load_config(ROOT / "config" / "probe_demo.py",
                      demo_options(demo_voc, tmp_path, probe="bcos_mlp2", probe_hidden=16, probe_loss="ce"))
    best = pt.train_probe(cfg)
    session = tmp_path / "probe_test"
    assert best == session / "model" / "best.pth" and best.is_file() and (session / "model" / "last.pth").is_file()
    ckpt = torch.load(best, weights_only=True)
    assert {"model", "epoch", "step", "config", "arch", "probe", "provenance"} <= set(ckpt)
    assert ckpt["arch"]["network"] == "resnet18" and ckpt["arch"]["num_classes"] == 20
    assert ckpt["arch"]["head"] == {"type": "bcos_mlp2", "kwargs": {"hidden": 16}, "num_features": 512, "loss": "ce",
                                    "off_value": 0.0}
    assert ckpt["arch"]["norm_eps"] == {}
    model = load_trained_model(best, cfg).model  # what the map and per-sample stages load
    cache = feature_cache(model, demo_voc / "val.txt", demo_voc / "cls_labels.json", demo_voc / "VOC2012",
                          tmp_path / "check", SIZE, progress=False, log=lambda m: None)
    src = pt.CachedFeatures(cache)
    ev = pt.evaluate_probe(model, src, pt.get_probe_loss("ce"), 0.0, torch.device("cpu"))
    metrics = pd.read_csv(session / "log" / "metrics.csv")
    assert list(metrics.columns) == ["epoch", "step", "lr", "train_loss", "val_loss", "val_mAP", "val_ml_acc",
                                     "epoch_seconds"]
    assert len(metrics) == 2
    best_row = metrics.loc[metrics.val_loss.idxmin()]
    assert int(best_row.epoch) == ckpt["epoch"]
    assert ev["loss"] == pytest.approx(best_row.val_loss, rel=1e-5)  # the rebuilt model is the one validated
    assert ev["mAP"] == pytest.approx(best_row.val_mAP, rel=1e-6)
    # a second probe of the same backbone reuses both caches
    cfg2 = load_config(ROOT / "config" / "probe_demo.py",
                       demo_options(demo_voc, tmp_path, probe="linear", session_name="probe_test2"))
    pt.train_probe(cfg2)
    summary = json.loads((tmp_path / "probe_test2" / "log" / "probe.json").read_text())
    assert [c["built"] for c in summary["caches"].values()] == [False, False]


def test_script_rejects_bad_keys_in_one_line(demo_voc, tmp_path, monkeypatch, capsys):
    script = runpy.run_path(str(ROOT / "scripts" / "train_probe.py"), run_name="train_probe")
    opts = demo_options(demo_voc, tmp_path, probe="foo")
    monkeypatch.setattr(sys, "argv", ["train_probe.py", str(ROOT / "config" / "probe_demo.py"), "--options",
                                      *[f"{k}={v}" for k, v in opts.items()]])
    with pytest.raises(SystemExit) as exit_:
        script["run_main"](script["main"])
    message = capsys.readouterr().err
    assert exit_.value.code == 2 and "probe='foo'" in message and message.count("\n") == 1
    assert not (tmp_path / "probe_test").exists()  # failed before any work
