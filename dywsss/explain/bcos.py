"""The native explanation of B-cos probe heads (beyond-spec §1.2; Böhle et al. 2022), ``cam_method=bcos``.

A B-cos head is dynamic linear: at each location p of the frozen backbone's feature
map F, its class scores are ``W(F(p)) F(p)``. The explanation of class c is the
contribution map ``A_c(p) = Σ_d W(F(p))_{c,d} F_d(p)`` on the feature grid (W(x) x
summed over channels), and for these bias-free heads ``mean_p A_c(p)`` is the logit.
The map stage upsamples, aggregates and normalises as for CAM; ``explain`` returns
the positive part, :meth:`BcosExplainer.contributions` the signed maps.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.config import Config
from torch import nn

from ..errors import ConfigError
from ..models.probes import BcosMLPHead, is_bcos_probe
from . import EXPLAINERS
from .base import ExplainerBase


@EXPLAINERS.register("bcos")
class BcosExplainer(ExplainerBase):
    """W(x) x of a :class:`~dywsss.models.probes.ProbeModel` with a B-cos head, at the feature grid.

    Unsigned (``signed = False``): :meth:`explain` gives the positive part; :meth:`meta` records the head
    and its exponent B in ``maps_meta.json``.
    """

    input_size: tuple[int, int] | None = None
    batched: bool = True
    signed: bool = False

    def __init__(self, model: nn.Module, cfg: Config | None = None) -> None:
        if not is_bcos_probe(model):
            head = type(getattr(model, "head", None) or model).__name__
            raise ConfigError(
                f"cam_method=bcos needs a probe model with a B-cos head (probe=bcos_linear|bcos_mlp2|bcos_mlp3); "
                f"this model is {type(model).__name__} with {head}. Use cam_method=cam or gradcam"
            )
        self.model = model.eval()
        self.head: BcosMLPHead = model.head

    @torch.no_grad()
    def contributions(self, images: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Signed contribution maps [K_i, h, w] per image (their spatial mean is the logit)."""
        features = self.model.forward_features(images).float()
        return self.head.contributions(features, classes)

    def explain(self, images: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        return [m.clamp(min=0) for m in self.contributions(images, classes)]

    def method_params(self) -> dict[str, Any]:
        return dict(head=self.model.head_name, b=[c.b for c in self.head.convs],  # B of each B-cos layer
                    explanation="sum over channels of W(F) F at each feature-grid location, positive part")
