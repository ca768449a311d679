"""Occlusion (Zeiler & Fergus 2014, Sec. 4.2) through captum's ``Occlusion``.

A square window of ``occlusion_window`` pixels slides over the model's input
in steps of ``occlusion_stride`` pixels (captum's convention: windows start at
multiples of the stride from the top-left, and the last row / column of
windows, cropped at the border, reaches the edge, so every pixel is covered).
Each window replaces all three channels by the baseline 0 (the normalised
zero, i.e. the ImageNet mean colour); a pixel's attribution is the mean, over
the windows covering it, of ``score(x) - score(x occluded)``. Signed; the
value is shared by the three channels, so the map is that value (not a channel sum).

One set of occluded images serves all requested classes of an image (captum
attributes every output of the forward function at once), and the occluded
copies of several images go through the network together, about
``attr_batch_size`` per pass. A window larger than the input is clipped to it.

Keys: ``occlusion_window`` (int >= 1, default 32), ``occlusion_stride``
(int >= 1 and <= the window, default 16), ``perturbation_score`` (``prob``:
sigmoid probability, default; ``logit``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from mmengine.config import Config
from torch import Tensor, nn

from ..errors import ConfigError
from . import EXPLAINERS
from ._input_space import SCORES, InputSpaceExplainer, chunks, class_score, config_choice, config_int


def window_count(size: int, window: int, stride: int) -> int:
    """Window positions along one side, captum's ``ceil((size - window) / stride) + 1``."""
    return math.ceil((size - window) / stride) + 1


@EXPLAINERS.register("occlusion")
class OcclusionMaps(InputSpaceExplainer):
    """Zeiler & Fergus 2014: mean score drop of the windows covering each pixel (signed)."""

    def __init__(self, model: nn.Module, cfg: Config | dict | None = None) -> None:
        from captum.attr import Occlusion

        super().__init__(model, cfg)
        self.window = config_int(cfg, "occlusion_window", 32)
        self.stride = config_int(cfg, "occlusion_stride", 16)
        if self.stride > self.window:
            raise ConfigError(f"occlusion_stride={self.stride}: must not exceed occlusion_window={self.window} "
                              "(pixels between windows would not be occluded)")
        self.score = config_choice(cfg, "perturbation_score", "prob", SCORES)
        self._occlusion_class = Occlusion

    def _occluder(self, classes: Tensor) -> Any:
        """captum's Occlusion of ``x -> score(model(x))[:, classes]``.

        A closure, not ``additional_forward_args``: captum would expand a class tensor along with the batch.
        """
        return self._occlusion_class(lambda x: class_score(self.model(x), self.score)[:, classes])

    def attribute(self, images: Tensor, img_idx: Tensor, cls: Tensor) -> Tensor:
        B, _, h, w = images.shape
        wh, ww = min(self.window, h), min(self.window, w)
        sh, sw = min(self.stride, wh), min(self.stride, ww)
        n_windows = window_count(h, wh, sh) * window_count(w, ww, sw)
        per_call = max(1, min(B, self.batch_size // n_windows))  # images per captum call
        out = images.new_zeros((len(cls), h, w))
        for s in chunks(B, per_call):
            rows = torch.nonzero((img_idx >= s.start) & (img_idx < s.stop)).flatten()
            if len(rows) == 0:
                continue
            union = torch.unique(cls[rows])  # sorted
            per_pass = max(1, min(self.batch_size // (s.stop - s.start), n_windows))  # occluded copies per image
            with torch.no_grad():
                attr = self._occluder(union).attribute(images[s], sliding_window_shapes=(3, wh, ww),
                                                       strides=(3, sh, sw), baselines=0.0,
                                                       perturbations_per_eval=per_pass)
            attr = attr.view(s.stop - s.start, len(union), 3, h, w)[:, :, 0]  # channels share the value
            out[rows] = attr[img_idx[rows] - s.start, torch.searchsorted(union, cls[rows])].to(out.dtype)
        return out

    def method_params(self) -> dict[str, Any]:
        return dict(occlusion_window=self.window, occlusion_stride=self.stride, baseline="zero (normalised)",
                    perturbation_score=self.score, window_at_border="cropped (captum)")
