"""Training stage on the tiny demo tree: recipe pieces, checkpoints, finetune, resume, bad input."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import dywsss.engine.train as train_mod
from dywsss.config import load_config
from dywsss.errors import ConfigError
from dywsss.data.transforms import train_transform
from dywsss.engine.train import (
    EpochBatchSampler,
    SeededAugmentation,
    TrainingDivergedError,
    build_optimizer,
    build_scheduler,
    multilabel_loss,
    train,
    warmup_factor,
)
from dywsss.models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def make_cfg(demo: Path, work: Path, **options):
    """config/resnet50.py on the demo tree: resnet18, 40 px crops, batch 8 (3 steps/epoch), CPU."""
    base = dict(
        list_root=str(demo), voc12_root=str(demo / "VOC2012"), cls_label=str(demo / "cls_labels.json"),
        train_list=str(demo / "train_aug.txt"), val_list=str(demo / "val.txt"),
        network="resnet18", pretrained=False, batch_size=8, max_epoches=2, crop_size=40, resize_long=(40, 56),
        num_workers=0, device="cpu", deterministic=True, work_dir_root=str(work), session_name="s",
        log_interval=1, warmup_epochs=0, val_drop_last=False, **{"optimizer.lr": 0.05},
    )
    base.update(options)
    return load_config(ROOT / "config" / "resnet50.py", base)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


# ---------------------------------------------------------------- recipe pieces
def test_loss_is_multilabel_soft_margin() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(5, 20, generator=g) * 3, (torch.rand(5, 20, generator=g) > 0.8).float()
    assert torch.allclose(multilabel_loss(logits, labels), nn.MultiLabelSoftMarginLoss()(logits, labels), atol=1e-6)
    # hand-worked: logits (0, ln 3), labels (1, 0): (ln 2 + ln 4) / 2 = 1.5 ln 2
    assert multilabel_loss(torch.tensor([[0.0, math.log(3)]]), torch.tensor([[1.0, 0.0]])).item() == pytest.approx(1.5 * math.log(2))
    assert multilabel_loss(logits, labels, reduction="none").shape == (5,)


def test_optimizer_and_scheduler_from_config() -> None:
    params = [nn.Parameter(torch.zeros(3))]
    sgd = build_optimizer(params, dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=0))
    assert sgd.param_groups[0]["weight_decay"] == 0 and sgd.param_groups[0]["momentum"] == 0.9
    adamw = build_optimizer(params, dict(type="AdamW", lr=1e-3, betas=(0.8, 0.9), weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.9)
    with pytest.raises(TypeError, match=r"optimizer\.betaz: not an argument of AdamW \(accepted: lr, betas"):
        build_optimizer(params, dict(type="AdamW", lr=1e-3, betaz=(0.9, 0.99)))
    with pytest.raises(TypeError, match=r"optimizer\.betas: not an argument of SGD"):
        build_optimizer(params, dict(type="SGD", lr=0.1, betas=(0.9, 0.99)))
    with pytest.raises(ValueError, match=r"optimizer\.type='Adagrad'"):
        build_optimizer(params, dict(type="Adagrad", lr=0.1))
    sched = build_scheduler(sgd, dict(type="MultiStepLR", milestones=[2, 3], gamma=0.1))
    lrs = []
    for _ in range(4):
        lrs.append(sched.get_last_lr()[0])
        sgd.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001])
    with pytest.raises(TypeError, match=r"lr_scheduler\.milestone: not an argument of MultiStepLR"):
        build_scheduler(sgd, dict(type="MultiStepLR", milestone=[2]))


def test_warmup_is_linear_per_step() -> None:
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_augmentation_depends_only_on_seed_epoch_index() -> None:
    img = (torch.rand(50, 70, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()

    class One(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> torch.Tensor:
            return train_transform(32, (40, 60), cut_p=0.5)(img)

    ds = SeededAugmentation(One(), seed=7)
    before = torch.get_rng_state()
    a, b = ds[(0, 1)], ds[(0, 2)]
    assert torch.equal(torch.get_rng_state(), before)  # global RNG untouched
    torch.manual_seed(123)
    assert torch.equal(ds[(0, 2)], b) and torch.equal(ds[(0, 1)], a)  # order / global state irrelevant
    assert not torch.equal(ds[(1, 1)], a) and not torch.equal(a, b)


def test_epoch_batches_shard_shuffle_and_skip() -> None:
    shards = [EpochBatchSampler(12, 3, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(1)
    got = [[i for batch in s for _, i in batch] for s in shards]
    assert all(e == 1 for s in shards for batch in s for e, _ in batch)
    assert sorted(got[0] + got[1]) == list(range(12))  # a partition of the data
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3 + 1)).tolist()
    assert got[0] == perm[0::2] and got[1] == perm[1::2]  # shards of the seed+epoch permutation
    odd = EpochBatchSampler(10, 2, seed=3, rank=1, world_size=2)
    odd.set_epoch(1)
    assert [i for b in odd for _, i in b] == torch.randperm(10, generator=torch.Generator().manual_seed(4)).tolist()[1::2][:4]
    single = EpochBatchSampler(10, 3, seed=3)
    single.set_epoch(0)
    full = list(single)
    single.set_epoch(0, skip=2)
    assert list(single) == full[2:] and len(single) == 1
    assert EpochBatchSampler(10, 3, seed=3, max_steps=2).steps_per_epoch() == 2
    assert EpochBatchSampler(2, 8, seed=3).steps_per_epoch() == 1  # fewer images than a batch: one short batch


# ------------------------------------------------------------------ full runs
def test_train_writes_checkpoints_logs_and_best(demo_voc: Path, tmp_path: Path) -> None:
    cfg = make_cfg(demo_voc, tmp_path, max_epoches=3, **{"lr_scheduler.milestones": [2]})
    best = train(cfg)
    model_dir = tmp_path / "s" / "model"
    assert best == model_dir / "best.pth"
    assert sorted(p.name for p in model_dir.iterdir()) == ["best.pth", "epoch_001.pth", "epoch_002.pth", "epoch_003.pth", "last.pth"]
    ckpts = [torch.load(model_dir / f"epoch_{e:03d}.pth", weights_only=True) for e in (1, 2, 3)]
    for e, ck in enumerate(ckpts, 1):
        assert set(ck) >= {"model", "optimizer", "scheduler", "scaler", "epoch", "step", "rng", "val_loss", "config"}
        assert ck["epoch"] == e and ck["step"] == 3 * e and ck["epoch_step"] == 0
        assert "network = 'resnet18'" in ck["config"]
    val = [ck["val_loss"] for ck in ckpts]
    assert weights(best)["fc.weight"].equal(ckpts[val.index(min(val))]["model"]["fc.weight"])
    assert weights(model_dir / "last.pth")["fc.weight"].equal(ckpts[2]["model"]["fc.weight"])
    assert ckpts[2]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.005)  # MultiStepLR at epoch 2
    # the reported val loss is the mean loss of the saved weights over the whole val list
    model = timm.create_model("resnet18", num_classes=20)
    model.load_state_dict(ckpts[0]["model"])
    _, _, val_loader = train_mod.build_loaders(cfg, train_mod.check_training_data(cfg), 0, 1, False)
    assert train_mod.validation_loss(model, val_loader, torch.device("cpu"), False, False) == pytest.approx(val[0], rel=1e-5)
    env = json.loads((tmp_path / "s" / "log" / "env.json").read_text())
    assert env["seed"] == 2022 and env["device"] == "cpu" and env["versions"]["torch"] == torch.__version__.split("+")[0]
    assert "val loss" in (tmp_path / "s" / "log" / "train.log").read_text()
    assert list((tmp_path / "s" / "log" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("lr", [0.0, 0.05])
def test_finetune_changes_only_the_classifier(demo_voc: Path, tmp_path: Path, lr: float) -> None:
    src = timm.create_model("resnet18", num_classes=1000)
    torch.save(dict(state_dict=src.state_dict()), tmp_path / "backbone.pth")
    cfg = make_cfg(demo_voc, tmp_path, finetune=True, finetune_bn="frozen", max_epoches=1,
                   pretrained=str(tmp_path / "backbone.pth"), **{"optimizer.lr": lr})
    trained = weights(train(cfg))
    src_sd = src.state_dict()
    backbone = [k for k in src_sd if not k.startswith("fc.")]
    assert sorted(trained) == sorted(src_sd)
    # every backbone tensor is unchanged, BN running statistics included (frozen BN stays in eval mode)
    assert [k for k in backbone if not torch.equal(trained[k], src_sd[k])] == []
    torch.manual_seed(2022)  # the run's seed: the 20-class classifier it started from
    init = timm.create_model("resnet18", num_classes=20)
    assert trained["fc.weight"].shape == (20, 512)
    for key in ("fc.weight", "fc.bias"):  # lr=0 checks that `init` really is the starting point
        assert torch.equal(trained[key], init.state_dict()[key]) == (lr == 0)


def _kill_at_training_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    calls = {"n": 0}
    real = train_mod.multilabel_loss

    def loss(logits, labels, reduction="mean"):
        if reduction == "mean":  # training steps only
            calls["n"] += 1
            if calls["n"] == step:
                raise KeyboardInterrupt(f"killed in step {step}")
        return real(logits, labels, reduction)

    monkeypatch.setattr(train_mod, "multilabel_loss", loss)


@pytest.mark.parametrize("kill_step", [5, 7])
def test_kill_and_resume_reproduces_uninterrupted_weights(demo_voc: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, kill_step: int) -> None:
    # dropout exercises the restored global RNG; cut_p the per-sample augmentation RNG
    opts = dict(max_epoches=3, save_every_steps=2, cut_p=0.5, model_kwargs=dict(drop_rate=0.3),
                **{"lr_scheduler.milestones": [2]})
    full = weights(train(make_cfg(demo_voc, tmp_path / "a", **opts)))
    _kill_at_training_step(monkeypatch, kill_step)
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg(demo_voc, tmp_path / "b", **opts))
    monkeypatch.undo()
    last = load_checkpoint(tmp_path / "b" / "s" / "model" / "last.pth")
    # step 5 dies in epoch 2 after the step-4 checkpoint (mid-epoch); step 7 after epoch 2's end checkpoint
    assert (last["step"], last["epoch"], last["epoch_step"]) == ((4, 1, 1) if kill_step == 5 else (6, 2, 0))
    resumed = weights(train(make_cfg(demo_voc, tmp_path / "b", resume=True, **opts)))
    assert resumed.keys() == full.keys()
    assert all(torch.equal(resumed[k], full[k]) for k in full)
    a = load_checkpoint(tmp_path / "a" / "s" / "model" / "last.pth")
    b = load_checkpoint(tmp_path / "b" / "s" / "model" / "last.pth")
    assert a["val_loss"] == b["val_loss"] and a["step"] == b["step"] == 9
    mom = lambda ck: [s["momentum_buffer"] for s in ck["optimizer"]["state"].values()]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(mom(a), mom(b)))


def test_nan_loss_stops_with_step_and_last_checkpoint(demo_voc: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = train_mod.multilabel_loss, {"n": 0}

    def loss(logits, labels, reduction="mean"):
        out = real(logits, labels, reduction)
        if reduction == "mean":
            calls["n"] += 1
            if calls["n"] == 3:
                return out * float("nan")
        return out

    monkeypatch.setattr(train_mod, "multilabel_loss", loss)
    with pytest.raises(TrainingDivergedError, match=r"loss is nan \(NaN/inf\) at step 3 \(epoch 1, step 3 of 3\); "
                                                    r"last good checkpoint: .*model/last\.pth"):
        train(make_cfg(demo_voc, tmp_path, save_every_steps=2))
    assert load_checkpoint(tmp_path / "s" / "model" / "last.pth")["step"] == 2


def test_out_of_memory_suggests_batch_size(demo_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_mod, "multilabel_loss", oom)
    with pytest.raises(ConfigError, match=r"out of memory with batch_size=8 .*--options batch_size=4"):
        train(make_cfg(demo_voc, tmp_path))


@pytest.mark.parametrize("key,value,match", [
    ("train_list", "missing_train.txt", r"missing_train\.txt: image list not found"),
    ("val_list", "/nonexistent/val.txt", r"/nonexistent/val\.txt: image list not found"),
    ("voc12_root", "/nonexistent/VOC2012", r"/nonexistent/VOC2012: dataset root not found"),
])
def test_bad_data_config_fails_before_training(demo_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               key: str, value: str, match: str) -> None:
    monkeypatch.setattr(train_mod, "build_model_from_cfg", lambda *a, **k: pytest.fail("model built"))
    with pytest.raises(FileNotFoundError, match=match):
        train(make_cfg(demo_voc, tmp_path, **{key: value}))
    assert not (tmp_path / "s").exists()


def test_unknown_optimizer_kwarg_fails_before_training(demo_voc: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optimizer\.nesterow: not an argument of SGD"):
        train(make_cfg(demo_voc, tmp_path, **{"optimizer.nesterow": True}))
    with pytest.raises(ConfigError, match=r"lr_scheduler\.gama: not an argument of MultiStepLR"):
        train(make_cfg(demo_voc, tmp_path, **{"lr_scheduler.gama": 0.5}))
    assert not (tmp_path / "s").exists()


def test_resume_from_missing_path_is_an_error(demo_voc: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"resume=.*nope\.pth': file not found"):
        train(make_cfg(demo_voc, tmp_path, resume=str(tmp_path / "nope.pth")))
