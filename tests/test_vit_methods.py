"""ViT relevance maps against a second, plain implementation on tiny random timm ViTs.

The plain implementation below runs the ViT by hand from the model's parameters
(batch size 1, no hooks), and applies the LRP rules as Chefer's code writes them
(z-rules through autograd of each operation), one class at a time.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from dywsss.explain import EXPLAINERS

torch.set_num_threads(1)
EPS = 1e-9

MODELS = {
    # 4x4 grid, class token only
    "p8_d2": dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2),
    # 4x6 grid, 2 register tokens, LayerScale, qk-norm, 3 blocks
    "p8_d3_reg": dict(img_size=(32, 48), patch_size=8, depth=3, embed_dim=24, num_heads=3, reg_tokens=2,
                      init_values=0.5, qk_norm=True),
    # 3x3 grid, patch 16
    "p16_d1": dict(img_size=48, patch_size=16, depth=1, embed_dim=16, num_heads=4),
}


def make_vit(name: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=20, **MODELS[name])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # biases, norms and head away from their init values
    return model.to(dtype).eval()


def images_for(model: torch.nn.Module, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, 3, *model.patch_embed.img_size, generator=g).to(dtype)


# ----------------------------------------------------------- plain ViT forward


def layer_norm(x: torch.Tensor, ln: torch.nn.Module) -> torch.Tensor:
    if isinstance(ln, torch.nn.Identity):
        return x
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def layer_scale(x: torch.Tensor, ls: torch.nn.Module) -> torch.Tensor:
    return x * ls.gamma if hasattr(ls, "gamma") else x


def plain_forward(model: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """The ViT by hand for one image [1, 3, H, W]: logits and each block's intermediate tensors."""
    pe = model.patch_embed
    t = F.conv2d(image, pe.proj.weight, pe.proj.bias, stride=pe.patch_size).flatten(2).transpose(1, 2)
    prefix = [model.cls_token] + ([model.reg_token] if model.reg_token is not None else [])
    x = torch.cat(prefix + [t], dim=1) + model.pos_embed
    blocks = []
    for blk in model.blocks:
        a = blk.attn
        n, heads, d = x.shape[1], a.num_heads, a.head_dim
        ln1 = layer_norm(x, blk.norm1)
        qkv = F.linear(ln1, a.qkv.weight, a.qkv.bias).reshape(1, n, 3, heads, d)
        q = layer_norm(qkv[:, :, 0].transpose(1, 2), a.q_norm)
        k = layer_norm(qkv[:, :, 1].transpose(1, 2), a.k_norm)
        v = qkv[:, :, 2].transpose(1, 2)
        attn = (q @ k.transpose(-1, -2) * a.scale).softmax(dim=-1)  # Chefer's order: scale after Q.K^T
        if attn.requires_grad:
            attn.retain_grad()
        o = (attn @ v).transpose(1, 2).reshape(1, n, heads * d)
        y1 = layer_scale(F.linear(o, a.proj.weight, a.proj.bias), blk.ls1)
        h = x + y1
        ln2 = layer_norm(h, blk.norm2)
        g = F.gelu(F.linear(ln2, blk.mlp.fc1.weight, blk.mlp.fc1.bias))
        y2 = layer_scale(F.linear(g, blk.mlp.fc2.weight, blk.mlp.fc2.bias), blk.ls2)
        blocks.append(dict(x=x, ln1=ln1, q=q, k=k, v=v, attn=attn, o=o, y1=y1, h=h, ln2=ln2, g=g, y2=y2))
        x = h + y2
    cls = layer_norm(x, model.norm)[:, 0]
    return F.linear(cls, model.head.weight, model.head.bias), blocks, cls


# ------------------------------------------------------ plain LRP (Chefer style)


def chefer_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b == 0, torch.zeros_like(b), a / (b + EPS))


def zrule(fn, inputs, relevance):
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    z = fn(*xs)
    grads = torch.autograd.grad(z, xs, chefer_divide(relevance, z.detach()))
    return [x.detach() * g for x, g in zip(xs, grads)]


def linear_rule(x, weight, relevance):
    wp, wn = weight.detach().clamp(min=0), weight.detach().clamp(max=0)
    rp, rn = zrule(lambda p, n: F.linear(p, wp) + F.linear(n, wn), [x.clamp(min=0), x.clamp(max=0)], relevance)
    return rp + rn


