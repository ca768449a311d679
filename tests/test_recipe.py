"""The original code's recipe (issue 10): lr schedule, BN in fine-tuning, val drop_last, ViT map protocol, logs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from dywsss.config import load_config, session_paths
from dywsss.data.voc import read_image_list
from dywsss.engine.maps import generate_maps
from dywsss.engine.train import build_optimizer, build_scheduler, train, validation_names
from dywsss.errors import ConfigError
from dywsss.explain import EXPLAINERS
from dywsss.mapfile import load_maps
from dywsss.models.checkpoint import load_checkpoint, save_checkpoint
from dywsss.models.spec import describe_model
from dywsss.recipe import ORIGINAL, describe_recipe, recipe_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def original_lrs(base: float) -> list[float]:
    """The issue's statement of the original schedule for 20 epochs (GradualWarmupScheduler, 5 epochs,
    around MultiStepLR([10, 15], 0.1)): 0, .2L, .4L, .6L, .8L, then L for epochs 5-15, .1L for 16-19."""
    return [0.0, 0.2 * base, 0.4 * base, 0.6 * base, 0.8 * base] + [base] * 11 + [0.1 * base] * 4


@pytest.mark.parametrize("config", ["config/resnet50.py", "config/vision_transformer.py"])
def test_paper_configs_build_the_original_per_epoch_lr_sequence(config):
    cfg = load_config(ROOT / config)
    assert cfg.max_epoches == 20 and recipe_of(cfg) == "original"
    opt = build_optimizer([nn.Parameter(torch.zeros(1))], cfg.optimizer)
    sched = build_scheduler(opt, cfg.lr_scheduler, cfg.warmup_epochs, cfg.lr_warmup)
    lrs = []
    for _ in range(cfg.max_epoches):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs, original_lrs(cfg.optimizer.lr), rtol=1e-12, atol=0)
    assert lrs[0] == 0.0 and min(lrs[5:]) == pytest.approx(0.1 * cfg.optimizer.lr)  # the x0.01 step never comes


def test_the_training_loop_applies_the_original_schedule_and_logs_each_epoch(demo_voc, tmp_path):
    cfg = load_config(ROOT / "config/resnet50.py", dict(
        list_root=str(demo_voc), voc12_root=str(demo_voc / "VOC2012"), cls_label=str(demo_voc / "cls_labels.json"),
        train_list=str(demo_voc / "train_aug.txt"), val_list=str(demo_voc / "val.txt"), network="resnet18",
        pretrained=False, batch_size=8, max_steps_per_epoch=1, crop_size=32, resize_long=(32, 40), num_workers=0,
        device="cpu", work_dir_root=str(tmp_path), session_name="s", **{"optimizer.lr": 0.01}))
    train(cfg)
    log = pd.read_csv(session_paths(cfg).log_dir / "metrics.csv")
    assert list(log.columns) == ["epoch", "lr", "train_loss", "val_loss", "val_mAP", "seconds"]
    assert log["epoch"].tolist() == list(range(1, 21))
    np.testing.assert_allclose(log["lr"], original_lrs(0.01), rtol=1e-12, atol=0)
    best = load_checkpoint(session_paths(cfg).model_dir / "best.pth")
    assert log["val_loss"].min() == pytest.approx(best["val_loss"]) and best["recipe"] == "original"
    assert log["val_mAP"].between(0, 1).all() and (log["seconds"] > 0).all()
    env = json.loads((session_paths(cfg).log_dir / "env.json").read_text())
    assert env["val_images"] == 8  # 12 val images, batch 8, drop_last: the first 8 decide best.pth


def test_val_drop_last_keeps_the_first_full_batches():
    names = [f"im{i}" for i in range(1449)]
    assert validation_names(names, 16, True) == names[:1440]
    assert validation_names(names, 16, False) == names


@pytest.mark.parametrize("finetune_bn", ["train", "frozen"])
def test_classifier_only_fine_tuning_bn_statistics(demo_voc, tmp_path, finetune_bn):
    src = timm.create_model("resnet18", num_classes=1000)
    torch.save(src.state_dict(), tmp_path / "backbone.pth")
    cfg = load_config(ROOT / "config/resnet50.py", dict(
        list_root=str(demo_voc), voc12_root=str(demo_voc / "VOC2012"), cls_label=str(demo_voc / "cls_labels.json"),
        train_list=str(demo_voc / "train_aug.txt"), val_list=str(demo_voc / "val.txt"), network="resnet18",
        pretrained=str(tmp_path / "backbone.pth"), finetune=True, finetune_bn=finetune_bn, batch_size=8,
        max_epoches=1, warmup_epochs=0, max_steps_per_epoch=2, crop_size=32, resize_long=(32, 40), num_workers=0,
        device="cpu", work_dir_root=str(tmp_path), session_name=finetune_bn, **{"optimizer.lr": 0.05}))
    trained = load_checkpoint(train(cfg))["model"]
    ref = src.state_dict()
    stats = [k for k in ref if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in ref if not k.startswith("fc.") and k not in stats and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(trained[k], ref[k]) for k in weights)  # no gradient reaches the backbone either way
    changed = [k for k in stats if not torch.equal(trained[k], ref[k])]
    if finetune_bn == "train":  # the original: model.train(), so BatchNorm statistics adapt to VOC
        assert len(changed) == len(stats)
    else:
        assert changed == []
    assert recipe_of(cfg) == ("original" if finetune_bn == "train" else "original except finetune_bn=frozen")


# ------------------------------------------------------------------ ViT map protocol
@pytest.fixture(scope="module")
def real_sized(tmp_path_factory):
    """Three photographs-sized images (VOC-like 375x500, 500x333, 281x500) with labels, in the VOC layout."""
    root = tmp_path_factory.mktemp("vit_real")
    rng = np.random.default_rng(0)
    voc = root / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    names, labels = [], {}
    for i, (h, w) in enumerate([(375, 500), (500, 333), (281, 500)]):
        base = rng.integers(0, 255, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
        img = np.kron(base, np.ones((25, 25, 1), np.uint8))[:h, :w]  # blocky, so resizing matters
        Image.fromarray(img).save(voc / "JPEGImages" / f"im{i}.jpg", quality=95)
        names.append(f"im{i}")
        labels[f"im{i}"] = [i, 14]
    (root / "val.txt").write_text("\n".join(names) + "\n")
    (root / "cls_labels.json").write_text(json.dumps(labels))
    model = timm.create_model("vit_tiny_patch16_224", num_classes=20).eval()
    save_checkpoint(root / "vit.pth", dict(model=model.state_dict(), epoch=1, step=1, arch=describe_model(
        model, dict(network="vit_tiny_patch16_224", num_classes=20, crop_size=224)).to_dict()))
    return root, names, labels, model


def _original_protocol(model: nn.Module, path: Path, classes: list[int]) -> np.ndarray:
    """Item 5 stated directly: the original's per-image, per-class steps."""
    transform = transforms.Compose([transforms.Resize(size=(224, 224)), transforms.ToTensor(),
                                    transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    orig = Image.open(path).convert("RGB")
    h, w = np.asarray(orig).shape[:2]
    x = transform(orig)
    explainer = EXPLAINERS.get("transformer_attribution")(model, None)
    out = []
    for c in classes:
        rel = explainer.explain(x[None], [[c]])[0].reshape(1, 1, 14, 14).float()
        rel = F.interpolate(rel, scale_factor=16, mode="bilinear").reshape(224, 224).numpy()
        rel = (rel - rel.min()) / (rel.max() - rel.min())
        out.append(F.interpolate(torch.tensor(rel)[None, None], (h, w), mode="bilinear", align_corners=False)[0, 0].numpy())
    return np.stack(out)


def test_vit_maps_follow_the_original_protocol(real_sized, tmp_path):
    root, names, labels, model = real_sized
    cfg = load_config(ROOT / "config/vision_transformer.py", dict(
        list_root=str(root), voc12_root=str(root / "VOC2012"), cls_label=str(root / "cls_labels.json"),
        infer_list=str(root / "val.txt"), network="vit_tiny_patch16_224", weights=str(root / "vit.pth"),
        work_dir_root=str(tmp_path), session_name="vit", device="cpu", num_workers=0, cam_batch_size=2))
    out = generate_maps(cfg)
    meta = json.loads((out / "maps_meta.json").read_text())
    assert meta["vit_map_protocol"] == "original" and meta["recipe"] == "original"
    for name in names:
        classes, cams = load_maps(out / f"{name}.npz")
        assert classes.tolist() == labels[name]
        ref = _original_protocol(model, root / "VOC2012" / "JPEGImages" / f"{name}.jpg", labels[name])
        assert cams.shape == ref.shape
        assert np.abs(cams - ref).max() <= 2e-3
        for a, b in zip(cams, ref):
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.999
    # the toolkit's protocol differs measurably (that is why the original is the paper default)
    toolkit = generate_maps(load_config(ROOT / "config/vision_transformer.py", dict(
        cfg, session_name="vit_toolkit", vit_map_protocol="toolkit")))
    diff = max(np.abs(load_maps(toolkit / f"{n}.npz")[1] - load_maps(out / f"{n}.npz")[1]).max() for n in names)
    assert diff > 0.02


def test_original_vit_protocol_with_flip_is_refused(real_sized, tmp_path):
    root, *_ = real_sized
    cfg = load_config(ROOT / "config/vision_transformer.py", dict(
        list_root=str(root), voc12_root=str(root / "VOC2012"), cls_label=str(root / "cls_labels.json"),
        infer_list=str(root / "val.txt"), network="vit_tiny_patch16_224", weights=str(root / "vit.pth"),
        work_dir_root=str(tmp_path), session_name="vit", device="cpu", num_workers=0, cam_flip=True))
    with pytest.raises(ConfigError, match=r"vit_map_protocol='original' is one pass without flip: set cam_flip=False"):
        generate_maps(cfg)
    assert not (tmp_path / "vit").exists()


# ------------------------------------------------------------------ where the recipe is shown
def test_run_sh_paper_dry_run_shows_the_original_recipe():
    done = subprocess.run(["bash", "run.sh", "paper", "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "[resnet50_PyTorch_pretrain_lr_0.01] recipe: original (lr_warmup=epoch, amp=False, val_drop_last=True)" \
        in done.stdout
    assert "recipe: original (lr_warmup=epoch, amp=False, val_drop_last=True, vit_map_protocol=original)" in done.stdout


def test_recipe_labels_name_each_deviation():
    cfg = dict(ORIGINAL, network="resnet50", finetune=True)
    assert recipe_of(cfg) == "original"
    assert recipe_of(dict(cfg, amp=True, lr_warmup="step")) == "original except lr_warmup=step, amp=True"
    assert recipe_of(dict(cfg, vit_map_protocol="toolkit")) == "original"  # does not apply to a CNN
    assert recipe_of(dict(cfg, network="vit_small_patch16_224", vit_map_protocol="toolkit")) == \
        "original except vit_map_protocol=toolkit"


def test_probe_recipe_line_has_no_empty_settings():
    """A probe on a CNN has no recipe key that applies (no training key, no ViT map protocol): the line is the
    label alone, never ``maps: original ()``."""
    from dywsss.stages import study_stages

    probe = dict(ORIGINAL, network="efficientnet_lite0", probe="linear", probe_loss="ce", probe_recipe="adam",
                 probe_epochs=10, finetune=False)
    assert describe_recipe(probe) == "probe linear (ce, adam, 10 epochs) on frozen efficientnet_lite0; maps: original"
    vit = dict(probe, network="vit_tiny_patch16_224", vit_map_protocol="toolkit")
    assert describe_recipe(vit) == ("probe linear (ce, adam, 10 epochs) on frozen vit_tiny_patch16_224; maps: original "
                                    "except vit_map_protocol=toolkit (vit_map_protocol=toolkit)")
    assert describe_recipe(dict(ORIGINAL, network="resnet50", finetune=False)) == \
        "original (lr_warmup=epoch, amp=False, val_drop_last=True)"
    plan = study_stages(ROOT / "config" / "probe_demo.py", "p", ["probe=mlp2", "probe_epochs=4"])
    assert plan.recipe == "probe mlp2 (bce, adam, 4 epochs) on frozen efficientnet_lite0; maps: original"


def test_report_settings_show_the_recipe_and_each_option(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from report_fixtures import make_data, make_run

    from dywsss.report.html import build_report
    from dywsss.report.summary import load_run

    names = [f"im{i}" for i in range(6)]
    voc, gt = make_data(tmp_path, names)
    root = make_run(tmp_path / "work", "r", voc, gt, names, network="vit_small_patch16_224",  # the paper's ViT
                    extra_cfg='lr_warmup = "epoch"\namp = True\nval_drop_last = True\nvit_map_protocol = "original"\n')
    with pytest.warns(UserWarning, match="no provenance record"):
        page = build_report(load_run(root), galleries=False)
    assert '<td data-key="recipe">original except amp=True</td>' in page
    for key, value in (("lr_warmup", "epoch"), ("amp", "True"), ("val_drop_last", "True"),
                       ("vit_map_protocol", "original")):
        assert f'<td data-key="cfg.{key}">{value}</td>' in page
