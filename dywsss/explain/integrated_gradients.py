"""Integrated Gradients (Sundararajan et al. 2017, Eq. 1) through captum's ``IntegratedGradients``.

``IG_c(x) = (x_c - x'_c) * integral_0^1 d logit(x' + a (x - x')) / d x_c da``,
the integral by Gauss-Legendre quadrature with ``ig_steps`` nodes (captum's
defaults: 50, ``gausslegendre``); the map is the signed sum over the colour
channels, so its total is ``logit(x) - logit(x')`` up to captum's convergence
delta (completeness, Sec. 3). Rows are (image, class) pairs, at most ``attr_batch_size`` per call, and
captum's ``internal_batch_size`` (the same value) caps the network inputs (rows x steps) per pass.

Keys: ``ig_steps`` (int >= 1, default 50); ``ig_baseline``: ``zero`` (default,
captum's: the all-zero normalised input, i.e. the ImageNet mean colour) or
``black`` (the black image, normalised: ``(0 - mean) / std``).
"""
from __future__ import annotations

from typing import Any

import torch
from mmengine.config import Config
from torch import Tensor, nn

from . import EXPLAINERS
from ._input_space import InputSpaceExplainer, channel_sum, config_choice, config_int, normalised_pixel_range

BASELINES = ("zero", "black")


@EXPLAINERS.register("integrated_gradients")
class IntegratedGradientsMaps(InputSpaceExplainer):
    """Sundararajan et al. 2017: signed channel sum of captum's Integrated Gradients of the class logit."""

    def __init__(self, model: nn.Module, cfg: Config | dict | None = None) -> None:
        from captum.attr import IntegratedGradients

        super().__init__(model, cfg)
        self.steps = config_int(cfg, "ig_steps", 50)
        self.baseline = config_choice(cfg, "ig_baseline", "zero", BASELINES)
        self.ig = IntegratedGradients(self.model)
        #: captum's convergence delta of the last call, per row (sum of attribution - logit difference)
        self.last_delta: Tensor | None = None

    def baseline_for(self, images: Tensor) -> Tensor | float:
        if self.baseline == "zero":
            return 0.0
        low, _ = normalised_pixel_range(images.device)
        return low.to(images.dtype).expand_as(images).contiguous()

    def row_maps(self, images: Tensor, classes: Tensor) -> Tensor:
        attr, delta = self.ig.attribute(images, baselines=self.baseline_for(images), target=classes,
                                        n_steps=self.steps, method="gausslegendre",
                                        internal_batch_size=self.batch_size, return_convergence_delta=True)
        self._deltas.append(delta.detach())
        return channel_sum(attr)

    def attribute(self, images: Tensor, img_idx: Tensor, cls: Tensor) -> Tensor:
        self._deltas: list[Tensor] = []
        maps = super().attribute(images, img_idx, cls)
        self.last_delta = torch.cat(self._deltas) if self._deltas else images.new_zeros(0)
        return maps

    def method_params(self) -> dict[str, Any]:
        return dict(ig_steps=self.steps, ig_method="gausslegendre", ig_baseline=self.baseline,
                    reduction="sum over channels")
