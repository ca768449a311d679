"""What every attribution method provides; the map stage (dywsss.engine.maps) does the rest.

An explainer turns a batch of preprocessed images and, per image, the class
ids to explain into raw, non-negative maps. The map stage handles scales, the
flip, upsampling to the image size, aggregation and normalisation, so a new
method is one small module registered in ``dywsss.explain.EXPLAINERS``.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch
from mmengine.config import Config
from torch import nn


class Explainer(Protocol):
    #: None: the stage feeds the image at each configured scale (aspect kept);
    #: (h, w): the stage resizes every image to this fixed size (ViTs: the model's img_size).
    input_size: tuple[int, int] | None
    #: True when explain() can take several images at once with identical results.
    batched: bool

    def __init__(self, model: nn.Module, cfg: Config) -> None: ...

    def explain(self, images: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """images [B, 3, h, w] (normalised, on the model's device); classes[i]: 0-based ids.

        Returns one tensor per image, [K_i, h_i, w_i], float, >= 0, in class order
        of ``classes[i]``, at any resolution with the input's aspect ratio (the
        feature grid for CAM, the patch grid for ViT relevance). Maps stay on the device.
        """
        ...
