"""LRP for timm CNNs through zennit: the epsilon-gamma-box composite on a canonized copy of the network.

Rules (zennit ``EpsilonGammaBox``; Montavon et al. 2019, "Layer-wise relevance
propagation: an overview", Sec. 10.2): ZBox on the first convolution with the
bounds of the normalised pixel range (``(0 - mean) / std`` and ``(1 - mean) / std``
per channel), gamma (0.25) on the other convolutions, epsilon (1e-6) on
linear layers, the Norm rule on average pooling and on sums, Pass on
activations and BatchNorm. The relevance entering the network is the class
logit (one-hot times the logit), so with bias-free layers the relevances of a
row sum to its logit (conservation); the map is the signed channel sum.

Canonization. zennit's ``ResNetCanonizer`` matches torchvision's
``Bottleneck`` / ``BasicBlock`` classes only, not timm's, and its
``SequentialMergeBatchNorm`` trusts the order in which modules are registered.
So the network is traced with ``torch.fx`` (timm's untraceable modules kept as
leaves) and canonized on the graph itself (:func:`canonize`): every BatchNorm
whose input is the output of a convolution / linear layer used by nothing else
is merged into it (zennit's ``MergeBatchNorm.merge_batch_norm``), and every
tensor + tensor addition of equal shapes (the residual connections) becomes a
zennit ``Sum`` module, so the Norm rule splits relevance between the branches.
This happens once, on a deep copy: the stage's model is never modified.

What still has no LRP rule after this (a multiplicative gate such as SE
attention, a functional mean or activation, an unmerged BatchNorm) lets the
modified gradient through unchanged; such ops are listed in ``meta()`` as
``lrp_unruled_ops`` with ``approximate: true``. Plain timm ResNets and
EfficientNet-Lite canonize completely (``approximate: false``). ViTs are
refused: use ``transformer_attribution`` (Chefer et al.'s LRP for transformers).
"""
from __future__ import annotations

import copy
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from mmengine.config import Config
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.builder import is_vit
from . import EXPLAINERS
from ._input_space import InputSpaceExplainer, channel_sum, normalised_pixel_range

EPSILON = 1e-6
GAMMA = 0.25
#: input size of the one forward pass that records tensor shapes for canonization
EXAMPLE_SIZE = (64, 64)
_ADDS = (operator.add, operator.iadd, torch.add)
#: graph ops that move relevance without changing it (the modified gradient is the right rule)
_NEUTRAL_OPS = frozenset({"flatten", "reshape", "view", "contiguous", "getitem", "getattr", "size", "stack", "cat",
                          "clone", "permute", "squeeze", "unsqueeze", "dim", "to", "float"})


class _Tracer(fx.Tracer):
    """torch.fx tracer that keeps timm's untraceable modules and functions as leaves (as timm's feature extraction)."""

    def __init__(self) -> None:
        from timm.layers._fx import get_notrace_functions

        super().__init__(autowrap_functions=tuple(get_notrace_functions()))

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        from timm.layers._fx import get_notrace_modules

        return isinstance(module, tuple(get_notrace_modules())) or super().is_leaf_module(module, qualified_name)


@dataclass
class Canonized:
    """A canonized copy of a network and what canonization did."""

    module: fx.GraphModule
    merged_batchnorms: int = 0
    residual_sums: int = 0
    first_layer: str = ""
    unruled: dict[str, int] = field(default_factory=dict)

    @property
    def approximate(self) -> bool:
        return bool(self.unruled)


def _op_name(node: fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _merge_batchnorms(gm: fx.GraphModule) -> int:
    """Merge each BatchNorm fed only by a conv / linear layer into it (zennit's merge; the BN becomes the identity)."""
    from zennit.canonizers import MergeBatchNorm
    from zennit.types import BatchNorm, Linear

    merged = 0
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), BatchNorm):
            continue
        src = node.args[0]
        if (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1
                and isinstance(gm.get_submodule(src.target), Linear)):
            MergeBatchNorm.merge_batch_norm([gm.get_submodule(src.target)], gm.get_submodule(node.target))
            node.meta["lrp_merged"] = True
            merged += 1
    return merged


def _residual_sums(gm: fx.GraphModule) -> int:
    """Replace each addition of two equal-shape tensors by ``Sum(stack([a, b], -1))`` (zennit's Norm rule applies)."""
    from zennit.layer import Sum

    count = 0
    for node in list(gm.graph.nodes):
        is_add = (node.op == "call_function" and node.target in _ADDS) or (
            node.op == "call_method" and node.target in ("add", "add_"))
        if not is_add or len(node.args) != 2 or node.kwargs:
            continue
        a, b = node.args
        shapes = [getattr(x, "meta", {}).get("tensor_meta") for x in (a, b)]
        if not all(isinstance(x, fx.Node) for x in (a, b)) or None in shapes or shapes[0].shape != shapes[1].shape:
            continue
        name = f"lrp_residual_sum_{count}"
        gm.add_submodule(name, Sum(dim=-1))
        with gm.graph.inserting_before(node):
            stacked = gm.graph.call_function(torch.stack, ((a, b),), {"dim": -1})
            summed = gm.graph.call_module(name, (stacked,))
        summed.meta = dict(node.meta)  # shape info for later additions that read this one
        node.replace_all_uses_with(summed)
        gm.graph.erase_node(node)
        count += 1
    return count


