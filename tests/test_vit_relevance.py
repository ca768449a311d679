"""The LRP rules of dywsss.explain.vit_relevance: hand-worked cases, conservation, autograd z-rule twins."""
from __future__ import annotations

import pytest
import timm
import torch

from dywsss.explain.vit_relevance import (
    attention_relevances,
    block_relevance,
    check_vit,
    head_relevance,
    lrp_attention,
    lrp_linear_alpha1_beta0,
    lrp_matmul,
    lrp_residual_add,
    record_vit,
    safe_divide,
    token_grid,
    unfused_attention,
)

torch.set_num_threads(1)


def tiny_vit(**kw) -> torch.nn.Module:
    args = dict(pretrained=False, num_classes=20, img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", **{**args, **kw}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def autograd_zrule(fn, inputs: list[torch.Tensor], relevance: torch.Tensor) -> list[torch.Tensor]:
    """Chefer-style z-rule: x * d/dx <fn(x), R / fn(x)>, by autograd (the library uses closed forms)."""
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    z = fn(*xs)
    s = torch.where(z == 0, torch.zeros_like(z), relevance / torch.where(z == 0, torch.ones_like(z), z))
    grads = torch.autograd.grad(z, xs, s)
    return [x.detach() * g for x, g in zip(xs, grads)]


# --------------------------------------------------------------- safe_divide


def test_safe_divide_is_zero_where_denominator_is_zero_and_finite_at_minus_eps():
    num = torch.tensor([1.0, 2.0, 3.0, 4.0])
    den = torch.tensor([2.0, 0.0, -1e-9, -4.0])
    out = safe_divide(num, den)
    assert out[1] == 0 and torch.isfinite(out).all()
    torch.testing.assert_close(out[[0, 3]], torch.tensor([0.5, -1.0]), rtol=1e-6, atol=0)


# -------------------------------------------------------------------- linear


def test_linear_alpha1_beta0_hand_example():
    # x+ = [2, 0], x- = [0, -1]; z_0 = 2*1 + (-1)(-1) = 3, z_1 = (-1)(-3) = 3
    # R_0 = 2 * (1 * 1/3) = 2/3; R_1 = -1 * ((-1) * 1/3 + (-3) * 2/3) = 7/3
    x = torch.tensor([[2.0, -1.0]])
    w = torch.tensor([[1.0, -1.0], [-2.0, -3.0]])
    r = lrp_linear_alpha1_beta0(x, w, torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(r, torch.tensor([[2 / 3, 7 / 3]]))


def test_linear_alpha1_beta0_conserves_and_keeps_sign():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 5, 7, generator=g), torch.randn(4, 7, generator=g)
    r_out = torch.rand(2, 5, 4, generator=g)
    r_in = lrp_linear_alpha1_beta0(x, w, r_out)
    torch.testing.assert_close(r_in.sum(-1), r_out.sum(-1), rtol=1e-5, atol=1e-6)
    assert (r_in >= 0).all()  # positive contributions only: non-negative relevance stays non-negative


def test_linear_alpha1_beta0_drops_relevance_of_outputs_without_positive_contribution():
    x = torch.tensor([[1.0, 2.0]])
    w = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # output 1 has z = 0 (positive inputs, negative weights)
    r = lrp_linear_alpha1_beta0(x, w, torch.tensor([[3.0, 5.0]]))
    torch.testing.assert_close(r, torch.tensor([[1.0, 2.0]]))


def test_linear_alpha1_beta0_equals_autograd_twin():
    g = torch.Generator().manual_seed(2)
    x, w, r = torch.randn(3, 6, generator=g), torch.randn(5, 6, generator=g), torch.randn(3, 5, generator=g)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    rp, rn = autograd_zrule(lambda a, b: a @ wp.T + b @ wn.T, [x.clamp(min=0), x.clamp(max=0)], r)
    torch.testing.assert_close(lrp_linear_alpha1_beta0(x, w, r), rp + rn, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------- residual add


def test_residual_add_hand_example():
    # z = [4, 1]; r_a = [1/4, 2], r_b = [3/4, -1]; S_a = 2.25, S_b = -0.25, total 2
    # R_a = r_a * (2.25/2.5*2)/2.25 = 0.8 r_a; R_b = r_b * (0.25/2.5*2)/(-0.25) = -0.8 r_b
    a, b, r = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]]), torch.tensor([[1.0, 1.0]])
    ra, rb = lrp_residual_add(a, b, r)
    torch.testing.assert_close(ra, torch.tensor([[0.2, 1.6]]))
    torch.testing.assert_close(rb, torch.tensor([[-0.6, 0.8]]))


def test_residual_add_conserves_per_sample_and_ignores_other_samples():
    g = torch.Generator().manual_seed(3)
    a, b, r = (torch.randn(3, 4, 5, generator=g) for _ in range(3))
    ra, rb = lrp_residual_add(a, b, r)
    torch.testing.assert_close((ra + rb).sum((1, 2)), r.sum((1, 2)), rtol=1e-5, atol=1e-5)
    # shares: |sum R_a| : |sum R_b| = |sum r_a| : |sum r_b| of the plain z-rule
    za, zb = autograd_zrule(torch.add, [a, b], r)
    share = za.sum((1, 2)).abs() / (za.sum((1, 2)).abs() + zb.sum((1, 2)).abs())
    torch.testing.assert_close(ra.sum((1, 2)), share * r.sum((1, 2)), rtol=1e-5, atol=1e-5)
    ra1, rb1 = lrp_residual_add(a[1:2], b[1:2], r[1:2])
    torch.testing.assert_close(ra1, ra[1:2])
    torch.testing.assert_close(rb1, rb[1:2])


