"""LRP (zennit EpsilonGammaBox on a graph-canonized copy): conservation, canonization, refusals."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from attribution_nets import TinyResidual, tiny_cnn
from dywsss.errors import ConfigError
from dywsss.explain import EXPLAINERS
from dywsss.explain.lrp import canonize

torch.set_num_threads(1)
CLASSES = [[0, 3], [4]]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def logits_of(net: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = net(images)
    return [out[i, cs] for i, cs in enumerate(CLASSES)]


@pytest.mark.parametrize("make", [lambda: tiny_cnn(bias=False), lambda: TinyResidual()], ids=["plain", "residual"])
def test_lrp_conserves_the_logit_without_biases(images, make):
    """Bach et al. 2015: with bias-free layers and a tiny epsilon, the relevances of a row sum to its logit."""
    net = make()
    explainer = EXPLAINERS.get("lrp")(net, None)
    maps = explainer.explain(images, CLASSES)
    for m, logit in zip(maps, logits_of(net, images)):
        torch.testing.assert_close(m.sum(dim=(1, 2)), logit, rtol=1e-4, atol=1e-6)
    meta = explainer.meta()
    assert meta["approximate"] is False and meta["lrp_unruled_ops"] == {}
    assert meta["canonizer"]["residual_sums"] == (1 if isinstance(net, TinyResidual) else 0)


def test_residual_addition_without_the_sum_canonizer_breaks_conservation(images):
    """The same residual net with the gradient passing the addition: relevance is not conserved, so the Sum matters."""
    from zennit.composites import EpsilonGammaBox

    from dywsss.explain._input_space import normalised_pixel_range

    net = TinyResidual()
    low, high = normalised_pixel_range()
    x = images.clone().requires_grad_(True)
    with EpsilonGammaBox(low=low, high=high, epsilon=1e-6, gamma=0.25).context(net) as modified:
        out = modified(x)
        start = torch.zeros_like(out)
        start[0, 0] = out[0, 0].detach()
        (rel,) = torch.autograd.grad(out, x, start)
    rel_sum, logit = float(rel[0].sum()), float(out[0, 0].detach())
    assert abs(rel_sum - logit) > 1e-2 * abs(logit)


def test_batchnorm_is_merged_and_the_function_kept(images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 5))
    bn = net[1]
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    canon = canonize(net, torch.zeros(1, 3, 12, 12))
    assert canon.merged_batchnorms == 1 and not canon.approximate
    with torch.no_grad():
        torch.testing.assert_close(canon.module(images), net(images), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the model itself is untouched


def test_zennit_resnet_canonizer_does_not_match_timm_blocks():
    """Why the graph canonizer exists: zennit's ResNetCanonizer knows torchvision's blocks, not timm's."""
    from zennit.canonizers import AttributeCanonizer
    from zennit.torchvision import ResNetCanonizer

    net = timm.create_model("resnet18", num_classes=5).eval()
    applied = ResNetCanonizer().apply(net)
    try:
        assert not any(isinstance(c, AttributeCanonizer) for c in applied)  # no block got a Sum
    finally:
        for c in applied:
            c.remove()


def test_timm_resnet_canonizes_completely_and_keeps_its_function():
    net = timm.create_model("resnet18", num_classes=5).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.8, 1.2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    explainer = EXPLAINERS.get("lrp")(net, None)
    meta = explainer.meta()
    assert meta["approximate"] is False and meta["first_layer"] == "conv1"
    assert meta["canonizer"]["merged_batchnorms"] == 20 and meta["canonizer"]["residual_sums"] == 8
    with torch.no_grad():
        torch.testing.assert_close(explainer.canonized.module(x), net(x), rtol=1e-4, atol=1e-4)
    maps = explainer.explain(x, [[1], [2, 3]])
    assert [tuple(m.shape) for m in maps] == [(1, 32, 32), (2, 32, 32)] and all(torch.isfinite(m).all() for m in maps)


def test_efficientnet_lite_canonizes_completely():
    """The demo network: BatchNormAct2d (ReLU6) merged into every conv, its skip additions made Sums."""
    meta = EXPLAINERS.get("lrp")(timm.create_model("efficientnet_lite0", num_classes=5).eval(), None).meta()
    assert meta["approximate"] is False and meta["lrp_unruled_ops"] == {}
    assert meta["canonizer"]["merged_batchnorms"] == 49 and meta["canonizer"]["residual_sums"] == 9


def test_gated_blocks_are_flagged_approximate():
    net = timm.create_model("seresnet18", num_classes=5).eval()
    meta = EXPLAINERS.get("lrp")(net, None).meta()
    assert meta["approximate"] is True
    assert {"mul", "sigmoid"} <= set(meta["lrp_unruled_ops"])


def test_lrp_refuses_vits():
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=32, patch_size=8, depth=1)
    with pytest.raises(ConfigError, match="transformer_attribution"):
        EXPLAINERS.get("lrp")(vit, None)
