"""LRP relevance for timm VisionTransformers (Chefer, Gur & Wolf, CVPR 2021), without a ViT copy.

The forward pass is timm's own: forward hooks record what the rules need
(block inputs, branch outputs, the inputs of every linear layer, q, k, v and
the attention probabilities), with timm's fused attention switched off so that
the probabilities exist as a tensor. The relevance rules are then closed-form
tensor expressions on the recorded activations, vectorised over the batch; a
batch row is one (image, class) pair, so several classes of one image are
explained in one pass.

The rules (spec stage 2, as Chefer's code computes them):

- linear layers: LRP alpha=1, beta=0 (:func:`lrp_linear_alpha1_beta0`), bias ignored;
- LayerNorm, GELU, softmax, dropout, LayerScale, DropPath: relevance passes unchanged;
- the residual stream branches: the branches' relevances are summed;
- a residual add: z-rule, then each input's total rescaled to its absolute share
  (:func:`lrp_residual_add`), per sample;
- Q.K^T and A.V: z-rule without rescaling (:func:`lrp_matmul`), each factor's
  relevance halved (:func:`lrp_attention`);
- token pooling (the classifier reads the class token): relevance goes to the
  class token only.

Chefer's code stabilises every division ``a / b`` as ``a / (b + 1e-9)`` and
gives 0 where ``b == 0``; :func:`safe_divide` does the same.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from timm.layers import Attention, Mlp
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..errors import ConfigError

#: The stabiliser of every relevance division (Chefer's ``safe_divide``).
EPS = 1e-9


# ----------------------------------------------------------------- model checks


def check_vit(model: nn.Module, lrp: bool = False) -> None:
    """Raise a ValueError unless ``model`` is a timm ViT these methods can explain.

    All methods need timm ``Block``s with the standard ``Attention`` (its
    probabilities are captured at ``attn_drop``) and a class token read by the
    classifier (``global_pool='token'``); ``lrp=True`` also needs the ``Mlp``
    (fc1, GELU, fc2) with no gated attention, and a linear head.
    """
    name = type(model).__name__
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "patch_embed") or len(blocks) == 0:
        raise ConfigError(f"ViT relevance needs a timm VisionTransformer (blocks, patch_embed); got {name}")
    if not getattr(model, "has_class_token", False) or getattr(model, "global_pool", None) != "token":
        raise ConfigError(
            f"ViT relevance reads the class-token row: {name} needs a class token and "
            f"global_pool='token' (has_class_token={getattr(model, 'has_class_token', None)}, "
            f"global_pool={getattr(model, 'global_pool', None)!r})"
        )
    if getattr(model, "attn_pool", None) is not None:
        raise ConfigError(f"ViT relevance does not support attention pooling heads ({name}.attn_pool)")
    for i, blk in enumerate(blocks):
        if not isinstance(blk, Block) or type(blk.attn) is not Attention:
            raise ConfigError(
                f"ViT relevance needs timm Block with the standard Attention; block {i} of {name} is "
                f"{type(blk).__name__} with {type(getattr(blk, 'attn', None)).__name__}"
            )
        if lrp and (type(blk.mlp) is not Mlp or blk.attn.gate is not None):
            raise ConfigError(
                f"transformer_attribution needs the plain Mlp and ungated attention; block {i} of {name} "
                f"has {type(blk.mlp).__name__}, gate={blk.attn.gate is not None}"
            )
    if lrp and not isinstance(model.get_classifier(), nn.Linear):
        head = type(model.get_classifier()).__name__
        raise ConfigError(f"transformer_attribution needs a linear head; {name} has {head}")


def token_grid(model: nn.Module, image_hw: tuple[int, int]) -> tuple[int, int]:
    """The patch grid (rows, cols) the model makes of an image of size ``image_hw``."""
    pe = model.patch_embed
    if getattr(model, "dynamic_img_size", False) and hasattr(pe, "dynamic_feat_size"):
        return tuple(pe.dynamic_feat_size(image_hw))
    return tuple(pe.grid_size)


# ------------------------------------------------------------ context managers


@contextmanager
def unfused_attention(model: nn.Module) -> Iterator[None]:
    """Switch timm's fused attention off on every block (so the probabilities exist), then restore."""
    saved = [(blk.attn, blk.attn.fused_attn) for blk in model.blocks if hasattr(blk.attn, "fused_attn")]
    try:
        for attn, _ in saved:
            attn.fused_attn = False
        yield
    finally:
        for attn, flag in saved:
            attn.fused_attn = flag


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put the model in eval mode (dropout off: the rules assume it), restore its mode afterwards."""
    was_training = model.training
    try:
        model.eval()
        yield
    finally:
        model.train(was_training)


@dataclass
class BlockRecord:
    """What one block's forward pass leaves for the relevance rules ([rows, tokens, ...])."""

    x: Tensor | None = None  # block input (residual stream)
    ln1: Tensor | None = None  # norm1 output = qkv input
    qkv: Tensor | None = None  # qkv output
    q: Tensor | None = None  # after q_norm, before the scale [rows, heads, tokens, head dim]
    k: Tensor | None = None
    attn: Tensor | None = None  # probabilities after softmax, before attn_drop [rows, heads, N, N]
    proj_in: Tensor | None = None  # A.V with heads merged (after attn.norm)
    y_attn: Tensor | None = None  # attention branch after ls1
    ln2: Tensor | None = None  # norm2 output = fc1 input
    fc2_in: Tensor | None = None
    y_mlp: Tensor | None = None  # MLP branch after ls2


