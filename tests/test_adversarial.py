"""PGD (L2 / Linf, pixel-space epsilon on normalised inputs) and AdvProp's auxiliary BatchNorms."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from dywsss.engine.adversarial import (
    AdvTrainConfig,
    PGDConfig,
    adversarial_loss,
    bn_route,
    convert_advprop,
    multilabel_loss,
    pgd_attack,
    strip_advprop,
)
from dywsss.errors import ConfigError

torch.set_num_threads(1)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tiny_net(act_bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    if act_bn:
        from timm.layers import BatchNormAct2d

        bn = BatchNormAct2d(8)  # a BatchNorm subclass with its activation inside
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), bn, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(8, 20))
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 20))


def batch(n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 3, 12, 12, generator=g)
    x = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    y = (torch.rand(n, 20, generator=g) < 0.15).float()
    return x, y


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_stays_in_the_pixel_ball_and_box_and_raises_the_loss(norm, eps):
    model = tiny_net().eval()
    x, y = batch()
    cfg = PGDConfig(norm=norm, eps=eps, steps=5, random_start=True)
    adv = pgd_attack(model, x, y, cfg, generator=torch.Generator().manual_seed(0))
    d = to_pixels(adv) - to_pixels(x)
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-5
    else:
        assert (d.flatten(1).norm(dim=1) <= eps + 1e-5).all()
    p = to_pixels(adv)
    assert p.min() >= -1e-5 and p.max() <= 1 + 1e-5
    with torch.no_grad():
        assert multilabel_loss(model(adv), y) > multilabel_loss(model(x), y)
    assert all(q.grad is None for q in model.parameters())  # the attack leaves parameter gradients alone


def test_one_linf_step_equals_a_hand_written_sign_gradient_step():
    model = tiny_net().eval()
    x, y = batch()
    eps, alpha = 4 / 255, 3 / 255
    xr = x.clone().requires_grad_(True)
    F.binary_cross_entropy_with_logits(model(xr), y).backward()
    std = torch.tensor(STD).view(1, 3, 1, 1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    # one step in pixel space: sign of the pixel gradient = sign of the normalised-input gradient (std > 0)
    pixel_step = (alpha * xr.grad.sign()).clamp(-eps, eps)
    expected = ((to_pixels(x) + pixel_step).clamp(0, 1) - mean) / std
    got = pgd_attack(model, x, y, PGDConfig("linf", eps, steps=1, step_size=alpha, random_start=False))
    assert torch.allclose(got, expected, atol=1e-6)


def test_one_l2_step_by_hand():
    model = tiny_net().eval()
    x, y = batch(2)
    xr = x.clone().requires_grad_(True)
    F.binary_cross_entropy_with_logits(model(xr), y).backward()
    std = torch.tensor(STD).view(1, 3, 1, 1)
    g_pix = xr.grad / std  # d loss / d pixel = d loss / d x_n * d x_n / d pixel
    step = 10.0 * g_pix / g_pix.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    step = step * torch.clamp(0.3 / step.flatten(1).norm(dim=1), max=1.0).view(-1, 1, 1, 1)  # onto the 0.3 ball
    expected = ((to_pixels(x) + step).clamp(0, 1) - torch.tensor(MEAN).view(1, 3, 1, 1)) / std
    got = pgd_attack(model, x, y, PGDConfig("l2", 0.3, steps=1, step_size=10.0, random_start=False))
    assert torch.allclose(got, expected, atol=1e-5)


def test_attack_in_train_mode_keeps_bn_running_stats():
    model = tiny_net().train()
    before = copy.deepcopy(model.state_dict())
    x, y = batch()
    pgd_attack(model, x, y, PGDConfig("linf", 4 / 255, steps=3))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" in k)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_pgd_config_checks_values():
    with pytest.raises(ConfigError, match="adv_eps"):
        PGDConfig(eps=-1)
    with pytest.raises(ConfigError, match="adv_steps"):
        PGDConfig(steps=0)
    with pytest.raises(ConfigError, match="norm"):
        PGDConfig(norm="l1")
    assert PGDConfig(eps=1.0, steps=4).alpha == pytest.approx(0.625)
    cfg = AdvTrainConfig.from_cfg(dict(adv_train="pgd_linf", adv_eps=0.03, adv_steps=2))
    assert (cfg.pgd.norm, cfg.pgd.eps, cfg.pgd.steps, cfg.advprop) == ("linf", 0.03, 2, False)
    assert not AdvTrainConfig.from_cfg({}).enabled
    with pytest.raises(ConfigError, match="adv_train='pgd'"):
        AdvTrainConfig.from_cfg(dict(adv_train="pgd"))


# ------------------------------------------------------------------ AdvProp
def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}


@pytest.mark.parametrize("act_bn", [False, True])
def test_advprop_routes_batches_to_the_right_batchnorms(act_bn):
    model = convert_advprop(tiny_net(act_bn)).train()
    keys = _bn_stats(model)
    main = [k for k in keys if ".aux_bn." not in k]
    aux = [k for k in keys if ".aux_bn." in k]
    assert len(main) == len(aux) == (1 if act_bn else 2)
    x, _ = batch()
    s0 = _bn_stats(model)
    with bn_route(model, "aux"):
        model(x)
    s1 = _bn_stats(model)
    assert all(torch.equal(s0[k], s1[k]) for k in main) and all(not torch.equal(s0[k], s1[k]) for k in aux)
    model(x + 1.0)  # default route: main
    s2 = _bn_stats(model)
    assert all(not torch.equal(s1[k], s2[k]) for k in main) and all(torch.equal(s1[k], s2[k]) for k in aux)


@pytest.mark.parametrize("act_bn", [False, True])
def test_strip_gives_a_plain_model_equal_to_the_main_path(act_bn):
    model = convert_advprop(tiny_net(act_bn)).train()
    x, _ = batch()
    for _ in range(3):  # make main and aux statistics differ
        with bn_route(model, "aux"):
            model(x * 2 + 1)
        model(x)
    model.eval()
    plain = tiny_net(act_bn).eval()
    state = strip_advprop(model.state_dict())
    assert not [k for k in state if "aux_bn" in k]
    plain.load_state_dict(state, strict=True)
    with torch.no_grad():
        out_main = model(x)
        with bn_route(model, "aux"):
            out_aux = model(x)
        assert torch.allclose(plain(x), out_main, atol=1e-6)
        assert not torch.allclose(out_aux, out_main, atol=1e-4)


def test_advprop_needs_batchnorm_and_converts_once():
    with pytest.raises(ConfigError, match="BatchNorm"):
        convert_advprop(nn.Sequential(nn.Linear(3, 3)))
    model = convert_advprop(tiny_net())
    with pytest.raises(ValueError, match="already"):
        convert_advprop(model)


def test_adversarial_loss_modes_by_hand():
    x, y = batch()
    model = tiny_net().train()
    assert torch.allclose(adversarial_loss(model, x, y, AdvTrainConfig()), multilabel_loss(model(x), y))
    cfg = AdvTrainConfig.from_cfg(dict(adv_train="pgd_l2", adv_eps=0.5, adv_steps=2, adv_clean_loss=True))
    got = adversarial_loss(model, x, y, cfg, generator=torch.Generator().manual_seed(3))
    adv = pgd_attack(model, x, y, cfg.pgd, generator=torch.Generator().manual_seed(3))
    want = 0.5 * (multilabel_loss(model(x), y) + multilabel_loss(model(adv), y))
    assert torch.allclose(got, want, atol=1e-6)

    net = convert_advprop(tiny_net()).eval()  # eval: forwards do not move the statistics between the two runs
    cfg = AdvTrainConfig.from_cfg(dict(adv_train="advprop_linf", adv_eps=4 / 255, adv_steps=1))
    got = adversarial_loss(net, x, y, cfg, generator=torch.Generator().manual_seed(3))
    with bn_route(net, "aux"):
        adv = pgd_attack(net, x, y, cfg.pgd, generator=torch.Generator().manual_seed(3))
        adv_loss = multilabel_loss(net(adv), y)
    assert torch.allclose(got, multilabel_loss(net(x), y) + adv_loss, atol=1e-6)
    got.backward()
    assert next(net[1].aux_bn.parameters()).grad is not None  # the aux BNs are trained


# ------------------------------------------------------------ inside the training stage
def _train_cfg(demo, work, **options):
    from dywsss.config import load_config

    base = dict(list_root=str(demo), voc12_root=str(demo / "VOC2012"), cls_label=str(demo / "cls_labels.json"),
                train_list=str(demo / "train_aug.txt"), val_list=str(demo / "val.txt"), network="resnet18",
                pretrained=False, batch_size=8, max_epoches=1, max_steps_per_epoch=2, crop_size=32,
                resize_long=(32, 40), num_workers=0, device="cpu", deterministic=True, work_dir_root=str(work),
                session_name="adv", adv_eps=0.5, adv_steps=2)
    base.update(options)
    return load_config(Path(__file__).resolve().parents[1] / "config" / "demo.py", base)


def test_advprop_training_saves_aux_bns_and_evaluates_with_the_main_ones(demo_voc, tmp_path):
    from dywsss.engine.train import train
    from dywsss.models.checkpoint import load_checkpoint
    from dywsss.models.spec import load_trained_model

    torch.set_num_threads(1)
    best = train(_train_cfg(demo_voc, tmp_path, adv_train="advprop_l2"))
    ckpt = load_checkpoint(best)
    aux = [k for k in ckpt["model"] if ".aux_bn." in k]
    assert aux and ckpt["adv_train"] == "advprop_l2"
    main = {k: v for k, v in ckpt["model"].items() if ".aux_bn." not in k}
    # the aux statistics moved away from the main ones: adversarial batches went through them
    assert not torch.equal(ckpt["model"]["bn1.aux_bn.running_mean"], main["bn1.running_mean"])
    loaded = load_trained_model(best)
    plain = timm.create_model("resnet18", num_classes=20).eval()
    plain.load_state_dict(main)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), plain(x))


def test_pgd_training_is_a_checked_option(demo_voc, tmp_path):
    from dywsss.engine.train import train
    from dywsss.errors import ConfigError
    from dywsss.report.table import variant_of

    cfg = _train_cfg(demo_voc, tmp_path, adv_train="pgd_linf", adv_eps=4 / 255)
    assert variant_of(cfg) == "from scratch; PGD-Linf eps=0.01568627450980392 x2"
    clean = _train_cfg(demo_voc, tmp_path / "clean")
    a = torch.load(train(cfg), weights_only=True)["model"]
    b = torch.load(train(clean), weights_only=True)["model"]
    assert not torch.equal(a["fc.weight"], b["fc.weight"])  # the adversarial examples changed the updates
    with pytest.raises(ConfigError, match=r"adv_train='pgd'"):
        _train_cfg(demo_voc, tmp_path, adv_train="pgd")
