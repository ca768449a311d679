"""Adversarial training pieces: PGD attacks (L2, Linf) and AdvProp's auxiliary BatchNorms (beyond-spec §3.4).

**Input convention.** Models see normalised images ``x_n = (x - mean) / std``
(per channel, ``dywsss.data.transforms.IMAGENET_MEAN/STD``) while epsilon and
step sizes are given in **[0, 1] pixel units**, as in the robustness literature
(e.g. Linf 4/255, L2 3.0 at 224 px). The attack works on a pixel-space
perturbation ``delta`` and feeds ``x_n + delta / std`` to the model, so the
ball is exact in pixel space: in normalised space it is stretched by ``1 / std``
per channel. The adversarial pixels are kept in [0, 1], i.e. ``x_n + delta / std``
in ``[(0 - mean) / std, (1 - mean) / std]``.

**PGD** (Madry et al. 2018): ``steps`` iterations of ``delta <- Proj_eps(delta +
alpha * d)`` with ``d = sign(grad)`` (Linf) or ``grad / ||grad||_2`` per sample (L2),
then the pixel box. Random start: Linf uniform in ``[-eps, eps]``; L2 a uniformly
random direction scaled to a radius ``eps * u``, u ~ U(0, 1). Default step size
``2.5 * eps / steps`` (Madry's rule). Gradients come from ``torch.autograd.grad``
with respect to ``delta`` only, so parameters' ``.grad`` are untouched; BatchNorm
running statistics are frozen during the attack (``keep_bn_stats``).

**AdvProp** (Xie et al., CVPR 2020): every BatchNorm gets an auxiliary twin
used for adversarial examples, the main ones for clean images and for
evaluation. :func:`convert_advprop` keeps each BatchNorm's own parameters and
buffers under their usual names (``layer1.0.bn1.weight``) and adds the twin as a
child named ``aux_bn`` (``layer1.0.bn1.aux_bn.weight``), initialised as a copy.
:func:`bn_route` selects which set a forward uses. :func:`strip_advprop`
drops every ``aux_bn`` entry, so the state dict loads into a plain model.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..metrics.classification import multilabel_bce
from ..models.checkpoint import AUX_BN, is_aux_key, strip_advprop  # noqa: F401  (re-exported)

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NORMS = ("linf", "l2")
AUX_NAME = AUX_BN
ROUTES = ("main", "aux")
ADV_TRAIN_MODES = ("none", "pgd_l2", "pgd_linf", "advprop_l2", "advprop_linf")


def _channel_view(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, *([1] * (like.dim() - 2)))


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``delta`` projected onto the ``norm`` ball of radius ``eps`` (per sample)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = _per_sample_norm(delta)
        return delta * torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
    raise ConfigError(f"norm={norm!r}: choose one of {', '.join(NORMS)}")


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest ascent direction of unit ``norm``: ``sign(g)`` (Linf) or ``g / ||g||_2`` (L2)."""
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        return grad / _per_sample_norm(grad).clamp_min(1e-12)
    raise ConfigError(f"norm={norm!r}: choose one of {', '.join(NORMS)}")


