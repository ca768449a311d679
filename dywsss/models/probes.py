"""Probes on frozen backbones ("How to Probe", Gairola et al. ICLR 2025; beyond-spec §1.2).

A probe is a small head trained on the last feature map F [B, D, h, w] of a
frozen backbone. Every head runs as 1x1 convolutions on F, producing per-location
class scores [B, C, h, w]; global average pooling (GAP) then gives the logits.
For a linear head this equals GAP-then-linear; for MLPs it does not (§1.2).

Heads (registered in :data:`PROBE_HEADS`, picked by the ``probe`` config key):

- ``linear``: one 1x1 conv D -> C with bias.
- ``mlp2``, ``mlp3``: conventional MLPs [code]: (1x1 conv - BN - ReLU) x (depth - 1),
  then 1x1 conv H -> C; biases on, hidden width H = D by default, no BN after the last layer.
- ``bcos_linear``, ``bcos_mlp2``, ``bcos_mlp3``: B-cos MLPs (§1.2 Eq. 6): B-cos 1x1 convs
  (B = 2) with bias-free uncentred BatchNorm between them and no ReLU.

:class:`ProbeModel` wraps the frozen backbone and the head so that it looks like a
timm classifier (``forward_features``, ``forward_head``, ``get_classifier``,
``num_classes``) to the map, per-sample and calibration stages.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

#: name -> factory ``(in_features, num_classes, **head_kwargs) -> ProbeHead``
PROBE_HEADS: Registry[Callable[..., "ProbeHead"]] = Registry("probe head")

#: Added to ||a||^2 before the square root in the B-cos cosine (as the B-cos code does), so a
#: zero feature vector gives a zero output instead of NaN.
BCOS_NORM_EPS = 1e-6


# ----------------------------------------------------------------- heads
class ProbeHead(nn.Module):
    """Features [B, D, h, w] -> per-location class scores [B, C, h, w] (before pooling)."""

    @property
    def classifier(self) -> nn.Module:
        """The last 1x1 layer (what ``ProbeModel.get_classifier()`` returns)."""
        raise NotImplementedError


class LinearHead(ProbeHead):
    """``logits = W GAP(F) + b`` written as a 1x1 convolution before the pooling."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Conv2d(in_features, num_classes, kernel_size=1, bias=bias)

    @property
    def classifier(self) -> nn.Module:
        return self.fc

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


