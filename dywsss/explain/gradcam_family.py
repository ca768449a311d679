"""Grad-CAM, Grad-CAM++, Score-CAM and LayerCAM for timm CNNs, through the ``grad-cam`` package.

The target layer is the last feature map (timm ``forward_features``), the
same tensor CAM (Eq. 5) uses, so the methods are compared on equal terms.
We take the package's raw per-target maps (``get_cam_image``, then ReLU)
rather than its output, which is already min-max scaled and resized: the
map stage does the scaling, flips and normalisation for every method alike.

Batching: every (image, class) pair is one row of the package's batch. For
the gradient methods the backbone runs once per image and only the head is
differentiated (a row is the image's features; a row per class costs a head
pass); Score-CAM needs the whole network on masked images, so a row is the
image itself, repeated once per class explained (the masked copies of a row
are scored for its class).

A model whose features are patch tokens (a ViT) is refused at construction
(:func:`dywsss.explain.cam.require_feature_map`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmengine.config import Config
from torch import nn

from ..errors import ConfigError
from . import EXPLAINERS
from .base import ExplainerBase
from .cam import require_feature_map

SCORECAM_BATCH = 64


class _Tap(nn.Identity):
    """Marks the feature map for the package's activation and gradient hooks."""


class HeadNet(nn.Module):
    """``features -> logits`` of a timm model, with the features passing through ``tap``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.tap = _Tap()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.tap(features))


class FullNet(HeadNet):
    """``images -> logits``, with the last feature map passing through ``tap``."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.tap(self.model.forward_features(images)))


class _PackageCAM(ExplainerBase):
    """Shared driver: run the package's hooks and per-target map, skip its scaling."""

    input_size: tuple[int, int] | None = None
    batched: bool = True
    package_class: str = ""
    libraries = ("torch", "timm", "grad-cam")
    #: True: the package sees features and differentiates the head only.
    head_only: bool = True

    def __init__(self, model: nn.Module, cfg: Config | None = None) -> None:
        require_feature_map(model, type(self))
        import pytorch_grad_cam  # deferred: the package pulls in cv2 and ttach

        self.model = model.eval()
        self.net = HeadNet(model) if self.head_only else FullNet(model)
        self.cam = getattr(pytorch_grad_cam, self.package_class)(self.net, target_layers=[self.net.tap])
        if not self.head_only:
            self.cam.batch_size = SCORECAM_BATCH  # masked images per forward pass

    def _inputs(self, images: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One row per (image, class): the images, or (head_only) their features, made a grad leaf."""
        if not self.head_only:
            return images.repeat_interleave(counts, dim=0)
        with torch.no_grad():
            features = self.model.forward_features(images)
        if features.ndim != 4:
            raise ConfigError(f"{self.package_class} needs a [B, C, h, w] feature map, got {tuple(features.shape)}")
        return features.float().repeat_interleave(counts, dim=0).requires_grad_(True)

    def explain(self, images: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        counts = torch.tensor([len(c) for c in classes], device=images.device)
        targets = [ClassifierOutputTarget(int(c)) for cs in classes for c in cs]
        if not targets:
            return [images.new_zeros((0, *images.shape[-2:])) for _ in classes]
        x = self._inputs(images, counts)
        hooks = self.cam.activations_and_grads
        try:
            with torch.enable_grad() if self.cam.uses_gradients else torch.no_grad():
                outputs = hooks(x)
                if self.cam.uses_gradients:
                    self.net.zero_grad(set_to_none=True)
                    torch.stack([t(o) for t, o in zip(targets, outputs)]).sum().backward()
                acts = hooks.activations[0].numpy()
                grads = hooks.gradients[0].numpy() if self.cam.uses_gradients else None
                raw = self.cam.get_cam_image(x, self.net.tap, targets, acts, grads, eigen_smooth=False)
        finally:
            hooks.clear()
            self.net.zero_grad(set_to_none=True)
        maps = torch.from_numpy(raw).float().clamp_(min=0).to(images.device)
        return list(maps.split(counts.tolist()))


@EXPLAINERS.register("gradcam")
class GradCAM(_PackageCAM):
    """Grad-CAM (Selvaraju et al. 2017): channel weights = spatial mean of the class gradient."""

    package_class = "GradCAM"


@EXPLAINERS.register("gradcam++")
class GradCAMPlusPlus(_PackageCAM):
    """Grad-CAM++ (Chattopadhay et al. 2018): higher-order gradient channel weights."""

    package_class = "GradCAMPlusPlus"


@EXPLAINERS.register("layercam")
class LayerCAM(_PackageCAM):
    """LayerCAM (Jiang et al. 2021): positive gradients weight each location."""

    package_class = "LayerCAM"


@EXPLAINERS.register("scorecam")
class ScoreCAM(_PackageCAM):
    """Score-CAM (Wang et al. 2020): channel weights from the class score on masked images."""

    package_class = "ScoreCAM"
    head_only = False