@dataclass
class ViTRecord:
    """Per-block records of one forward pass, plus the classifier input."""

    blocks: list[BlockRecord] = field(default_factory=list)
    head_in: Tensor | None = None


def _keep(rec: BlockRecord, name: str, use_output: bool) -> Callable[..., None]:
    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        setattr(rec, name, output if use_output else inputs[0])

    return hook


@contextmanager
def record_vit(model: nn.Module, attention_only: bool = False) -> Iterator[ViTRecord]:
    """Hooks that record a timm ViT's forward pass; removed on exit; fused attention off meanwhile.

    The recorded tensors are the live graph tensors (``attn`` can be
    differentiated against); ``attention_only`` records just the probabilities.
    """
    record = ViTRecord(blocks=[BlockRecord() for _ in model.blocks])
    with ExitStack() as stack:
        stack.enter_context(unfused_attention(model))
        handles = []
        stack.callback(lambda: [h.remove() for h in handles])
        for blk, rec in zip(model.blocks, record.blocks):
            hooks = [(blk.attn.attn_drop, "attn", False)]
            if not attention_only:
                hooks += [
                    (blk.norm1, "x", False), (blk.norm1, "ln1", True), (blk.attn.qkv, "qkv", True),
                    (blk.attn.q_norm, "q", True), (blk.attn.k_norm, "k", True),
                    (blk.attn.proj, "proj_in", False), (blk.ls1, "y_attn", True),
                    (blk.mlp.fc1, "ln2", False), (blk.mlp.fc2, "fc2_in", False), (blk.ls2, "y_mlp", True),
                ]
            handles += [m.register_forward_hook(_keep(rec, n, out)) for m, n, out in hooks]
        if not attention_only:
            head = model.get_classifier()
            handles.append(head.register_forward_hook(lambda m, i, o: setattr(record, "head_in", i[0])))
        yield record


# ------------------------------------------------------------- relevance rules


def safe_divide(num: Tensor, den: Tensor, eps: float = EPS) -> Tensor:
    """``num / (den + eps)``, and 0 where ``den == 0`` (Chefer's stabilised division)."""
    shifted = den + eps
    shifted.masked_fill_(shifted == 0, eps)  # den == -eps: Chefer's code divides by eps there
    return (num / shifted).masked_fill_(den == 0, 0.0)