def add_rule(a, b, relevance):
    ra, rb = zrule(torch.add, [a, b], relevance)
    sa, sb = ra.sum(), rb.sum()
    fa = chefer_divide(sa.abs(), sa.abs() + sb.abs()) * relevance.sum()
    fb = chefer_divide(sb.abs(), sa.abs() + sb.abs()) * relevance.sum()
    return ra * chefer_divide(fa, sa), rb * chefer_divide(fb, sb)


def plain_transformer_attribution(model, image, cls_id: int) -> torch.Tensor:
    logits, blocks, cls_feat = plain_forward(model, image)
    grads = torch.autograd.grad(logits[0, cls_id], [b["attn"] for b in blocks])
    one_hot = torch.zeros_like(logits)
    one_hot[0, cls_id] = 1
    r = torch.zeros_like(blocks[-1]["x"])
    r[:, 0] = linear_rule(cls_feat.detach(), model.head.weight, one_hot)
    r_attn = {}
    for i in reversed(range(len(model.blocks))):
        blk, t = model.blocks[i], {k: v.detach() for k, v in blocks[i].items()}
        n, heads, d = t["x"].shape[1], blk.attn.num_heads, blk.attn.head_dim
        r_h, r_y2 = add_rule(t["h"], t["y2"], r)
        r_ln2 = linear_rule(t["ln2"], blk.mlp.fc1.weight, linear_rule(t["g"], blk.mlp.fc2.weight, r_y2))
        r_x, r_y1 = add_rule(t["x"], t["y1"], r_h + r_ln2)
        r_o = linear_rule(t["o"], blk.attn.proj.weight, r_y1).reshape(1, n, heads, d).transpose(1, 2)
        r_a, r_v = (z / 2 for z in zrule(torch.matmul, [t["attn"], t["v"]], r_o))
        r_attn[i] = r_a
        r_q, r_k = (z / 2 for z in zrule(lambda q, k: q @ k.transpose(-1, -2), [t["q"], t["k"]], r_a))
        r_qkv = torch.stack([r_q, r_k, r_v]).permute(1, 3, 0, 2, 4).reshape(1, n, 3 * heads * d)
        r = r_x + linear_rule(t["ln1"], blk.attn.qkv.weight, r_qkv)
    joint = None
    for i, g in enumerate(grads):
        m = (g * r_attn[i]).clamp(min=0).mean(dim=1)[0] + torch.eye(g.shape[-1], dtype=g.dtype)
        joint = m if joint is None else m @ joint
    return joint[0, model.num_prefix_tokens:].reshape(model.patch_embed.grid_size)


def plain_rollout(model, image) -> torch.Tensor:
    with torch.no_grad():
        _, blocks, _ = plain_forward(model, image)
    joint = None
    for b in blocks:
        a = b["attn"][0].mean(dim=0)
        m = 0.5 * a + 0.5 * torch.eye(a.shape[0], dtype=a.dtype)
        joint = m if joint is None else m @ joint
    return joint[0, model.num_prefix_tokens:].reshape(model.patch_embed.grid_size)


def plain_attention_gradcam(model, image, cls_id: int) -> torch.Tensor:
    logits, blocks, _ = plain_forward(model, image)
    attn = blocks[-1]["attn"]
    logits[0, cls_id].backward()
    p = model.num_prefix_tokens
    per_head = [attn[0, h, 0, p:] * attn.grad[0, h, 0, p:].mean() for h in range(attn.shape[1])]
    return torch.stack(per_head).mean(dim=0).clamp(min=0).detach().reshape(model.patch_embed.grid_size)


# ------------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", list(MODELS))
def test_plain_forward_matches_timm(name):
    model = make_vit(name, torch.float64)
    x = images_for(model, 1, torch.float64)
    torch.testing.assert_close(plain_forward(model, x)[0], model(x))


@pytest.mark.parametrize("name", list(MODELS))
def test_transformer_attribution_equals_plain_implementation(name):
    model = make_vit(name, torch.float64)
    x = images_for(model, 2, torch.float64)
    classes = [[0, 5], [13]]
    maps = EXPLAINERS.get("transformer_attribution")(model, None).explain(x, classes)
    for i, cs in enumerate(classes):
        for j, c in enumerate(cs):
            expected = plain_transformer_attribution(model, x[i : i + 1], c)
            assert maps[i][j].shape == expected.shape == tuple(model.patch_embed.grid_size)
            torch.testing.assert_close(maps[i][j], expected, rtol=1e-7, atol=1e-12)
            assert expected.max() > 10 * expected.min() >= 0  # not a flat map: the test can tell maps apart
    assert not torch.allclose(maps[0][0], maps[0][1])  # class dependent