def _unruled_ops(gm: fx.GraphModule) -> dict[str, int]:
    """Ops of the canonized graph without an LRP rule of the composite (the gradient passes them), by name."""
    from zennit.layer import Sum
    from zennit.types import Activation, AvgPool, BatchNorm, Linear, MaxPool

    ruled = (Linear, AvgPool, Activation, Sum, MaxPool, nn.Identity, nn.Dropout, nn.Flatten)
    found: Counter = Counter()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, BatchNorm):
                if not node.meta.get("lrp_merged"):
                    found[f"{type(module).__name__} (not merged)"] += 1
            elif not isinstance(module, ruled):
                found[type(module).__name__] += 1
        elif node.op in ("call_function", "call_method") and _op_name(node) not in _NEUTRAL_OPS:
            found[_op_name(node)] += 1
    return dict(sorted(found.items()))


def canonize(model: nn.Module, example: Tensor) -> Canonized:
    """A traced, canonized deep copy of ``model`` (BatchNorms merged, residual additions as zennit Sum)."""
    net = copy.deepcopy(model).eval()
    for module in net.modules():  # zennit's hooks need the activations' inputs intact
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    try:
        gm = fx.GraphModule(net, _Tracer().trace(net))
    except Exception as exc:  # tracing errors come in many types
        raise ConfigError(f"cam_method=lrp: torch.fx cannot trace {type(model).__name__} ({exc}); "
                          "LRP needs a traceable timm CNN") from exc
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(gm).propagate(example)  # tensor shapes: which additions join equal-shape tensors
    out = Canonized(gm, merged_batchnorms=_merge_batchnorms(gm), residual_sums=_residual_sums(gm))
    gm.graph.lint()
    gm.recompile()
    out.first_layer, direct = _first_conv(gm)
    out.unruled = _unruled_ops(gm)
    if not direct:
        out.unruled[f"first convolution {out.first_layer} does not read the image"] = 1
    return out


def _first_conv(gm: fx.GraphModule) -> tuple[str, bool]:
    """Name of the module zennit's first-layer rule (ZBox) goes to, and whether it reads the input image directly."""
    from zennit.types import Convolution

    first = next((name for name, m in gm.named_modules() if isinstance(m, Convolution)), "")
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == first:
            return first, isinstance(node.args[0], fx.Node) and node.args[0].op == "placeholder"
    return first, False


@EXPLAINERS.register("lrp")
class LRP(InputSpaceExplainer):
    """Layer-wise relevance propagation (Bach et al. 2015) with zennit's EpsilonGammaBox composite (signed)."""

    libraries = ("torch", "timm", "zennit")

    def __init__(self, model: nn.Module, cfg: Config | dict | None = None) -> None:
        if is_vit(model):
            raise ConfigError(f"cam_method=lrp: {type(model).__name__} is a ViT; LRP here covers CNNs. "
                              "Use cam_method=transformer_attribution (Chefer et al.'s LRP for transformers).")
        super().__init__(model, cfg)
        device = next(model.parameters()).device
        self.canonized = canonize(model, torch.zeros(1, 3, *EXAMPLE_SIZE, device=device))
        self.low, self.high = normalised_pixel_range(device)

    def composite(self):
        from zennit.composites import EpsilonGammaBox

        return EpsilonGammaBox(low=self.low, high=self.high, epsilon=EPSILON, gamma=GAMMA)

    def row_maps(self, images: Tensor, classes: Tensor) -> Tensor:
        net = self.canonized.module
        with self.composite().context(net) as modified:
            logits = modified(images)
            start = torch.zeros_like(logits).scatter_(1, classes[:, None], logits.gather(1, classes[:, None]))
            (relevance,) = torch.autograd.grad(logits, images, grad_outputs=start.detach())
        return channel_sum(relevance)

    def method_params(self) -> dict[str, Any]:
        c = self.canonized
        return dict(composite="zennit EpsilonGammaBox", epsilon=EPSILON, gamma=GAMMA,
                    box="normalised pixel range [(0 - mean) / std, (1 - mean) / std]", first_layer=c.first_layer,
                    canonizer=dict(kind="torch.fx graph: BatchNorm merged into the preceding conv/linear, "
                                        "residual additions as zennit Sum",
                                   merged_batchnorms=c.merged_batchnorms, residual_sums=c.residual_sums),
                    approximate=c.approximate, lrp_unruled_ops=c.unruled, start_relevance="class logit",
                    reduction="sum over channels")