def lrp_linear_alpha1_beta0(x: Tensor, weight: Tensor, relevance: Tensor) -> Tensor:
    """LRP alpha=1, beta=0 through ``y = x W^T`` (bias ignored).

    ``z_k = sum_j x+_j w+_kj + x-_j w-_kj`` (the positive contributions) and
    ``R_j = x+_j sum_k w+_kj R_k / z_k + x-_j sum_k w-_kj R_k / z_k``.
    Conserves relevance: ``sum_j R_j = sum_{k: z_k != 0} R_k``.
    x [..., in], weight [out, in], relevance [..., out] -> [..., in].
    """
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    s = safe_divide(relevance, xp @ wp.T + xn @ wn.T)
    return xp * (s @ wp) + xn * (s @ wn)


def lrp_residual_add(a: Tensor, b: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
    """Relevance of the two inputs of ``a + b``: z-rule, then each rescaled to its absolute share.

    ``r_a = a R / (a + b)``, likewise ``r_b``; with per-sample totals ``S_a = sum r_a``,
    ``S_b = sum r_b`` (all dims but the first), ``R_a = r_a |S_a| / (|S_a| + |S_b|) * sum R / S_a``,
    so ``sum R_a + sum R_b = sum R`` per sample.
    """
    s = safe_divide(relevance, a + b)
    ra, rb = a * s, b * s
    dims = tuple(range(1, a.ndim))
    sum_a, sum_b = ra.sum(dims, keepdim=True), rb.sum(dims, keepdim=True)
    total = relevance.sum(dims, keepdim=True)
    norm = sum_a.abs() + sum_b.abs()
    share_a = safe_divide(sum_a.abs(), norm) * total
    share_b = safe_divide(sum_b.abs(), norm) * total
    return ra * safe_divide(share_a, sum_a), rb * safe_divide(share_b, sum_b)


def lrp_matmul(a: Tensor, b: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
    """z-rule through a product of two inputs ``Z = a @ b`` (batched), without rescaling.

    ``R_a[i,j] = a_ij sum_k b_jk R_ik / Z_ik`` and ``R_b[j,k] = b_jk sum_i a_ij R_ik / Z_ik``;
    each sums to ``sum_{Z != 0} R`` on its own (so halving each conserves the total).
    """
    s = safe_divide(relevance, a @ b)
    return a * (s @ b.transpose(-1, -2)), b * (a.transpose(-1, -2) @ s)


def lrp_attention(
    q: Tensor, k: Tensor, v: Tensor, attn: Tensor, relevance: Tensor, need_qk: bool = True
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
    """Relevance through ``softmax(q k^T * scale) @ v``: each product's factors get half.

    q, k, v [rows, heads, N, d], attn [rows, heads, N, N], relevance of A.V [rows, heads, N, d].
    Returns (R_q, R_k, R_v, R_A); R_A is the attention relevance as it leaves A.V
    (what transformer attribution keeps). The scale and the softmax pass relevance
    unchanged; the z-rule on ``q k^T`` does not depend on where the scale sits.
    ``need_qk=False`` skips Q.K^T (the first block needs only R_A) and returns None there.
    """
    r_attn, r_v = lrp_matmul(attn, v, relevance)
    r_attn, r_v = r_attn / 2, r_v / 2
    if not need_qk:
        return None, None, r_v, r_attn
    r_q, r_kt = lrp_matmul(q, k.transpose(-1, -2), r_attn)
    return r_q / 2, r_kt.transpose(-1, -2) / 2, r_v, r_attn


def block_relevance(
    blk: Block, rec: BlockRecord, relevance: Tensor, need_input: bool = True
) -> tuple[Tensor | None, Tensor]:
    """Propagate the relevance of a block's output to its input; also return R_A of its attention.

    Follows ``h = x + ls1(attn(norm1(x)))``, ``out = h + ls2(mlp(norm2(h)))``
    backwards. ``need_input=False`` stops after R_A (the first block).
    Returns (relevance of the block input or None, R_A [rows, heads, N, N]).
    """
    f = upcast  # relevance in float32 or better, whatever the forward precision
    x, y_attn, y_mlp = f(rec.x), f(rec.y_attn), f(rec.y_mlp)
    r_h, r_mlp = lrp_residual_add(x + y_attn, y_mlp, relevance)
    r_mlp = lrp_linear_alpha1_beta0(f(rec.fc2_in), f(blk.mlp.fc2.weight), r_mlp)
    r_h = r_h + lrp_linear_alpha1_beta0(f(rec.ln2), f(blk.mlp.fc1.weight), r_mlp)
    r_x, r_attn_out = lrp_residual_add(x, y_attn, r_h)
    r_merged = lrp_linear_alpha1_beta0(f(rec.proj_in), f(blk.attn.proj.weight), r_attn_out)

    rows, n, _ = r_merged.shape
    heads, dim = blk.attn.num_heads, blk.attn.head_dim
    r_out = r_merged.reshape(rows, n, heads, dim).transpose(1, 2)
    v = f(rec.qkv).reshape(rows, n, 3, heads, dim)[:, :, 2].transpose(1, 2)
    r_q, r_k, r_v, r_a = lrp_attention(f(rec.q), f(rec.k), v, f(rec.attn), r_out, need_qk=need_input)
    if not need_input:
        return None, r_a
    r_qkv = torch.stack([r_q, r_k, r_v], dim=2).permute(0, 3, 2, 1, 4).reshape(rows, n, 3 * heads * dim)
    r_x = r_x + lrp_linear_alpha1_beta0(f(rec.ln1), f(blk.attn.qkv.weight), r_qkv)
    return r_x, r_a


def upcast(t: Tensor) -> Tensor:
    """Detached, in float32 at least (float16/bfloat16 activations are upcast; float64 stays)."""
    return t.detach().float() if t.dtype in (torch.float16, torch.bfloat16) else t.detach()


# ---------------------------------------------------------- whole-model pieces


def head_relevance(model: nn.Module, record: ViTRecord, classes: Tensor, num_tokens: int) -> Tensor:
    """Relevance of the last block's output tokens for a one-hot start at each row's class.

    LRP alpha1-beta0 through the linear head; fc_norm, the final norm and dropout
    pass it; token pooling gives it all to the class token (index 0).
    classes [rows] -> [rows, num_tokens, width].
    """
    head = model.get_classifier()
    head_in = upcast(record.head_in)
    one_hot = torch.nn.functional.one_hot(classes, head.out_features).to(head_in.dtype)
    r_cls = lrp_linear_alpha1_beta0(head_in, upcast(head.weight), one_hot)
    relevance = r_cls.new_zeros(r_cls.shape[0], num_tokens, r_cls.shape[1])
    relevance[:, 0] = r_cls
    return relevance


def attention_relevances(model: nn.Module, record: ViTRecord, classes: Tensor) -> list[Tensor]:
    """R_b for every block b (first to last): relevance of A_b as it leaves A_b.V, [rows, heads, N, N]."""
    num_tokens = record.blocks[-1].x.shape[1]
    relevance = head_relevance(model, record, classes, num_tokens)
    out: list[Tensor] = []
    for i in range(len(model.blocks) - 1, -1, -1):
        relevance, r_a = block_relevance(model.blocks[i], record.blocks[i], relevance, need_input=i > 0)
        out.append(r_a)
    return out[::-1]


def class_scores(logits: Tensor, classes: Tensor) -> Tensor:
    """Sum over rows of each row's class logit: rows are independent, so its gradient is per row."""
    return logits.gather(1, classes[:, None]).sum()


def forward_with_grad(model: nn.Module, images: Tensor) -> Tensor:
    """Forward pass that builds a graph even under ``no_grad``/``inference_mode`` or frozen weights."""
    x = images.detach().clone().requires_grad_(True)
    return model(x)


@contextmanager
def record_output(module: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Record ``module``'s output (the live graph tensor) under key ``"out"``; the hook is removed on exit."""
    store: dict[str, Tensor] = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("out", o))
    try:
        yield store
    finally:
        handle.remove()
