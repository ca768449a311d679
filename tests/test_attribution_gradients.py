"""Gradient attributions (gradient, input x gradient, IG, SmoothGrad, guided backprop) against direct statements."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attribution_nets import tiny_cnn
from dywsss.explain import EXPLAINERS
from dywsss.explain.gradients import noise_bank

torch.set_num_threads(1)
CLASSES = [[0, 3], [4]]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 10, 12, generator=torch.Generator().manual_seed(1))


def autograd_input_grad(net: nn.Module, x: torch.Tensor, cls: int) -> torch.Tensor:
    """d logit_cls / d x for one image [3, h, w], by torch.autograd directly."""
    x = x[None].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(x)[0, cls], x)
    return g[0]


def test_gradient_is_max_abs_over_channels(images):
    net = tiny_cnn()
    maps = EXPLAINERS.get("gradient")(net, None).explain(images, CLASSES)
    for x, cs, m in zip(images, CLASSES, maps):
        want = torch.stack([autograd_input_grad(net, x, c).abs().amax(dim=0) for c in cs])
        torch.testing.assert_close(m, want, rtol=1e-5, atol=1e-7)


def test_input_x_gradient_is_signed_channel_sum(images):
    net = tiny_cnn()
    explainer = EXPLAINERS.get("input_x_gradient")(net, None)
    maps = explainer.explain(images, CLASSES)
    assert explainer.signed
    for x, cs, m in zip(images, CLASSES, maps):
        want = torch.stack([(x * autograd_input_grad(net, x, c)).sum(dim=0) for c in cs])
        torch.testing.assert_close(m, want, rtol=1e-5, atol=1e-7)
    assert (torch.cat(maps) < 0).any()  # signed, not clamped


@pytest.mark.parametrize("baseline", ["zero", "black"])
def test_integrated_gradients_completeness(images, baseline):
    """Sundararajan et al. Sec. 3: sum of IG = logit(x) - logit(x'), up to the quadrature error (captum's delta)."""
    net = tiny_cnn(act=nn.Softplus)
    explainer = EXPLAINERS.get("integrated_gradients")(net, dict(ig_baseline=baseline, attr_batch_size=7))
    maps = explainer.explain(images, CLASSES)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    ref = torch.zeros(3, 10, 12) if baseline == "zero" else ((0 - mean) / std).expand(3, 10, 12)
    deltas = explainer.last_delta.abs()
    r = 0
    with torch.no_grad():
        for x, cs, m in zip(images, CLASSES, maps):
            for k, c in enumerate(cs):
                diff = net(x[None])[0, c] - net(ref[None])[0, c]
                assert abs(float(m[k].sum() - diff)) <= float(deltas[r]) + 1e-5
                assert abs(float(m[k].sum() - diff)) <= 1e-3 * max(1.0, abs(float(diff)))
                r += 1


def test_smoothgrad_is_mean_abs_gradient_over_the_seeded_noise_bank(images):
    net = tiny_cnn()
    cfg = dict(smoothgrad_samples=6, smoothgrad_sd=0.2, random_seed=7, attr_batch_size=5)
    maps = EXPLAINERS.get("smoothgrad")(net, cfg).explain(images, CLASSES)
    bank = noise_bank(6, (3, 10, 12), seed=7)
    for x, cs, m in zip(images, CLASSES, maps):
        sigma = 0.2 * (x.max() - x.min())
        want = [torch.stack([autograd_input_grad(net, x + sigma * n, c).abs() for n in bank]).mean(0).amax(0)
                for c in cs]
        torch.testing.assert_close(m, torch.stack(want), rtol=1e-5, atol=1e-7)


def test_smoothgrad_map_does_not_depend_on_batch_neighbours_and_is_seeded(images):
    net = tiny_cnn()
    cfg = dict(smoothgrad_samples=4, random_seed=3)
    both = EXPLAINERS.get("smoothgrad")(net, cfg).explain(images, CLASSES)
    alone = EXPLAINERS.get("smoothgrad")(net, cfg).explain(images[1:], CLASSES[1:])
    torch.testing.assert_close(both[1], alone[0], rtol=1e-5, atol=1e-7)
    again = EXPLAINERS.get("smoothgrad")(net, cfg).explain(images, CLASSES)
    assert all(torch.equal(a, b) for a, b in zip(both, again))
    other = EXPLAINERS.get("smoothgrad")(net, dict(cfg, random_seed=4)).explain(images, CLASSES)
    assert not torch.allclose(both[0], other[0])


class GuidedReLU(torch.autograd.Function):
    """Springenberg et al.: ReLU forward; backward passes grad only where the input and the gradient are positive."""

    @staticmethod
    def forward(ctx, x, upper):
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(min=0, max=upper)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (grad * ((x > 0) & (x < ctx.upper))).clamp(min=0), None


def guided_forward(net: nn.Sequential, x: torch.Tensor, upper: float) -> torch.Tensor:
    """The tiny CNN's forward with its activations replaced by :class:`GuidedReLU`."""
    for layer in net:
        x = GuidedReLU.apply(x, upper) if isinstance(layer, (nn.ReLU, nn.ReLU6)) else layer(x)
    return x


@pytest.mark.parametrize("act, upper", [(nn.ReLU, float("inf")), (nn.ReLU6, 6.0)])
def test_guided_backprop_matches_hand_written_guided_relu(images, act, upper):
    net = tiny_cnn(seed=2, act=act)
    maps = EXPLAINERS.get("guided_backprop")(net, None).explain(images * 4, CLASSES)  # * 4: some ReLU6 saturate
    for x, cs, m in zip(images * 4, CLASSES, maps):
        want = []
        for c in cs:
            xi = x[None].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(guided_forward(net, xi, upper)[0, c], xi)
            want.append(g[0].sum(0))
        torch.testing.assert_close(m, torch.stack(want), rtol=1e-5, atol=1e-7)
    plain = autograd_input_grad(net, images[0] * 4, CLASSES[0][0]).sum(0)
    assert not torch.allclose(maps[0][0], plain)  # the hooks are active: guided != plain gradient


def test_guided_backprop_refuses_a_model_without_relus():
    with pytest.raises(Exception, match="no ReLU-type activation") as err:
        EXPLAINERS.get("guided_backprop")(tiny_cnn(act=nn.GELU), None)
    assert type(err.value).__name__ == "ConfigError" and "\n" not in str(err.value)