def test_transformer_attribution_float32_close_to_float64():
    model = make_vit("p8_d2")
    x = images_for(model, 1)
    got = EXPLAINERS.get("transformer_attribution")(model, None).explain(x, [[4]])[0][0]
    expected = plain_transformer_attribution(make_vit("p8_d2", torch.float64), x.double(), 4)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5 * float(expected.max()))


@pytest.mark.parametrize("name", ["p8_d2", "p8_d3_reg"])
def test_rollout_equals_hand_computation(name):
    model = make_vit(name, torch.float64)
    x = images_for(model, 2, torch.float64)
    maps = EXPLAINERS.get("rollout")(model, None).explain(x, [[1, 2], [3]])
    for i, k in ((0, 0), (0, 1), (1, 0)):
        torch.testing.assert_close(maps[i][k], plain_rollout(model, x[i : i + 1]))


@pytest.mark.parametrize("name", ["p8_d2", "p8_d3_reg"])
def test_attention_gradcam_equals_hand_computation(name):
    model = make_vit(name, torch.float64)
    x = images_for(model, 2, torch.float64)
    maps = EXPLAINERS.get("attention_gradcam")(model, None).explain(x, [[1, 2], [3]])
    for i, k, c in ((0, 0, 1), (0, 1, 2), (1, 0, 3)):
        torch.testing.assert_close(maps[i][k], plain_attention_gradcam(model, x[i : i + 1], c))


def minmax(m: np.ndarray) -> np.ndarray:
    m = m - m.min()
    return m / (1e-7 + m.max())


@pytest.mark.parametrize("name", ["p8_d2", "p8_d3_reg"])
def test_vit_gradcam_equals_pytorch_grad_cam(name):
    model = make_vit(name)
    x = images_for(model, 2)
    p, (gh, gw) = model.num_prefix_tokens, model.patch_embed.grid_size

    def tokens_to_grid(t: torch.Tensor) -> torch.Tensor:
        return t[:, p:].reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)

    with GradCAM(model=model, target_layers=[model.blocks[-1].norm1], reshape_transform=tokens_to_grid) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(6), ClassifierOutputTarget(9)])
    maps = EXPLAINERS.get("vit_gradcam")(model, None).explain(x, [[6], [9]])
    h, w = x.shape[-2:]
    for i in range(2):
        # pytorch-grad-cam's post-processing: min-max, resize to the input, min-max again
        m = np.float32(minmax(maps[i][0].numpy()))
        np.testing.assert_allclose(minmax(cv2.resize(m, (w, h))), ref[i], atol=1e-4)


@pytest.mark.parametrize("method", ["transformer_attribution", "rollout", "attention_gradcam", "vit_gradcam"])
def test_maps_unchanged_by_batching_and_chunking(method):
    model = make_vit("p8_d3_reg")
    x = images_for(model, 3)
    classes = [[0, 3], [7], [2, 5, 11]]
    explainer = EXPLAINERS.get(method)(model, None)
    assert explainer.batched and explainer.input_size == (32, 48)
    together = explainer.explain(x, classes)
    alone = [explainer.explain(x[i : i + 1], [cs])[0] for i, cs in enumerate(classes)]
    explainer.max_rows = 2
    chunked = explainer.explain(x, classes)
    for t, a, c, cs in zip(together, alone, chunked, classes):
        assert t.shape == (len(cs), 4, 6) and (t >= 0).all()
        torch.testing.assert_close(t, a, rtol=1e-5, atol=1e-6 * float(a.abs().max()))
        torch.testing.assert_close(t, c, rtol=1e-5, atol=1e-6 * float(a.abs().max()))


@pytest.mark.parametrize("method", ["transformer_attribution", "rollout", "attention_gradcam", "vit_gradcam"])
def test_model_left_as_found_and_works_under_inference_mode(method):
    model = make_vit("p8_d2").train()
    for blk in model.blocks:
        blk.attn.fused_attn = True
    model.requires_grad_(False)
    x = images_for(model, 2)
    explainer = EXPLAINERS.get(method)(model, None)
    with torch.inference_mode():
        maps = explainer.explain(x, [[1], []])
    assert maps[0].shape == (1, 4, 4) and maps[1].shape == (0, 4, 4)
    assert model.training and all(blk.attn.fused_attn for blk in model.blocks)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="class token"):
        EXPLAINERS.get("rollout")(timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, num_classes=20, img_size=32, patch_size=8, depth=1,
            class_token=False, global_pool="avg"), None)
    model = make_vit("p8_d2")
    with pytest.raises(ValueError, match="one class list per image"):
        EXPLAINERS.get("transformer_attribution")(model, None).explain(images_for(model, 2), [[1]])
