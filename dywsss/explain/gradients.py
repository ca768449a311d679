"""Gradient attributions through captum: gradient, input x gradient, SmoothGrad, guided backprop.

Each row is one (image, class) pair and explains the class logit. Rows are
chunked by ``attr_batch_size``; the model is in eval mode, so rows do not
interact and the maps do not depend on the batching.

- ``gradient`` (Simonyan et al. 2014, Sec. 3.1): ``max_c |d logit / d x_c|``
  over the colour channels c; unsigned. captum ``Saliency(abs=True)``.
- ``input_x_gradient`` (Shrikumar et al. 2016): ``sum_c x_c * d logit / d x_c``;
  signed. captum ``InputXGradient``.
- ``smoothgrad`` (Smilkov et al. 2017): the gradient map averaged over noisy
  copies ``x + sigma * n_s``, ``sigma = smoothgrad_sd * (max(x) - min(x))`` per
  image, ``n_s`` from one seeded noise bank (:func:`noise_bank`) shared by all
  images, then max over channels; unsigned. The mean over samples of captum's
  ``Saliency(abs=True)`` is what captum's ``NoiseTunnel(Saliency)`` computes,
  but NoiseTunnel draws its noise from the global generator per call, which
  would make an image's map depend on its batch neighbours.
- ``guided_backprop`` (Springenberg et al. 2015): the gradient with every
  ReLU-type activation passing only positive gradients back; signed channel
  sum. captum ``GuidedBackprop``, extended from ``nn.ReLU`` to ReLU6 and
  LeakyReLU (EfficientNet-Lite uses ReLU6).
"""
from __future__ import annotations

from typing import Any

import torch
from mmengine.config import Config
from torch import Tensor, nn

from ..errors import ConfigError
from . import EXPLAINERS
from ._input_space import DEFAULT_SEED, InputSpaceExplainer, channel_sum, chunks, config_float, config_int


@EXPLAINERS.register("gradient")
class Gradient(InputSpaceExplainer):
    """Simonyan et al. 2014: ``max_c |d logit_k / d x_c|`` per pixel (unsigned)."""

    signed = False

    def __init__(self, model: nn.Module, cfg: Config | dict | None = None) -> None:
        from captum.attr import Saliency

        super().__init__(model, cfg)
        self.saliency = Saliency(self.model)

    def row_maps(self, images: Tensor, classes: Tensor) -> Tensor:
        return self.saliency.attribute(images, target=classes, abs=True).amax(dim=1)

    def method_params(self) -> dict[str, Any]:
        return dict(reduction="max over channels of |gradient|")


@EXPLAINERS.register("input_x_gradient")
class InputXGradientMaps(InputSpaceExplainer):
    """Shrikumar et al. 2016: ``sum_c x_c * d logit_k / d x_c`` per pixel (signed)."""

    def __init__(self, model: nn.Module, cfg: Config | dict | None = None) -> None:
        from captum.attr import InputXGradient

        super().__init__(model, cfg)
        self.ixg = InputXGradient(self.model)

    def row_maps(self, images: Tensor, classes: Tensor) -> Tensor:
        return channel_sum(self.ixg.attribute(images, target=classes))

    def method_params(self) -> dict[str, Any]:
        return dict(reduction="sum over channels")


