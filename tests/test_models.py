"""Model builder, backbone-checkpoint loading (SSL wrapper styles), lite0 package weights, load_weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from dywsss.errors import ConfigError, InputError
from dywsss.engine.train import multilabel_loss
from dywsss.models import (
    CheckpointMismatchError,
    build_model,
    build_model_from_cfg,
    classifier_param_names,
    is_vit,
    load_backbone_checkpoint,
    load_weights,
    save_checkpoint,
)
from dywsss.models.lite import LITE0_BN_EPS, lite0_package_path, map_lite0_state_dict

PAPER_MODELS = [
    "resnet18", "resnet34", "resnet50", "res2net50_26w_4s", "resnest14d", "resnest26d", "resnest50d",
    pytest.param("resnest101e", marks=pytest.mark.slow), "efficientnet_b4", "vit_small_patch16_224",
    pytest.param("vit_base_patch16_224", marks=pytest.mark.slow), "efficientnet_lite0",
]
TINY_VIT = dict(img_size=32, patch_size=8, depth=2)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.mark.parametrize("network", PAPER_MODELS)
def test_paper_model_step_lowers_loss(network: str) -> None:
    kwargs = dict(img_size=64) if network.startswith("vit") else {}
    model = build_model(network, pretrained=False, num_classes=20, **kwargs)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    y = torch.zeros(2, 20)
    y[0, 3] = y[1, [7, 14]] = 1
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    torch.manual_seed(1)  # same dropout / drop-path masks in both forwards
    logits = model(x)
    assert logits.shape == (2, 20)
    before = multilabel_loss(logits, y)
    opt.zero_grad()
    before.backward()
    opt.step()
    torch.manual_seed(1)
    after = multilabel_loss(model(x), y)
    assert after.item() < before.item()


@pytest.mark.parametrize("network,head", [("resnet18", "fc"), ("efficientnet_lite0", "classifier"),
                                          ("vit_tiny_patch16_224", "head")])
def test_classifier_names_and_is_vit(network: str, head: str) -> None:
    kwargs = TINY_VIT if network.startswith("vit") else {}
    model = build_model(network, num_classes=20, **kwargs)
    assert classifier_param_names(model) == [f"{head}.weight", f"{head}.bias"]
    assert is_vit(model) == network.startswith("vit")
    assert is_vit(nn.parallel.DataParallel(model)) == network.startswith("vit")


def test_unknown_network_names_close_matches() -> None:
    with pytest.raises(ValueError, match=r"resnt50.*not a timm model.*resnet50"):
        build_model("resnt50")


def test_pretrain_key_overrides_pretrained(tmp_path: Path) -> None:
    src = timm.create_model("resnet18", num_classes=1000)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    cfg = dict(network="resnet18", pretrained=False, pretrain=str(tmp_path / "w.pth"), num_classes=20, model_kwargs={})
    model = build_model_from_cfg(cfg)
    assert torch.equal(model.conv1.weight, src.conv1.weight)
    assert model.fc.out_features == 20
    bare = build_model_from_cfg(cfg, load_pretrained=False)
    assert not torch.equal(bare.conv1.weight, src.conv1.weight)


# ------------------------------------------------------- SSL checkpoint styles
def _prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def _backbone(sd: dict, head: str) -> dict:
    return {k: v for k, v in sd.items() if not k.startswith(head + ".")}


def _wrap(style: str, network: str, kwargs: dict) -> tuple[dict, dict]:
    """A fake checkpoint in ``style`` and the backbone tensors it carries (from a random timm model)."""
    torch.manual_seed(123)
    src = timm.create_model(network, num_classes=1000, **kwargs).state_dict()
    head = "head" if network.startswith("vit") else "fc"
    backbone = _backbone(src, head)
    proj = {f"{head}.0.weight": torch.randn(64, 8), f"{head}.0.bias": torch.randn(64)}
    if style == "plain":
        ckpt = dict(src)  # ImageNet 1000-class classifier: shape mismatch, dropped
    elif style == "state_dict":
        ckpt = dict(state_dict=dict(src), epoch=100)
    elif style == "model":
        ckpt = dict(model=dict(src), optimizer={}, epoch=3)
    elif style == "teacher":  # DINO: teacher/student, each backbone. + head. (projection MLP)
        t = {**_prefixed(backbone, "backbone."), "head.mlp.0.weight": torch.randn(32, 8), "head.last_layer.weight_g": torch.ones(1, 1)}
        ckpt = dict(teacher=t, student=_prefixed(t, "module."), epoch=100)
    elif style == "module.":
        ckpt = _prefixed(src, "module.")
    elif style == "backbone.":  # mmselfsup / BYOL exports: backbone. + neck.
        ckpt = dict(state_dict={**_prefixed(backbone, "backbone."), "neck.mlp.0.weight": torch.randn(16, 8)})
    elif style == "base_encoder.":  # MoCo v3: module.base_encoder (classifier replaced by projector), momentum encoder, predictor
        enc = {**backbone, **proj}
        ckpt = dict(epoch=300, arch=network, state_dict={
            **_prefixed(enc, "module.base_encoder."), **_prefixed(enc, "module.momentum_encoder."),
            "module.predictor.0.weight": torch.randn(8, 64)})
    else:
        raise AssertionError(style)
    return ckpt, backbone


@pytest.mark.parametrize("network,kwargs", [("resnet18", {}), ("vit_tiny_patch16_224", TINY_VIT)])
@pytest.mark.parametrize("style", ["plain", "state_dict", "model", "teacher", "module.", "backbone.", "base_encoder."])
def test_ssl_checkpoint_styles_load_backbone(tmp_path: Path, style: str, network: str, kwargs: dict) -> None:
    ckpt, backbone = _wrap(style, network, kwargs)
    path = tmp_path / "ssl.pth"
    torch.save(ckpt, path)
    model = build_model(network, pretrained=False, num_classes=20, **kwargs)
    report = load_backbone_checkpoint(model, path)
    head = classifier_param_names(model)
    assert sorted(report.missing) == sorted(head)
    own = model.state_dict()
    assert set(backbone) == set(own) - set(head)
    for key, value in backbone.items():
        assert torch.equal(own[key], value), key
    assert own[head[0]].shape[0] == 20


def test_vit_checkpoint_at_other_resolution_resamples_pos_embed(tmp_path: Path) -> None:
    src = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=64, patch_size=8, depth=2)
    torch.save(src.state_dict(), tmp_path / "vit64.pth")
    model = build_model("vit_tiny_patch16_224", pretrained=str(tmp_path / "vit64.pth"), num_classes=20, **TINY_VIT)
    assert model.pos_embed.shape == (1, 1 + 16, 192)
    assert torch.equal(model.pos_embed[:, 0], src.pos_embed[:, 0])  # class token position kept
    assert torch.equal(model.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)


def test_missing_backbone_keys_is_a_clear_error(tmp_path: Path) -> None:
    sd = timm.create_model("resnet18", num_classes=20).state_dict()
    del sd["layer4.1.conv2.weight"], sd["layer4.1.bn2.weight"]
    torch.save(dict(state_dict=sd), tmp_path / "broken.pth")
    model = build_model("resnet18", num_classes=20)
    with pytest.raises(CheckpointMismatchError, match=r"broken\.pth.*2 backbone weights missing: layer4\.1\.conv2\.weight"):
        load_backbone_checkpoint(model, tmp_path / "broken.pth")


def test_other_architecture_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    torch.save(timm.create_model("resnet50", num_classes=20).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(CheckpointMismatchError, match=r"r50\.pth: does not fit ResNet.*shape mismatch: layer1\.0\.conv1"):
        build_model("resnet18", pretrained=str(tmp_path / "r50.pth"))
    # resnet34 holds every resnet18 weight: it loads, but its extra blocks are reported
    torch.save(timm.create_model("resnet34", num_classes=20).state_dict(), tmp_path / "r34.pth")
    with pytest.warns(UserWarning, match=r"r34\.pth: 96 checkpoint weights not used by ResNet \(unexpected\): layer1\.2\.conv1"):
        build_model("resnet18", pretrained=str(tmp_path / "r34.pth"))


def test_unreadable_checkpoints_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth: checkpoint file not found"):
        build_model("resnet18", pretrained=str(tmp_path / "nope.pth"))
    (tmp_path / "trunc.pth").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="trunc.pth: cannot read as a weights-only checkpoint"):
        build_model("resnet18", pretrained=str(tmp_path / "trunc.pth"))
    torch.save(dict(state_dict={}, args=Path("x")), tmp_path / "pickled.pth")  # a non-tensor object
    with pytest.raises(ValueError, match="pickled.pth: cannot read as a weights-only"):
        build_model("resnet18", pretrained=str(tmp_path / "pickled.pth"))


# --------------------------------------------------------------- lite0 package
@pytest.fixture(scope="module")
def lite0_source() -> dict:
    return torch.load(lite0_package_path(), map_location="cpu", weights_only=True)


def test_lite0_package_matches_a_manual_positional_load(lite0_source: dict) -> None:
    mapped = build_model("efficientnet_lite0", pretrained="lite0_package", num_classes=1000).eval()
    manual = timm.create_model("efficientnet_lite0", num_classes=1000).eval()
    manual_sd = manual.state_dict()
    # Reference: the package's tensors zipped onto timm's keys by hand, TF BatchNorm eps.
    src_keys = list(lite0_source)
    assert src_keys[0] == "_conv_stem.weight" and src_keys[-1] == "_fc.bias"
    manual.load_state_dict(dict(zip(manual_sd, lite0_source.values())))
    for m in manual.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(mapped(x), manual(x), atol=1e-5)
    assert mapped.bn1.eps == LITE0_BN_EPS
    assert torch.equal(mapped.conv_stem.weight, lite0_source["_conv_stem.weight"])
    assert torch.equal(mapped.classifier.weight, lite0_source["_fc.weight"])
    assert torch.equal(mapped.conv_head.weight, lite0_source["_conv_head.weight"])
    assert torch.equal(mapped.bn2.running_var, lite0_source["_bn1.running_var"])


def _bn_input_correlations(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Per BN layer: correlation of its input's channel means with its running means."""
    corr = []

    def hook(mod: nn.BatchNorm2d, inp: tuple, _out: torch.Tensor) -> None:
        mu = inp[0].mean(dim=(0, 2, 3))
        corr.append(float(np.corrcoef(mu.numpy(), mod.running_mean.numpy())[0, 1]))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return np.array(corr)


