"""CAM (Zhou et al. 2016; the paper's Eq. 5) for any timm CNN.

One forward pass gives the maps of all 20 classes: the last feature map
(timm ``forward_features``, before pooling) contracted with the classifier
weights, without the bias, then ReLU. The map stage upsamples, aggregates and
normalises.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmengine.config import Config
from torch import nn

from ..errors import ConfigError
from ..models.builder import is_vit
from . import EXPLAINERS
from .base import ExplainerBase


def require_feature_map(model: nn.Module, explainer_class: type) -> None:
    """Refuse, at construction, a model whose ``forward_features`` gives patch tokens [B, N, D] (a timm ViT)
    instead of the [B, C, h, w] feature map CAM and the Grad-CAM family read (their target layer).

    One line naming the method (its registered name) and the network, so that scripts/compare_methods.py's
    check before any work, and the map stage before its first image, stop there.
    """
    if not is_vit(model):  # ProbeModel puts a ViT backbone's tokens on their grid: a feature map
        return
    method = next((n for n in EXPLAINERS.names() if EXPLAINERS.get(n) is explainer_class), explainer_class.__name__)
    network = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    raise ConfigError(
        f"cam_method={method} needs a [B, C, h, w] feature map, but network {network} is not a CNN: its "
        "features are patch tokens [B, N, D] (a ViT); use transformer_attribution, rollout, attention_gradcam, "
        "vit_gradcam or an input-space method (gradient, integrated_gradients, ...)"
    )


def classifier_weight(model: nn.Module) -> torch.Tensor:
    """The classifier weight matrix [num_classes, channels] of a timm model (``get_classifier()``).

    Accepts a linear layer or a 1x1 convolution; anything else cannot give a CAM.
    """
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    weight = getattr(head, "weight", None)
    if not isinstance(head, (nn.Linear, nn.Conv2d)) or weight is None:
        raise ConfigError(
            f"CAM needs a linear classifier from model.get_classifier(); {type(model).__name__} "
            f"has {type(head).__name__}. Use cam_method=gradcam for this model."
        )
    if isinstance(head, nn.Conv2d) and head.kernel_size != (1, 1):
        raise ConfigError(f"CAM needs a 1x1 convolution classifier, got kernel {head.kernel_size}")
    return weight.reshape(weight.shape[0], -1)


def class_activation_maps(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``M_c = ReLU(sum_k w_{c,k} f_k)`` for every class c, without the classifier bias.

    features [B, K, h, w] (before pooling), weight [C, K] -> maps [B, C, h, w].
    """
    return torch.einsum("bkhw,ck->bchw", features, weight.to(features.dtype)).clamp_(min=0)


def check_gap_linear_head(model: nn.Module, features: torch.Tensor, weight: torch.Tensor) -> None:
    """Raise unless the model's head is global average pooling followed by the linear classifier.

    Only then is Eq. 5 the exact spatial decomposition of the logits (the logit is the
    mean of the unrectified map plus the bias); a head with a norm, a conv or max
    pooling after the features would make the CAM describe some other function.
    """
    head = model.get_classifier()
    if weight.shape[1] != features.shape[1]:
        raise ConfigError(
            f"CAM (Eq. 5) needs the classifier to act on the last feature map, but {type(model).__name__}'s "
            f"classifier takes {weight.shape[1]} channels and the features have {features.shape[1]} (an MLP head?). "
            "Use cam_method=gradcam (or bcos for B-cos heads)."
        )
    bias = head.bias if getattr(head, "bias", None) is not None else 0.0
    expected = features.mean(dim=(2, 3)) @ weight.t().to(features.dtype) + bias
    logits = model.forward_head(features)
    scale = float(expected.abs().max().clamp(min=1.0))
    if logits.shape != expected.shape or not torch.allclose(logits, expected, rtol=1e-3, atol=1e-4 * scale):
        raise ConfigError(
            f"CAM (Eq. 5) needs global average pooling followed directly by the linear classifier, "
            f"but {type(model).__name__}.forward_head does something else (a norm, a conv or another "
            "pooling after the features). Use cam_method=gradcam (or layercam) for this model."
        )


@EXPLAINERS.register("cam")
class CAM(ExplainerBase):
    """Eq. 5 CAM of a timm CNN: all classes of a batch from one forward pass."""

    input_size: tuple[int, int] | None = None
    batched: bool = True

    def __init__(self, model: nn.Module, cfg: Config | None = None) -> None:
        require_feature_map(model, type(self))
        self.model = model.eval()
        self.weight = classifier_weight(model).detach()
        self._checked = False

    @torch.no_grad()
    def all_class_maps(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, h, w] -> ReLU'd class maps [B, num_classes, h', w'] on the feature grid."""
        features = self.model.forward_features(images)
        if features.ndim != 4:
            raise ConfigError(
                f"CAM needs a [B, C, h, w] feature map from forward_features, got {tuple(features.shape)} "
                f"({type(self.model).__name__} is not a CNN; use a ViT method)"
            )
        features = features.float()
        if not self._checked:
            check_gap_linear_head(self.model, features, self.weight.float())
            self._checked = True
        return class_activation_maps(features, self.weight.float())

    def explain(self, images: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        maps = self.all_class_maps(images)
        return [maps[i, list(c)] for i, c in enumerate(classes)]
