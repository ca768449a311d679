"""Shared machinery of the input-space attribution methods (gradient, perturbation and LRP families).

These methods explain the network's input pixels, so they work on any timm
CNN and, fed at the model's ``img_size``, on ViTs. A batch row is one
(image, class) pair; rows never interact (the model is in eval mode), so the
maps do not depend on the batching. Heavy libraries (captum, zennit,
scikit-image, scikit-learn) are imported when a method is built, not when
the package is imported.

Config keys shared by the family (read with ``cfg.get``; ``cfg`` may be None):

- ``attr_batch_size`` (int >= 1, default 64): network inputs per forward /
  backward pass (rows, IG steps, SmoothGrad samples, perturbed images). Speed
  and memory only: the maps agree to float32 rounding for any value.
- ``random_seed`` (int >= 0, default 2022): seed of SmoothGrad's noise, RISE's
  masks and LIME's samples.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.config import Config
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.builder import is_vit
from .base import ExplainerBase, expand_rows

DEFAULT_BATCH = 64
DEFAULT_SEED = 2022
#: ``perturbation_score`` values: what the perturbation methods read from the network.
SCORES = ("prob", "logit")


# ------------------------------------------------------------ config values
def _get(cfg: Config | dict | None, key: str, default: Any) -> Any:
    return default if cfg is None else cfg.get(key, default)


def config_int(cfg: Config | dict | None, key: str, default: int, minimum: int = 1) -> int:
    """``cfg[key]`` as an int >= ``minimum``, else a one-line ConfigError naming the key."""
    value = _get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum} (default {default})")
    return int(value)


def config_float(cfg: Config | dict | None, key: str, default: float, low: float, high: float | None = None) -> float:
    """``cfg[key]`` as a float with ``low < value <= high`` (no upper bound if None), else a ConfigError."""
    value = _get(cfg, key, default)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (value > low and (high is None or value <= high)):
        span = f"> {low}" if high is None else f"in ({low}, {high}]"
        raise ConfigError(f"{key}={value!r}: expected a number {span} (default {default})")
    return float(value)


def config_choice(cfg: Config | dict | None, key: str, default: str, choices: Sequence[str]) -> str:
    """``cfg[key]`` if it is one of ``choices``, else a ConfigError listing them."""
    value = _get(cfg, key, default)
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: expected one of {', '.join(choices)} (default {default!r})")
    return value


# ------------------------------------------------------------ helpers
def model_input_size(model: nn.Module) -> tuple[int, int] | None:
    """A ViT's fixed ``img_size`` (the stage feeds images at it); None for CNNs (any size, every scale)."""
    if is_vit(model):
        size = getattr(model.patch_embed, "img_size", None)
        if size is None:
            raise ConfigError(f"{type(model).__name__}: a ViT without patch_embed.img_size; cannot pick its input size")
        return tuple(int(s) for s in size)
    return None


def class_score(logits: Tensor, kind: str) -> Tensor:
    """What the perturbation methods read: the sigmoid probability (``prob``, multi-label) or the logit."""
    return torch.sigmoid(logits.float()) if kind == "prob" else logits.float()


def chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def unnormalize(images: Tensor) -> Tensor:
    """ImageNet-normalised [B, 3, h, w] (the stage's input) -> RGB in [0, 1]."""
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0.0, 1.0)


def normalised_pixel_range(device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Lowest and highest normalised value per channel, [1, 3, 1, 1] each: (0 - mean) / std, (1 - mean) / std."""
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (0.0 - mean) / std, (1.0 - mean) / std


# ------------------------------------------------------------ the driver
class InputSpaceExplainer(ExplainerBase):
    """Driver: checks the input, expands (image, class) rows, runs with gradients enabled, splits per image.

    Subclasses implement :meth:`row_maps` (one map per row, rows chunked by
    ``attr_batch_size``) or override :meth:`attribute` (the perturbation
    methods, which share each image's perturbed forward passes across its classes).
    """

    batched = True
    signed = True
    libraries = ("torch", "timm", "captum")

    def __init__(self, model: nn.Module, cfg: Config | dict | None = None) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.input_size = model_input_size(model)
        self.batch_size = config_int(cfg, "attr_batch_size", DEFAULT_BATCH)

    def row_maps(self, images: Tensor, classes: Tensor) -> Tensor:
        """images [R, 3, h, w], classes [R] -> per-row maps [R, h, w]."""
        raise NotImplementedError

    def attribute(self, images: Tensor, img_idx: Tensor, cls: Tensor) -> Tensor:
        """Maps of all rows [R, h, w]; row r explains class ``cls[r]`` of image ``img_idx[r]``."""
        parts = [self.row_maps(images[img_idx[s]].requires_grad_(True), cls[s])
                 for s in chunks(len(cls), self.batch_size)]
        return torch.cat(parts) if parts else images.new_zeros((0, *images.shape[-2:]))

    def explain(self, images: Tensor, classes: Sequence[Sequence[int]]) -> list[Tensor]:
        if images.ndim != 4 or images.shape[0] != len(classes):
            raise ValueError(
                f"{type(self).__name__}.explain: images must be [B, 3, h, w] with one class list per image; "
                f"got images {tuple(images.shape)} and {len(classes)} class lists"
            )
        # inference_mode(False): a caller's inference tensors cannot enter an autograd graph; clone() makes a normal one
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().clone()
            img_idx, cls = expand_rows(classes, images.device)
            maps = self.attribute(images, img_idx, cls).detach().float()
        return list(maps.split([len(c) for c in classes]))


def channel_sum(attributions: Tensor) -> Tensor:
    """The signed per-pixel attribution: [R, C, h, w] summed over the input channels -> [R, h, w]."""
    return attributions.sum(dim=1)

