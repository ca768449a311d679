"""Probe heads, ProbeModel, probe losses and the B-cos explanation (beyond-spec §1.2)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from dywsss.errors import ConfigError
from dywsss.explain import EXPLAINERS
from dywsss.explain.cam import CAM
from dywsss.metrics.probe_losses import get_probe_loss, resolve_off_value
from dywsss.models.spec import ModelSpec, build_from_spec, describe_model
from dywsss.models.probes import (
    BCOS_NORM_EPS,
    BcosConv2d,
    PROBE_HEADS,
    UncenteredBatchNorm2d,
    build_probe_model,
)

torch.set_num_threads(1)


def resnet_probe(head: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_probe_model(timm.create_model("resnet18", num_classes=20), head, 20, **kw)


def randomise_bn(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every head norm a random scale and running variance, so eval mode is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.head.modules():
        if isinstance(m, (UncenteredBatchNorm2d, torch.nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# --------------------------------------------------------------- the model
def test_registered_heads():
    assert set(PROBE_HEADS.names()) >= {"linear", "mlp2", "mlp3", "bcos_mlp2", "bcos_mlp3"}


def test_linear_head_equals_gap_then_linear():
    model = resnet_probe("linear").eval()
    x = torch.randn(3, 3, 64, 64)
    feats = model.forward_features(x)
    conv = model.get_classifier()
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
    w, b = conv.weight.detach().flatten(1).double(), conv.bias.detach().double()
    gap_then_linear = feats.detach().double().mean(dim=(2, 3)) @ w.t() + b
    torch.testing.assert_close(model.forward_head(feats).double(), gap_then_linear, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(x).double(), gap_then_linear, rtol=1e-5, atol=1e-5)


def test_mlp_heads_follow_the_code_layout():
    model = resnet_probe("mlp3", hidden=16)
    kinds = [type(m).__name__ for m in model.head.layers]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert all(m.bias is not None for m in model.head.layers if isinstance(m, torch.nn.Conv2d))
    assert model.head.layers[0].weight.shape[:2] == (16, 512)
    default = resnet_probe("mlp2")  # hidden width = feature width D
    assert default.head.layers[0].weight.shape[:2] == (512, 512) and default.probe_spec()["head_kwargs"] == {"hidden": 512}
    bcos = resnet_probe("bcos_mlp3", hidden=8)
    assert [type(m).__name__ for m in bcos.head.modules()].count("ReLU") == 0
    assert len(bcos.head.convs) == 3 and len(bcos.head.norms) == 2
    assert not any("bias" in n for n, _ in bcos.head.named_parameters())


def test_cam_on_linear_probe_is_eq5():
    model = resnet_probe("linear").eval()
    x = torch.randn(2, 3, 64, 64)
    maps = CAM(model).all_class_maps(x)  # runs CAM's GAP-linear check too
    feats = model.backbone.forward_features(x).detach().numpy()
    w = model.head.fc.weight.detach().numpy()[:, :, 0, 0]
    expected = np.maximum(np.einsum("ck,bkhw->bchw", w, feats), 0)
    np.testing.assert_allclose(maps.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_cam_refuses_mlp_probe():
    model = resnet_probe("mlp2").eval()  # hidden = D: the last conv has the feature width
    with pytest.raises(ValueError, match="global average pooling followed directly"):
        CAM(model).all_class_maps(torch.randn(1, 3, 64, 64))


def test_backbone_frozen_and_always_eval():
    model = resnet_probe("mlp2", hidden=16)
    model.train()
    assert model.head.training and not model.backbone.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    x = torch.randn(4, 3, 64, 64, requires_grad=True)
    model(x).sum().backward()  # gradients still reach the input (attribution methods need them)
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())


def test_vit_backbone_gives_patch_grid():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=20)
    model = build_probe_model(vit, "linear", 20).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    tokens = vit.forward_features(x)
    assert feats.shape == (2, 192, 4, 4)
    torch.testing.assert_close(feats[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2])  # row 1, column 2 of the grid
    assert model(x).shape == (2, 20)


def test_arch_record_rebuilds_the_same_model():
    model = resnet_probe("bcos_mlp2", hidden=8).eval()
    randomise_bn(model)
    for m in model.backbone.modules():  # like the Lite0 package weights: eps not in the state dict
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-3
    arch = json.loads(json.dumps(describe_model(model, dict(network="resnet18", crop_size=64)).to_dict()))
    assert arch["head"] == {"type": "bcos_mlp2", "kwargs": {"hidden": 8}, "num_features": 512, "loss": "bce",
                            "off_value": 0.0}
    assert arch["norm_eps"] == {"*": 1e-3}
    rebuilt = build_from_spec(ModelSpec.from_dict(arch)).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(rebuilt(x), model(x))


def test_unknown_head_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        resnet_probe("foo")
    assert "probe='foo'" in str(err.value) and "\n" not in str(err.value) and "linear" in str(err.value)
    with pytest.raises(ConfigError, match="unknown head argument 'hidden'"):
        resnet_probe("linear", hidden=4)


# ------------------------------------------------------------------ losses
def numpy_losses(logits: np.ndarray, y: np.ndarray, off: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    t = np.maximum(y, off)
    p = 1 / (1 + np.exp(-logits))
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(1)
    logsm = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -((y / y.sum(1, keepdims=True)) * logsm).sum(1)
    return bce, ce


def test_losses_against_formulas():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 20)) * 2
    y = (rng.random((5, 20)) < 0.2).astype(np.float64)
    y[:, 0] = 1
    bce, ce = numpy_losses(z, y)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    np.testing.assert_allclose(get_probe_loss("bce").per_image(zt, yt).numpy(), bce, rtol=1e-10)
    np.testing.assert_allclose(get_probe_loss("ce").per_image(zt, yt).numpy(), ce, rtol=1e-10)
    bce_off, _ = numpy_losses(z, y, off=1 / 20)
    off = resolve_off_value("1/C", 20)
    assert off == 0.05
    np.testing.assert_allclose(get_probe_loss("bce").per_image(zt, yt, off).numpy(), bce_off, rtol=1e-10)
    # hand-worked: two classes present of three, logits (0, 0, ln 2): softmax (1/4, 1/4, 1/2)
    hand = get_probe_loss("ce").per_image(torch.tensor([[0.0, 0.0, np.log(2)]]), torch.tensor([[1.0, 0.0, 1.0]]))
    assert hand.item() == pytest.approx(-(0.5 * np.log(0.25) + 0.5 * np.log(0.5)))


def test_ce_is_shift_invariant_bce_is_not():
    """Eq. 2-3: adding one vector to every class weight of a linear probe leaves CE unchanged."""
    model = resnet_probe("linear").eval()
    feats = torch.rand(6, 512, 2, 2) * 3
    y = torch.zeros(6, 20)
    y[torch.arange(6), torch.arange(6) * 3] = 1
    y[0, 1] = 1
    ce, bce = get_probe_loss("ce"), get_probe_loss("bce")
    with torch.no_grad():
        before = model.forward_head(feats)
        model.head.fc.weight += 0.05 * torch.randn(1, 512, 1, 1)  # the same Δw for every class
        after = model.forward_head(feats)
    shift = (after - before).double()
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift), rtol=0, atol=1e-4)  # δ_i for all classes
    assert shift.abs().min() > 0.05
    torch.testing.assert_close(ce.per_image(after, y), ce.per_image(before, y), rtol=1e-5, atol=1e-5)
    assert (bce.per_image(after, y) - bce.per_image(before, y)).abs().min() > 1e-3


def test_bad_loss_and_off_value():
    with pytest.raises(ConfigError, match="probe_loss='bar'"):
        get_probe_loss("bar")
    for bad in (1.0, -0.1, "half", True):
        with pytest.raises(ConfigError, match="probe_bce_off_value"):
            resolve_off_value(bad, 20)


# ------------------------------------------------------------------- B-cos
@pytest.mark.parametrize("b", [2.0, 3.0])
def test_bcos_layer_against_direct_formula(b):
    """Eq. 6: out_j = |cos(a, w_j)|^(B-1) (ŵ_jᵀ a), ŵ_j the unit-norm row, at every location."""
    torch.manual_seed(0)
    layer = BcosConv2d(7, 5, b=b)
    a = torch.randn(2, 7, 3, 4, dtype=torch.float64)
    out = layer.double()(a).detach().numpy()
    w = layer.weight.detach().double().numpy()[:, :, 0, 0]
    an = a.numpy()
    expected = np.zeros((2, 5, 3, 4))
    for n in range(2):
        for i in range(3):
            for j in range(4):
                vec = an[n, :, i, j]
                norm = np.sqrt(vec @ vec + BCOS_NORM_EPS)
                for k in range(5):
                    unit = w[k] / np.linalg.norm(w[k])
                    cos = unit @ vec / norm
                    expected[n, k, i, j] = abs(cos) ** (b - 1) * (unit @ vec)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    # weight scale is normalised away
    with torch.no_grad():
        layer.weight.mul_(7.0)
    np.testing.assert_allclose(layer(a).detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_uncentered_batchnorm():
    bn = UncenteredBatchNorm2d(3, eps=1e-5, momentum=0.1).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64) + 3.0  # a non-zero mean that must not be removed
    out = bn(x).detach().numpy()
    xn = x.numpy()
    var = xn.transpose(1, 0, 2, 3).reshape(3, -1).var(axis=1)  # biased, over (B, h, w)
    expected = xn / np.sqrt(var + 1e-5)[None, :, None, None] * np.array([1.0, 2.0, 0.5])[None, :, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * var, rtol=1e-12)
    bn.eval()
    np.testing.assert_allclose(bn(x).detach().numpy(),
                               xn / np.sqrt(0.9 + 0.1 * var + 1e-5)[None, :, None, None]
                               * np.array([1.0, 2.0, 0.5])[None, :, None, None], rtol=1e-12)


def numpy_dynamic_weights(head, f: np.ndarray) -> np.ndarray:
    """W(x) at one location, composed layer by layer in float64: [C, D]."""
    a, total = f, np.eye(f.shape[0])
    for i, conv in enumerate(head.convs):
        w = conv.weight.detach().double().numpy()[:, :, 0, 0]
        unit = w / np.linalg.norm(w, axis=1, keepdims=True)
        lin = unit @ a
        scale = np.abs(lin / np.sqrt(a @ a + BCOS_NORM_EPS)) ** (conv.b - 1)
        layer = scale[:, None] * unit
        if i < len(head.norms):
            bn = head.norms[i]
            g = (bn.weight.detach().double() / (bn.running_var.double() + bn.eps).sqrt()).numpy()
            layer = g[:, None] * layer
        total, a = layer @ total, layer @ a
    return total


@pytest.mark.parametrize("head", ["bcos_linear", "bcos_mlp2", "bcos_mlp3"])
def test_bcos_explanation_sums_to_logit(head):
    model = resnet_probe(head, **({} if head == "bcos_linear" else {"hidden": 12})).eval()
    randomise_bn(model)
    x = torch.randn(2, 3, 96, 64)
    classes = [[0, 5, 19], [3]]
    explainer = EXPLAINERS.get("bcos")(model)
    maps = explainer.contributions(x, classes)
    logits = model(x).detach()
    for i, cls in enumerate(classes):
        h, w = maps[i].shape[1:]
        assert (h, w) == (3, 2)
        torch.testing.assert_close(maps[i].sum(dim=(1, 2)) / (h * w), logits[i, cls], rtol=1e-4, atol=1e-5)
    # W(x) itself, against a second composition in numpy at one location
    feats = model.forward_features(x).detach()
    got = model.head.dynamic_weights(feats[1:2], list(range(20)))[4].detach().double().numpy()  # location (2, 0)
    np.testing.assert_allclose(got, numpy_dynamic_weights(model.head, feats[1, :, 2, 0].double().numpy()),
                               rtol=1e-4, atol=1e-7)
    pos = explainer.explain(x, classes)
    assert all(torch.equal(p, m.clamp(min=0)) for p, m in zip(pos, maps))


def test_bcos_explainer_rejects_other_models():
    for model in (resnet_probe("linear"), timm.create_model("resnet18", num_classes=20)):
        with pytest.raises(ConfigError) as err:
            EXPLAINERS.get("bcos")(model)
        assert "cam_method=bcos" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------ the other methods on probes
def test_gradcam_on_linear_probe_is_cam_over_hw():
    """For GAP + linear, d logit_c / d F_k(p) = w_ck / (h w) everywhere, so Grad-CAM = CAM / (h w)."""
    model = resnet_probe("linear").eval()
    x = torch.randn(2, 3, 96, 64)
    classes = [[1, 7], [4]]
    cam = CAM(model).explain(x, classes)
    grad = EXPLAINERS.get("gradcam")(model).explain(x, classes)
    for c, g in zip(cam, grad):
        torch.testing.assert_close(g, c / (3 * 2), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "bcos"])
def test_cnn_methods_run_on_mlp_probes(method):
    """The map stage's path on MLP probes (Score-CAM uses the same forward_features/forward_head
    wrapper as these and is left out: it is minutes on CPU)."""
    from dywsss.engine.maps import explain_batch

    head = "bcos_mlp2" if method == "bcos" else "mlp2"
    model = resnet_probe(head, hidden=32).eval()
    maps = explain_batch(EXPLAINERS.get(method)(model), torch.randn(2, 3, 64, 96), [[0, 3], [5]])
    assert [tuple(m.shape) for m in maps] == [(2, 64, 96), (1, 64, 96)]
    assert all(torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1 and m.max() > 0 for m in maps)