def test_lite0_batchnorm_statistics_fit_their_inputs() -> None:
    """Weights land where they belong: BN inputs' channel means follow the running means.

    Control: the same weights with each BN layer's channels permuted (what a
    mis-mapping within a layer would do) show no correlation at all.
    """
    model = build_model("efficientnet_lite0", pretrained="lite0_package", num_classes=20).eval()
    g = torch.Generator().manual_seed(0)
    x = nn.functional.interpolate(torch.randn(8, 3, 14, 14, generator=g), size=128, mode="bilinear")
    corr = _bn_input_correlations(model, x)
    assert len(corr) == 49
    assert np.median(corr) > 0.75 and (corr > 0.5).mean() > 0.6
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            perm = torch.randperm(m.num_features, generator=g)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(m, name).data = getattr(m, name).data[perm].clone()
    control = _bn_input_correlations(model, x)
    assert abs(np.median(control)) < 0.2 and (control > 0.5).mean() < 0.1


def test_lite0_with_20_classes_keeps_backbone_and_fresh_classifier(lite0_source: dict) -> None:
    model = build_model("efficientnet_lite0", pretrained="lite0_package", num_classes=20)
    sd = model.state_dict()
    values = list(lite0_source.values())
    for (key, own), src in zip(sd.items(), values):
        if key.startswith("classifier."):
            assert own.shape[0] == 20
        else:
            assert torch.equal(own, src), key


