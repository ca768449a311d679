import subprocess
import sys
from pathlib import Path

import pytest

from dywsss.config import ConfigKeyError, data_path, load_config, session_paths

ROOT = Path(__file__).resolve().parents[1]


def test_configs_carry_the_original_defaults():
    cfg = load_config(ROOT / "config/resnet50.py")
    assert cfg.network == "resnet50"
    assert cfg.optimizer == dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=5e-4)
    assert cfg.lr_scheduler == dict(type="MultiStepLR", milestones=[10, 15], gamma=0.1)
    assert (cfg.batch_size, cfg.max_epoches, cfg.crop_size, cfg.random_seed) == (16, 20, 224, 2022)
    vit = load_config(ROOT / "config/vision_transformer.py")
    assert vit.network == "vit_small_patch16_224" and vit.cam_method == "transformer_attribution"
    assert vit.warmup_epochs == 5


def test_nested_override_and_types():
    cfg = load_config(
        ROOT / "config/resnet50.py",
        {"optimizer.lr": 0.01, "train_multi_scale": True, "session_name": "s", "lr_scheduler.milestones": [3, 4]},
    )
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.momentum == 0.9
    assert cfg.train_multi_scale is True
    assert cfg.lr_scheduler.milestones == [3, 4]


def test_open_dicts_accept_new_members():
    cfg = load_config(ROOT / "config/resnet50.py", {"optimizer.type": "AdamW", "optimizer.betas": (0.9, 0.99)})
    assert cfg.optimizer.betas == (0.9, 0.99)


@pytest.mark.parametrize(
    "key, suggestion",
    [("optimzer.lr", "optimizer.lr"), ("netwrok", "network"), ("lr_schedular.gamma", "lr_scheduler.gamma")],
)
def test_typo_is_an_error_naming_the_closest_key(key, suggestion):
    with pytest.raises(ConfigKeyError, match=rf"{key}.*no such key.*{suggestion}"):
        load_config(ROOT / "config/resnet50.py", {key: 1})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_config(tmp_path / "nope.py")


def test_command_line_typo_exits_with_message():
    proc = subprocess.run(
        [sys.executable, "run_resnet50.py", "config/resnet50.py", "--options", "optimzer.lr=0.01", "session_name=x"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "optimzer.lr" in proc.stderr and "optimizer.lr" in proc.stderr


def test_bare_list_names_resolve_in_list_root(tmp_path):
    cfg = load_config(ROOT / "config/resnet50.py", {"list_root": str(tmp_path)})
    assert data_path(cfg, "val.txt") == tmp_path / "val.txt"
    assert data_path(cfg, "voc12/val.txt") == Path("voc12/val.txt")


def test_session_layout():
    cfg = load_config(ROOT / "config/resnet50.py", {"session_name": "r50", "work_dir_root": "wd"})
    p = session_paths(cfg)
    assert p.cam_dir("voc12/val.txt", "best.pth") == Path("wd/r50/test/cam_val_best")
    assert p.eval_dir("val.txt", "best.pth") == Path("wd/r50/eval/val_best")
    assert p.weights_file("best.pth") == Path("wd/r50/model/best.pth")
    with pytest.raises(ValueError, match="session_name"):
        session_paths(load_config(ROOT / "config/resnet50.py"))
