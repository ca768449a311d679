"""What every attribution method provides; the map stage (dywsss.engine.maps) does the rest.

An explainer turns a batch of preprocessed images and, per image, the class
ids to explain into raw maps. The map stage handles scales, the flip,
upsampling to the image size, aggregation and normalisation, so a new method
is one small module registered in ``dywsss.explain.EXPLAINERS``.

Two kinds of map come back: unsigned ones (CAM family, ViT relevance, the
plain gradient, RISE), already >= 0, and signed ones (``signed = True``: the
per-pixel attribution of input-space methods such as Integrated Gradients or
LRP, summed over the input channels), of which the stage keeps the positive
part for the stored map and may keep the signed map as ``raw``.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
from mmengine.config import Config
from torch import nn

from ..provenance import library_versions


class Explainer(Protocol):
    #: None: the stage feeds the image at each configured scale (aspect kept);
    #: (h, w): the stage resizes every image to this fixed size (ViTs: the model's img_size).
    input_size: tuple[int, int] | None
    #: True when explain() can take several images at once with identical results.
    batched: bool
    #: False: maps are >= 0. True: maps are the signed per-pixel attribution
    #: (sum over the input channels); the stage stores their positive part.
    signed: bool

    def __init__(self, model: nn.Module, cfg: Config) -> None: ...

    def explain(self, images: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """images [B, 3, h, w] (normalised, on the model's device); classes[i]: 0-based ids.

        Returns one tensor per image, [K_i, h_i, w_i], float, in class order of
        ``classes[i]``, at any resolution with the input's aspect ratio (the
        feature grid for CAM, the patch grid for ViT relevance, the input
        itself for input-space methods); >= 0 unless ``signed``. Maps stay on the device.
        """
        ...

    def meta(self) -> dict[str, Any]:
        """The settings that change the maps (method parameters, library versions), for ``maps_meta.json``."""
        ...


class ExplainerBase:
    """Defaults of the protocol: unsigned maps, batched, no parameters; subclasses override.

    ``libraries`` names the distributions whose versions go into :meth:`meta`;
    :meth:`method_params` returns the settings (named as their config keys)
    that change the maps. Settings that only change speed (batch sizes) stay
    out, so a rerun with another batch size may resume a map folder.
    """

    input_size: tuple[int, int] | None = None
    batched: bool = True
    signed: bool = False
    libraries: tuple[str, ...] = ("torch", "timm")

    def method_params(self) -> dict[str, Any]:
        return {}

    def meta(self) -> dict[str, Any]:
        return dict(signed=self.signed, **self.method_params(), libraries=library_versions(self.libraries))


def expand_rows(classes: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One row per (image, class) pair: (image index [R], class id [R]), in input order."""
    img = [i for i, cs in enumerate(classes) for _ in cs]
    cls = [int(c) for cs in classes for c in cs]
    as_long = dict(dtype=torch.long, device=device)
    return torch.tensor(img, **as_long), torch.tensor(cls, **as_long)