class MLPHead(ProbeHead):
    """Conventional MLP [code]: (1x1 conv - BN - ReLU) x (depth - 1), then a 1x1 conv; no BN at the end."""

    def __init__(self, in_features: int, num_classes: int, depth: int = 2, hidden: int | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        hidden = int(hidden or in_features)
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, hidden, kernel_size=1, bias=bias), nn.BatchNorm2d(hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Conv2d(width, num_classes, kernel_size=1, bias=bias))
        self.layers = nn.Sequential(*layers)

    @property
    def classifier(self) -> nn.Module:
        return self.layers[-1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class BcosConv2d(nn.Module):
    """1x1 B-cos convolution (beyond-spec §1.2 Eq. 6; Böhle et al. CVPR 2022).

    For the input vector a at each location and every output row w_j, with
    unit-norm rows ŵ_j = w_j / ||w_j|| (the B-cos papers' choice; the stored weight
    may have any scale):

        out_j = |cos(a, ŵ_j)|^(B-1) · (ŵ_jᵀ a),   cos(a, ŵ_j) = ŵ_jᵀ a / ||a||,

    with ||a|| = sqrt(Σ a² + 1e-6). No bias. The layer is dynamic linear:
    ``out = W(a) a`` with ``W(a) = diag(|cos|^(B-1)) Ŵ`` (:meth:`linear_and_scale` gives both factors).
    """

    def __init__(self, in_features: int, out_features: int, b: float = 2.0) -> None:
        super().__init__()
        if b < 1:
            raise ConfigError(f"B-cos exponent b={b}: must be >= 1 (b=1 is a plain linear layer with unit-norm rows)")
        self.b = float(b)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, 1, 1))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's init; the scale is normalised away

    def unit_weight(self) -> torch.Tensor:
        """Ŵ [out, in]: the weight rows scaled to unit norm."""
        return F.normalize(self.weight.flatten(1), dim=1)

    def linear_and_scale(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ŵa at every location [B, out, h, w], the factors |cos(a, ŵ_j)|^(B-1) [B, out, h, w])."""
        w = self.unit_weight()
        lin = F.conv2d(a, w[:, :, None, None])
        norm = (a.pow(2).sum(dim=1, keepdim=True) + BCOS_NORM_EPS).sqrt()
        scale = (lin / norm).abs().pow(self.b - 1) if self.b != 1 else torch.ones_like(lin)
        return lin, scale

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        lin, scale = self.linear_and_scale(a)
        return lin * scale

    def extra_repr(self) -> str:
        out, inp = self.weight.shape[:2]
        return f"{inp}, {out}, b={self.b:g}"


class UncenteredBatchNorm2d(nn.Module):
    """Bias-free BatchNorm without centring (the B-cos code's ``BatchNormUncentered2d`` + ``NoBias``).

    ``y = γ · x / sqrt(var + eps)``: the mean is not subtracted (that would be an
    affine, not linear, map), ``var`` is the biased batch variance over (B, h, w)
    in training and the running variance (momentum 0.1, updated with the biased
    batch variance) in eval mode. In eval mode it is a fixed diagonal linear map.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = float(eps), float(momentum)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def channel_scale(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """γ / sqrt(var + eps) [C]: batch variance of ``x`` in training, running variance in eval."""
        if self.training:
            if x is None:
                raise ValueError("UncenteredBatchNorm2d.channel_scale needs the batch in training mode")
            var = x.var(dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var.detach())
        else:
            var = self.running_var
        return self.weight / (var + self.eps).sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_scale(x)[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps:g}, momentum={self.momentum:g}"


class BcosMLPHead(ProbeHead):
    """B-cos MLP [code]: (B-cos 1x1 conv - uncentred BN) x (depth - 1), then a B-cos 1x1 conv.

    No ReLU, no bias: the whole head is dynamic linear, ``scores(p) = W(F(p)) F(p)`` at
    each location p, which :meth:`contributions` uses for the native explanation.
    """

    def __init__(self, in_features: int, num_classes: int, depth: int = 2, hidden: int | None = None,
                 b: float = 2.0) -> None:
        super().__init__()
        hidden = int(hidden or in_features)
        widths = [in_features] + [hidden] * (depth - 1) + [num_classes]
        self.convs = nn.ModuleList(BcosConv2d(i, o, b=b) for i, o in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(UncenteredBatchNorm2d(w) for w in widths[1:-1])

    @property
    def classifier(self) -> nn.Module:
        return self.convs[-1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.norms):
                x = self.norms[i](x)
        return x

    def dynamic_weights(self, features: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
        """W(x) restricted to ``classes``: [h*w, K, D] for one image's features [1, D, h, w] (eval mode).

        Composes, at each location, diag(s_L) Ŵ_L · diag(g_{L-1} s_{L-1}) Ŵ_{L-1} ··· diag(g_1 s_1) Ŵ_1,
        with s_l the B-cos factors |cos|^(B-1) of layer l and g_l the BN scales (right to left
        from the class rows, so the cost is K·H² per location, not C·H²).
        """
        if self.training:
            raise RuntimeError("dynamic_weights needs eval mode (BN with running statistics)")
        if features.shape[0] != 1:
            raise ValueError(f"dynamic_weights takes one image, got a batch of {features.shape[0]}")
        scales, x = [], features
        for i, conv in enumerate(self.convs):
            lin, s = conv.linear_and_scale(x)
            x = lin * s
            g = torch.ones_like(s[0, :, 0, 0])
            if i < len(self.norms):
                g = self.norms[i].channel_scale()
                x = x * g[None, :, None, None]
            scales.append((s[0].flatten(1).t() * g))  # [h*w, out]: diag entries of layer i's map
        idx = torch.as_tensor(list(classes), dtype=torch.long, device=features.device)
        rows = scales[-1][:, idx, None] * self.convs[-1].unit_weight()[idx][None]  # [P, K, H]
        for i in range(len(self.convs) - 2, -1, -1):
            rows = (rows * scales[i][:, None, :]) @ self.convs[i].unit_weight()
        return rows

    def contributions(self, features: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per image i, [K_i, h, w]: Σ_d W(x)_{c,d}(p) F_d(p), the B-cos explanation W(x) x at the feature grid.

        For this bias-free head, the mean over the h*w locations of class c's map is its logit.
        """
        out = []
        for i, cls in enumerate(classes):
            f = features[i:i + 1]
            _, d, h, w = f.shape
            if len(cls) == 0:
                out.append(f.new_zeros((0, h, w)))
                continue
            weights = self.dynamic_weights(f, cls)  # [P, K, D]
            per_loc = torch.einsum("pkd,pd->kp", weights, f[0].flatten(1).t())
            out.append(per_loc.reshape(len(cls), h, w))
        return out


def _check_depth_hidden(name: str, hidden: int | None) -> None:
    if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0):
        raise ConfigError(f"probe_hidden={hidden!r} ({name}): expected an integer >= 1, or 0 for the feature width")


def _register_mlp(name: str, cls: type[ProbeHead], depth: int) -> None:
    """Register ``cls`` at a fixed depth; its keyword arguments (less ``depth``, and ``hidden`` for
    depth 1) are the head's ``head_kwargs``."""
    def factory(in_features: int, num_classes: int, hidden: int | None = None, **kwargs: Any) -> ProbeHead:
        _check_depth_hidden(name, hidden)
        return cls(in_features, num_classes, depth=depth, hidden=hidden or in_features, **kwargs)

    skip = {"depth"} | ({"hidden"} if depth == 1 else set())
    factory.__doc__ = f"{cls.__name__} with depth {depth}."
    factory.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p for n, p in inspect.signature(cls).parameters.items() if n not in skip])
    PROBE_HEADS.register(name)(factory)


PROBE_HEADS.register("linear")(LinearHead)
_register_mlp("mlp2", MLPHead, 2)
_register_mlp("mlp3", MLPHead, 3)
_register_mlp("bcos_linear", BcosMLPHead, 1)
_register_mlp("bcos_mlp2", BcosMLPHead, 2)
_register_mlp("bcos_mlp3", BcosMLPHead, 3)


def head_kwarg_names(head: str) -> list[str]:
    """Keyword arguments a registered head accepts (besides in_features and num_classes)."""
    sig = inspect.signature(get_head_factory(head))
    return [n for n in sig.parameters if n not in ("in_features", "num_classes")]


def get_head_factory(head: str) -> Callable[..., ProbeHead]:
    """The factory registered as ``head``; an unknown name is a one-line :class:`ConfigError`."""
    try:
        return PROBE_HEADS.get(head)
    except KeyError as exc:
        raise ConfigError(f"probe={head!r}: {exc}") from None


def build_head(head: str, in_features: int, num_classes: int, **head_kwargs: Any) -> ProbeHead:
    """Instantiate the registered head ``head``; unknown names or arguments raise :class:`ConfigError`."""
    factory = get_head_factory(head)
    accepted = head_kwarg_names(head)
    unknown = [k for k in head_kwargs if k not in accepted]
    if unknown:
        raise ConfigError(f"probe={head}: unknown head argument {unknown[0]!r} (accepted: {', '.join(accepted)})")
    return factory(in_features, num_classes, **head_kwargs)


# ------------------------------------------------------------------ model
def tokens_to_grid(tokens: torch.Tensor, num_prefix_tokens: int, grid: tuple[int, int]) -> torch.Tensor:
    """ViT tokens [B, N, D] -> patch-token feature map [B, D, h, w] (prefix tokens dropped)."""
    patches = tokens[:, num_prefix_tokens:]
    h, w = grid
    if patches.shape[1] != h * w:
        raise ValueError(f"{patches.shape[1]} patch tokens do not fill a {h}x{w} grid")
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class ProbeModel(nn.Module):
    """A frozen timm backbone plus a probe head, with timm's classifier interface.

    - ``forward_features(x)``: the backbone's last feature map [B, D, h, w] (ViTs: the
      patch tokens on their grid);
    - ``forward_head(features)``: head scores [B, C, h, w], then global average pooling -> [B, C];
    - ``get_classifier()``: the head's last 1x1 layer (an ``nn.Conv2d`` for linear and
      conventional heads, so CAM's checks apply; exact Eq. 5 for ``linear``).

    The backbone is always in eval mode (``train()`` only switches the head) and has
    ``requires_grad=False``; gradients still flow through it to the input for attribution.
    """

    def __init__(self, backbone: nn.Module, head: ProbeHead, head_name: str, head_kwargs: Mapping[str, Any],
                 num_classes: int, num_features: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_name = head_name
        self.head_kwargs = dict(head_kwargs)
        self.num_classes = int(num_classes)
        self.num_features = int(num_features)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> "ProbeModel":
        super().train(mode)
        self.backbone.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_features(x)
        if feats.ndim == 3:  # ViT tokens
            patch = self.backbone.patch_embed.patch_size
            grid = (x.shape[-2] // patch[0], x.shape[-1] // patch[1])
            feats = tokens_to_grid(feats, int(getattr(self.backbone, "num_prefix_tokens", 1)), grid)
        return feats

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return features.mean(dim=(2, 3))
        return self.head(features).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def probe_spec(self) -> dict[str, Any]:
        """JSON-able description of the head; with the backbone's timm name/kwargs it rebuilds the model."""
        return dict(head=self.head_name, head_kwargs=dict(self.head_kwargs), num_classes=self.num_classes,
                    num_features=self.num_features)


def feature_width(backbone: nn.Module) -> int:
    """D, the channel count of ``backbone.forward_features`` (timm's ``num_features``)."""
    d = getattr(backbone, "num_features", None)
    if not isinstance(d, int) or d <= 0:
        raise ValueError(f"{type(backbone).__name__}: no positive integer num_features (is it a timm model?)")
    return d


def build_probe_model(backbone: nn.Module, head: str, num_classes: int, **head_kwargs: Any) -> ProbeModel:
    """Freeze ``backbone`` (a timm model), drop its classifier and attach the registered head ``head``.

    ``hidden`` (MLP heads) defaults to the feature width D and is recorded resolved in
    ``probe_spec()``, so the spec rebuilds the same shapes.
    """
    factory_args = head_kwarg_names(head)  # raises ConfigError for unknown heads
    d = feature_width(backbone)
    if "hidden" in factory_args:
        _check_depth_hidden(head, head_kwargs.get("hidden"))
        head_kwargs = {**head_kwargs, "hidden": int(head_kwargs.get("hidden") or d)}
    if hasattr(backbone, "reset_classifier"):
        backbone.reset_classifier(0)
    module = build_head(head, d, int(num_classes), **head_kwargs)
    return ProbeModel(backbone, module, head, head_kwargs, int(num_classes), d)


def is_bcos_probe(model: nn.Module) -> bool:
    """True for a :class:`ProbeModel` whose head is a B-cos MLP."""
    return isinstance(model, ProbeModel) and isinstance(model.head, BcosMLPHead)