def random_start(like: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random point of the ball (see the module docstring)."""
    if norm == "linf":
        return (torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype) * 2 - 1) * eps
    if norm == "l2":
        d = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        d = d / _per_sample_norm(d).clamp_min(1e-12)
        r = torch.rand((like.shape[0],) + (1,) * (like.dim() - 1), generator=generator, device=like.device,
                       dtype=like.dtype)
        return d * r * eps
    raise ConfigError(f"norm={norm!r}: choose one of {', '.join(NORMS)}")


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics unchanged inside (momentum 0); a train-mode forward still
    normalises with batch statistics, as in training."""
    saved = [(m, m.momentum) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        for m, _ in saved:
            m.momentum = 0.0
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


def multilabel_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The training objective: Eq. 7 (:func:`multilabel_bce`) averaged over the batch."""
    return multilabel_bce(logits.float(), labels.float()).mean()


@dataclass(frozen=True)
class PGDConfig:
    """A PGD attack: ``norm`` (``l2`` | ``linf``), ``eps`` and ``step_size`` in [0, 1] pixel units.

    ``step_size=None`` means ``2.5 * eps / steps``.
    """

    norm: str = "l2"
    eps: float = 1.0
    steps: int = 3
    step_size: float | None = None
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"PGD norm={self.norm!r}: choose one of {', '.join(NORMS)}")
        if not self.eps >= 0:
            raise ConfigError(f"adv_eps={self.eps!r}: must be >= 0 (pixel units, [0, 1] scale)")
        if int(self.steps) < 1:
            raise ConfigError(f"adv_steps={self.steps!r}: must be >= 1")
        if self.step_size is not None and not self.step_size > 0:
            raise ConfigError(f"adv_step_size={self.step_size!r}: must be > 0 (or None for 2.5 * eps / steps)")

    @property
    def alpha(self) -> float:
        return float(self.step_size) if self.step_size is not None else 2.5 * self.eps / int(self.steps)


def pgd_attack(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: PGDConfig, loss_fn: Loss = multilabel_loss,
    mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
    generator: torch.Generator | None = None, keep_bn_stats: bool = True,
) -> torch.Tensor:
    """Adversarial versions of normalised ``images`` [B, C, H, W] that raise ``loss_fn(model(x), labels)``.

    Returns normalised images (detached) within ``config.eps`` of ``images`` in pixel
    units and inside the valid pixel range. The model's train/eval mode is left as is.
    """
    x = images.detach()
    std_t, mean_t = _channel_view(std, x), _channel_view(mean, x)
    lo, hi = (0 - mean_t) / std_t, (1 - mean_t) / std_t

    def to_input(delta: torch.Tensor) -> torch.Tensor:
        return torch.max(torch.min(x + delta / std_t, hi), lo)

    def box(delta: torch.Tensor) -> torch.Tensor:  # delta such that the input stays in [0, 1] pixels
        return (to_input(delta) - x) * std_t

    if config.eps == 0:
        return x.clone()
    delta = random_start(x, config.eps, config.norm, generator) if config.random_start else torch.zeros_like(x)
    delta = box(project(delta, config.eps, config.norm))
    ctx = frozen_bn_stats(model) if keep_bn_stats else contextlib.nullcontext()
    with ctx, torch.enable_grad():
        for _ in range(int(config.steps)):
            delta.requires_grad_(True)
            loss = loss_fn(model(to_input(delta)), labels)
            (grad,) = torch.autograd.grad(loss, delta)
            step = delta.detach() + config.alpha * ascent_direction(grad, config.norm)
            delta = box(project(step, config.eps, config.norm)).detach()
    return to_input(delta).detach()


# ------------------------------------------------------------------ AdvProp
class _AdvPropBN:
    """Mixin put in front of a BatchNorm class by :func:`convert_advprop`: routes to ``aux_bn``."""

    _advprop_route: str = "main"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self._advprop_route == "aux":
            return getattr(self, AUX_NAME)(x)
        return super().forward(x)  # type: ignore[misc]


_DUAL_CLASSES: dict[type, type] = {}


def _dual_class(cls: type) -> type:
    if cls not in _DUAL_CLASSES:
        _DUAL_CLASSES[cls] = type(f"AdvProp{cls.__name__}", (_AdvPropBN, cls), {})
    return _DUAL_CLASSES[cls]


def advprop_modules(model: nn.Module) -> list[nn.Module]:
    """The converted BatchNorms of ``model``."""
    return [m for m in model.modules() if isinstance(m, _AdvPropBN)]


def convert_advprop(model: nn.Module) -> nn.Module:
    """Give every BatchNorm (including subclasses such as timm's ``BatchNormAct2d``) an auxiliary
    twin ``aux_bn`` (a copy, so it starts from the same statistics); in place, returns ``model``.

    Converting twice is an error; a model without BatchNorm is an error (AdvProp would do nothing).
    """
    if advprop_modules(model):
        raise ValueError("model already has AdvProp auxiliary BatchNorms")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ConfigError(f"AdvProp needs BatchNorm layers; {type(model).__name__} has none (use adv_train=pgd_*)")
    for bn in bns:
        aux = copy.deepcopy(bn)
        bn.__class__ = _dual_class(type(bn))
        bn.add_module(AUX_NAME, aux)
    return model


@contextlib.contextmanager
def bn_route(model: nn.Module, route: str) -> Iterator[nn.Module]:
    """Forwards inside use the ``main`` or the ``aux`` BatchNorms; the previous route is restored."""
    if route not in ROUTES:
        raise ValueError(f"route={route!r}: choose one of {', '.join(ROUTES)}")
    mods = advprop_modules(model)
    if not mods:
        raise ValueError("model has no AdvProp BatchNorms; call convert_advprop first")
    saved = [m._advprop_route for m in mods]
    try:
        for m in mods:
            m._advprop_route = route
        yield model
    finally:
        for m, r in zip(mods, saved):
            m._advprop_route = r


# ------------------------------------------------------------ training step
@dataclass(frozen=True)
class AdvTrainConfig:
    """Adversarial training of one run, from config keys (see :meth:`from_cfg`)."""

    mode: str = "none"
    pgd: PGDConfig = PGDConfig()
    clean_loss: bool = False

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def advprop(self) -> bool:
        return self.mode.startswith("advprop")

    @classmethod
    def from_cfg(cls, cfg: Mapping) -> "AdvTrainConfig":
        """Keys: ``adv_train`` (none | pgd_l2 | pgd_linf | advprop_l2 | advprop_linf), ``adv_eps``,
        ``adv_steps``, ``adv_step_size`` (None: 2.5 eps / steps), ``adv_random_start``,
        ``adv_clean_loss`` (pgd_*: also the clean loss, averaged with the adversarial one)."""
        mode = str(cfg.get("adv_train", "none") or "none")
        if mode not in ADV_TRAIN_MODES:
            raise ConfigError(f"adv_train={mode!r}: choose one of {', '.join(ADV_TRAIN_MODES)}")
        if mode == "none":
            return cls()
        step = cfg.get("adv_step_size", None)
        pgd = PGDConfig(norm=mode.rsplit("_", 1)[1], eps=float(cfg.get("adv_eps", 1.0)),
                        steps=int(cfg.get("adv_steps", 3)), step_size=None if step is None else float(step),
                        random_start=bool(cfg.get("adv_random_start", True)))
        return cls(mode, pgd, bool(cfg.get("adv_clean_loss", False)))


def adversarial_loss(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AdvTrainConfig,
    loss_fn: Loss = multilabel_loss, mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225), generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The training loss of one batch under ``config`` (to ``.backward()`` as usual).

    ``none``: the clean loss. ``pgd_*`` (Madry): the loss on PGD examples (with
    ``clean_loss``, the mean of clean and adversarial). ``advprop_*`` (Xie et al.):
    clean loss through the main BNs plus adversarial loss through the auxiliary BNs,
    the examples made against the auxiliary BNs; the model must be converted.
    """
    if not config.enabled:
        return loss_fn(model(images), labels)
    if config.advprop:
        with bn_route(model, "aux"):
            adv = pgd_attack(model, images, labels, config.pgd, loss_fn, mean, std, generator)
            adv_loss = loss_fn(model(adv), labels)
        with bn_route(model, "main"):
            return loss_fn(model(images), labels) + adv_loss
    adv = pgd_attack(model, images, labels, config.pgd, loss_fn, mean, std, generator)
    adv_loss = loss_fn(model(adv), labels)
    if config.clean_loss:
        return 0.5 * (loss_fn(model(images), labels) + adv_loss)
    return adv_loss
