"""Relevance maps for timm ViTs: transformer attribution, attention rollout, attention Grad-CAM, Grad-CAM.

Every method returns, per image, one map per requested class on the patch grid
(derived from the model, e.g. 14x14 for a 224 px ViT-*/16), non-negative; the
map stage upsamples and normalises. The explainers feed images at the model's
``img_size``. A batch row is one (image, class) pair: all classes of all
images of a batch are explained in one forward and one backward pass (in
chunks of ``max_rows`` rows), and rows do not interact, so the maps do not
depend on the batching.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from mmengine.config import Config
from torch import Tensor, nn

from ..errors import ConfigError
from . import EXPLAINERS
from .base import ExplainerBase, expand_rows
from .vit_relevance import (
    upcast,
    attention_relevances,
    check_vit,
    class_scores,
    eval_mode,
    forward_with_grad,
    record_output,
    record_vit,
    token_grid,
)

# ------------------------------------------------------------------ equations


def gradient_weighted_relevance(grad: Tensor, relevance: Tensor) -> Tensor:
    """Chefer et al. 2021 (Sec. 3.3), one block without the identity: ``Abar = E_h[(grad_A * R_A)^+]``.

    grad, relevance [rows, heads, N, N] -> [rows, N, N].
    """
    return (grad * relevance).clamp(min=0).mean(dim=1)


def aggregate_blocks(matrices: Sequence[Tensor], normalise_rows: bool) -> Tensor:
    """``C = (M_B + I) ... (M_2 + I)(M_1 + I)`` over blocks 1..B (the first block rightmost).

    Chefer et al. 2021 (Sec. 3.3, as their code orders it) with ``normalise_rows=False``; attention rollout
    (Abnar & Zuidema 2020, ``0.5 A + 0.5 I`` per block) with ``normalise_rows=True``.
    matrices: per block [rows, N, N] -> [rows, N, N].
    """
    eye = torch.eye(matrices[0].shape[-1], dtype=matrices[0].dtype, device=matrices[0].device)
    joint = None
    for m in matrices:
        m = m + eye
        if normalise_rows:
            m = m / m.sum(dim=-1, keepdim=True)
        joint = m if joint is None else m @ joint
    return joint


def class_token_row(joint: Tensor, num_prefix: int) -> Tensor:
    """The class token's row of ``joint`` [rows, N, N] over the patch tokens only -> [rows, N - prefix]."""
    return joint[:, 0, num_prefix:]


def attention_gradcam_map(attn: Tensor, grad: Tensor, num_prefix: int) -> Tensor:
    """Chefer's ``attn_gradcam`` baseline on the last block: Grad-CAM with heads as channels.

    Each head's weight is the mean of the class-token row of dScore/dA over the
    patch tokens; the map is the head mean of weight x attention (class-token row),
    then clamped at 0. attn, grad [rows, heads, N, N] -> [rows, N - prefix].
    """
    a, g = attn[:, :, 0, num_prefix:], grad[:, :, 0, num_prefix:]
    return (a * g.mean(dim=-1, keepdim=True)).mean(dim=1).clamp(min=0)