def noise_bank(samples: int, shape: tuple[int, ...], seed: int, device: torch.device | None = None) -> Tensor:
    """Standard normal noise [samples, *shape] from a CPU generator seeded with ``seed`` (same on every device)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((samples, *shape), generator=gen).to(device)


@EXPLAINERS.register("smoothgrad")
class SmoothGrad(InputSpaceExplainer):
    """Smilkov et al. 2017: ``max_c mean_s |d logit_k / d x_c (x + sigma n_s)|`` (unsigned).

    Keys: ``smoothgrad_samples`` (int >= 1, default 50), ``smoothgrad_sd``
    (float > 0, default 0.15; sigma = sd x (max - min) of each image), ``random_seed``.
    """

    signed = False

    def __init__(self, model: nn.Module, cfg: Config | dict | None = None) -> None:
        from captum.attr import Saliency

        super().__init__(model, cfg)
        self.samples = config_int(cfg, "smoothgrad_samples", 50)
        self.sd = config_float(cfg, "smoothgrad_sd", 0.15, low=0.0)
        self.seed = config_int(cfg, "random_seed", DEFAULT_SEED, minimum=0)
        self.saliency = Saliency(self.model)

    def attribute(self, images: Tensor, img_idx: Tensor, cls: Tensor) -> Tensor:
        """Chunks of at most ``attr_batch_size`` (row, sample) pairs; rows index the images, never copy them all."""
        S = self.samples
        bank = noise_bank(S, tuple(images.shape[1:]), self.seed, images.device).to(images.dtype)
        flat = images.flatten(1)
        sigma = self.sd * (flat.amax(dim=1) - flat.amin(dim=1))  # per image
        pair_row = torch.arange(len(cls), device=images.device).repeat_interleave(S)  # pair p: row p // S, sample p % S
        pair_sample = torch.arange(S, device=images.device).repeat(len(cls))
        total = images.new_zeros((len(cls), *images.shape[1:]))
        for s in chunks(len(pair_row), self.batch_size):
            r, k = pair_row[s], pair_sample[s]
            i = img_idx[r]
            noisy = (images[i] + sigma[i].view(-1, 1, 1, 1) * bank[k]).detach().requires_grad_(True)
            total.index_add_(0, r, self.saliency.attribute(noisy, target=cls[r], abs=True))
        return (total / S).amax(dim=1)

    def method_params(self) -> dict[str, Any]:
        return dict(smoothgrad_samples=self.samples, smoothgrad_sd=self.sd, random_seed=self.seed,
                    noise="one seeded bank [samples, 3, h, w] for all images, scaled by sd x (max - min) per image",
                    reduction="max over channels of the mean |gradient|")


#: Activations whose backward pass guided backprop rectifies.
GUIDED_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)


def _guided_backprop_class() -> type:
    """captum's GuidedBackprop, hooking every activation of :data:`GUIDED_ACTIVATIONS` (captum: nn.ReLU only)."""
    from captum._utils.common import _register_backward_hook
    from captum.attr import GuidedBackprop

    class ReLUFamilyGuidedBackprop(GuidedBackprop):
        def _register_hooks(self, module: nn.Module) -> None:
            if isinstance(module, GUIDED_ACTIVATIONS):
                self.backward_hooks.extend(_register_backward_hook(module, self._backward_hook, self))

    return ReLUFamilyGuidedBackprop


@EXPLAINERS.register("guided_backprop")
class GuidedBackpropMaps(InputSpaceExplainer):
    """Springenberg et al. 2015: the gradient with negative gradients stopped at every ReLU (signed channel sum)."""

    def __init__(self, model: nn.Module, cfg: Config | dict | None = None) -> None:
        super().__init__(model, cfg)
        self.activations = sorted({type(m).__name__ for m in model.modules() if isinstance(m, GUIDED_ACTIVATIONS)})
        if not self.activations:
            found = sorted({type(m).__name__ for m in model.modules()
                            if type(m).__module__.startswith("torch.nn.modules.activation")})
            raise ConfigError(
                f"cam_method=guided_backprop: {type(model).__name__} has no ReLU-type activation module "
                f"(found: {', '.join(found) or 'none'}); guided backprop would equal the plain gradient. "
                "Use cam_method=gradient or smoothgrad."
            )
        self.gbp = _guided_backprop_class()(self.model)

    def row_maps(self, images: Tensor, classes: Tensor) -> Tensor:
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            return channel_sum(self.gbp.attribute(images, target=classes))

    def method_params(self) -> dict[str, Any]:
        return dict(guided_activations=self.activations, reduction="sum over channels")