def test_lite0_mapping_checks_shapes_and_architecture(lite0_source: dict) -> None:
    target = timm.create_model("efficientnet_lite0", num_classes=1000).state_dict()
    shuffled = dict(lite0_source)
    items = list(shuffled.items())
    items[0], items[6] = items[6], items[0]  # stem conv swapped with a depthwise conv
    with pytest.raises(ValueError, match=r"_blocks\.0\._depthwise_conv\.weight \(32, 1, 3, 3\) does not fit conv_stem\.weight"):
        map_lite0_state_dict(dict(items), target)
    with pytest.raises(ValueError, match="fits only network=efficientnet_lite0"):
        build_model("efficientnet_b0", pretrained="lite0_package")


# ---------------------------------------------------------------- load_weights
def test_load_weights_accepts_training_checkpoints_and_plain_dicts(tmp_path: Path) -> None:
    src = timm.create_model("resnet18", num_classes=20)
    save_checkpoint(tmp_path / "ckpt.pth", dict(model=src.state_dict(), epoch=1, step=3, optimizer={}))
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "ddp.pth")
    for name in ("ckpt.pth", "ddp.pth"):
        model = load_weights(timm.create_model("resnet18", num_classes=20), tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
    with pytest.raises(InputError, match=r"ckpt\.pth: weights do not fit ResNet \(shape mismatch: fc\.weight \(20, 512\) vs \(10, 512\)"):
        load_weights(timm.create_model("resnet18", num_classes=10), tmp_path / "ckpt.pth")
    with pytest.raises(InputError, match=r"missing: fc\.weight, fc\.bias"):
        torch.save({k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}, tmp_path / "nofc.pth")
        load_weights(timm.create_model("resnet18", num_classes=20), tmp_path / "nofc.pth")


def test_pretrained_true_without_the_hub_explains_the_offline_options(monkeypatch):
    from dywsss.models.builder import build_model

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to the Hugging Face Hub")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConfigError, match=r"resnet18.*pretrained=True.*couldn't connect.*pretrained=/path/to/checkpoint"):
        build_model("resnet18", pretrained=True)