def token_gradcam_map(activations: Tensor, grad: Tensor, num_prefix: int) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) on tokens: ``ReLU(sum_c mean_t(g_tc) a_tc)`` over patch tokens t.

    activations, grad [rows, N, channels] -> [rows, N - prefix].
    """
    a, g = activations[:, num_prefix:], grad[:, num_prefix:]
    return (a * g.mean(dim=1, keepdim=True)).sum(dim=-1).clamp(min=0)


# ---------------------------------------------------------------- explainers


class ViTExplainer(ExplainerBase):
    """Shared driver: checks the model, expands (image, class) rows, chunks them, reshapes to the grid.

    Subclasses implement :meth:`row_maps` (or :meth:`image_maps` when the map
    does not depend on the class).
    """

    batched = True
    needs_lrp = False
    class_independent = False
    #: rows (image, class pairs) per forward/backward pass
    max_rows = 64

    def __init__(self, model: nn.Module, cfg: Config | None = None) -> None:
        check_vit(model, lrp=self.needs_lrp)
        self.model = model
        self.num_prefix = int(model.num_prefix_tokens)
        self.input_size: tuple[int, int] | None = tuple(int(s) for s in model.patch_embed.img_size)

    def row_maps(self, images: Tensor, classes: Tensor) -> Tensor:
        """Maps of rows: images [R, 3, h, w], classes [R] -> [R, patch tokens]."""
        raise NotImplementedError

    def image_maps(self, images: Tensor) -> Tensor:
        """Class-independent maps: images [B, 3, h, w] -> [B, patch tokens]."""
        raise NotImplementedError

    def explain(self, images: Tensor, classes: Sequence[Sequence[int]]) -> list[Tensor]:
        """images [B, 3, h, w] (normalised), classes[i]: 0-based ids -> per image [K_i, grid h, grid w]."""
        if images.ndim != 4 or images.shape[0] != len(classes):
            raise ConfigError(
                f"{type(self).__name__}.explain: images must be [B, 3, h, w] with one class list per image; "
                f"got images {tuple(images.shape)} and {len(classes)} class lists"
            )
        gh, gw = token_grid(self.model, tuple(images.shape[-2:]))
        # inference_mode(False): the engine may run under inference_mode, whose tensors cannot enter a graph
        with eval_mode(self.model), torch.inference_mode(False), torch.enable_grad():
            img_idx, cls = expand_rows(classes, images.device)
            if self.class_independent:
                per_image = self._chunked(lambda s: self.image_maps(images[s]), images.shape[0], gh * gw)
                flat = per_image[img_idx]
            else:
                flat = self._chunked(lambda s: self.row_maps(images[img_idx[s]], cls[s]), len(cls), gh * gw)
        maps = flat.detach().reshape(-1, gh, gw)
        return list(maps.split([len(c) for c in classes]))

    def _chunked(self, fn: Callable[[slice], Tensor], n: int, tokens: int) -> Tensor:
        """``fn`` on slices of at most ``max_rows`` of ``n`` rows, concatenated -> [n, tokens]."""
        parts = [fn(slice(i, i + self.max_rows)) for i in range(0, n, self.max_rows)]
        if not parts:
            return torch.zeros(0, tokens, device=next(self.model.parameters()).device)
        return torch.cat(parts)


@EXPLAINERS.register("transformer_attribution")
class TransformerAttribution(ViTExplainer):
    """Chefer, Gur & Wolf, CVPR 2021: LRP relevance of each block's attention times its gradient.

    Per block, ``Abar_b = E_h[(dScore/dA_b * R_b)^+]`` with R_b the LRP relevance
    of A_b (rules in :mod:`dywsss.explain.vit_relevance`, started from the
    one-hot class score); ``C = (Abar_B + I) ... (Abar_1 + I)`` without row
    normalisation; the map is C's class-token row over the patch tokens.
    """

    needs_lrp = True

    def row_maps(self, images: Tensor, classes: Tensor) -> Tensor:
        with record_vit(self.model) as record:
            logits = forward_with_grad(self.model, images)
            attns = [b.attn for b in record.blocks]
            grads = torch.autograd.grad(class_scores(logits, classes), attns)
        relevances = attention_relevances(self.model, record, classes)
        mats = [gradient_weighted_relevance(upcast(g), r) for g, r in zip(grads, relevances)]
        return class_token_row(aggregate_blocks(mats, normalise_rows=False), self.num_prefix)


@EXPLAINERS.register("rollout")
class AttentionRollout(ViTExplainer):
    """Attention rollout, Abnar & Zuidema 2020, as in Chefer's baseline (the class does not matter).

    Per block the head-mean attention plus the identity, rows renormalised to 1
    (``0.5 A + 0.5 I``, the residual-aware variant), multiplied through all
    blocks from the first; the map is the class-token row over the patch tokens.
    """

    class_independent = True

    def image_maps(self, images: Tensor) -> Tensor:
        with torch.no_grad(), record_vit(self.model, attention_only=True) as record:
            self.model(images)
        mats = [upcast(b.attn).mean(dim=1) for b in record.blocks]
        return class_token_row(aggregate_blocks(mats, normalise_rows=True), self.num_prefix)


@EXPLAINERS.register("attention_gradcam")
class AttentionGradCAM(ViTExplainer):
    """Chefer's ``attn_gradcam`` baseline: Grad-CAM over the last block's attention heads."""

    def row_maps(self, images: Tensor, classes: Tensor) -> Tensor:
        with record_vit(self.model, attention_only=True) as record:
            logits = forward_with_grad(self.model, images)
            attn = record.blocks[-1].attn
            (grad,) = torch.autograd.grad(class_scores(logits, classes), [attn])
        return attention_gradcam_map(upcast(attn), upcast(grad), self.num_prefix)


@EXPLAINERS.register("vit_gradcam")
class ViTGradCAM(ViTExplainer):
    """Grad-CAM on the output tokens of the last block's first LayerNorm (``blocks[-1].norm1``).

    The original's ViT Grad-CAM variant (pytorch-grad-cam with that target layer
    and the class token dropped); this computes the same map for all rows at once.
    """

    def row_maps(self, images: Tensor, classes: Tensor) -> Tensor:
        with record_output(self.model.blocks[-1].norm1) as store:
            logits = forward_with_grad(self.model, images)
            act = store["out"]
            (grad,) = torch.autograd.grad(class_scores(logits, classes), [act])
        return token_gradcam_map(upcast(act), upcast(grad), self.num_prefix)