# ------------------------------------------------------------------ products


def test_matmul_zrule_hand_example_and_each_factor_gets_everything():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0], [4.0]])  # Z = 11
    ra, rb = lrp_matmul(a, b, torch.tensor([[1.0]]))
    torch.testing.assert_close(ra, torch.tensor([[3 / 11, 8 / 11]]))
    torch.testing.assert_close(rb, torch.tensor([[3 / 11], [8 / 11]]))


def test_matmul_zrule_equals_autograd_twin():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 4, 6, generator=g)
    r = torch.randn(2, 3, 5, 6, generator=g)
    ra, rb = lrp_matmul(a, b, r)
    ta, tb = autograd_zrule(torch.matmul, [a, b], r)
    torch.testing.assert_close(ra, ta, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rb, tb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ra.sum((2, 3)), r.sum((2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rb.sum((2, 3)), r.sum((2, 3)), rtol=1e-4, atol=1e-4)


def test_attention_products_halve_each_factor():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=g) for _ in range(3))
    attn = (q @ k.transpose(-1, -2) * 0.5).softmax(-1)
    r = torch.randn(2, 3, 6, 4, generator=g)
    r_q, r_k, r_v, r_a = lrp_attention(q, k, v, attn, r)
    ta, tv = autograd_zrule(torch.matmul, [attn, v], r)
    torch.testing.assert_close(r_a, ta / 2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r_v, tv / 2, rtol=1e-4, atol=1e-5)
    tq, tk = autograd_zrule(lambda x, y: x @ y.transpose(-1, -2), [q, k], r_a)
    torch.testing.assert_close(r_q, tq / 2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r_k, tk / 2, rtol=1e-4, atol=1e-5)
    # A.V conserves: R_A + R_v = R; Q.K^T conserves what A received: R_q + R_k = R_A
    torch.testing.assert_close((r_a.sum((2, 3)) + r_v.sum((2, 3))), r.sum((2, 3)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close((r_q.sum((2, 3)) + r_k.sum((2, 3))), r_a.sum((2, 3)), rtol=1e-4, atol=1e-4)
    none_q, none_k, r_v2, r_a2 = lrp_attention(q, k, v, attn, r, need_qk=False)
    assert none_q is None and none_k is None
    torch.testing.assert_close(r_a2, r_a)


# --------------------------------------------------------- on a timm model


def test_record_vit_captures_softmax_and_cleans_up():
    model = tiny_vit()
    for blk in model.blocks:
        blk.attn.fused_attn = True
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), record_vit(model) as rec:
        assert all(not blk.attn.fused_attn for blk in model.blocks)
        model(x)
    assert all(blk.attn.fused_attn for blk in model.blocks)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    blk, r = model.blocks[0], rec.blocks[0]
    expected = (r.q * blk.attn.scale @ r.k.transpose(-1, -2)).softmax(-1)
    assert r.attn.shape == (2, 2, 17, 17)
    torch.testing.assert_close(r.attn, expected)
    torch.testing.assert_close(r.x + r.y_attn + r.y_mlp, rec.blocks[1].x)  # the records chain up


def test_unfused_attention_restores_on_error():
    model = tiny_vit()
    for blk in model.blocks:
        blk.attn.fused_attn = True
    with pytest.raises(RuntimeError, match="boom"), unfused_attention(model):
        raise RuntimeError("boom")
    assert all(blk.attn.fused_attn for blk in model.blocks)


@pytest.mark.parametrize("kw", [dict(), dict(reg_tokens=2, init_values=0.5, qk_norm=True, depth=3)])
def test_every_block_conserves_relevance(kw):
    """Residual adds, alpha1-beta0 linears and the halved products conserve: sum R_in = sum R_out."""
    model = tiny_vit(**kw)
    classes = torch.tensor([3, 7])
    with torch.no_grad(), record_vit(model) as rec:
        model(torch.randn(2, 3, 32, 32))
    relevance = head_relevance(model, rec, classes, rec.blocks[-1].x.shape[1])
    torch.testing.assert_close(relevance.sum((1, 2)), torch.ones(2), rtol=1e-5, atol=1e-5)
    assert relevance[:, 1:].abs().sum() == 0  # token pooling: the class token gets it all
    for i in reversed(range(len(model.blocks))):
        r_in, r_a = block_relevance(model.blocks[i], rec.blocks[i], relevance)
        assert r_a.shape == (2, model.blocks[i].attn.num_heads, *r_in.shape[1:2] * 2)
        torch.testing.assert_close(r_in.sum((1, 2)), relevance.sum((1, 2)), rtol=1e-4, atol=1e-5)
        relevance = r_in
    r_all = attention_relevances(model, rec, classes)
    assert len(r_all) == len(model.blocks)


def test_check_vit_names_the_problem():
    with pytest.raises(ValueError, match="class token"):
        check_vit(tiny_vit(class_token=False, global_pool="avg"))
    with pytest.raises(ValueError, match="timm VisionTransformer"):
        check_vit(timm.create_model("resnet18", pretrained=False, num_classes=20))
    check_vit(tiny_vit(), lrp=True)


def test_token_grid_comes_from_the_model():
    assert token_grid(tiny_vit(img_size=(32, 48)), (32, 48)) == (4, 6)
    assert token_grid(tiny_vit(img_size=48, patch_size=16), (48, 48)) == (3, 3)
