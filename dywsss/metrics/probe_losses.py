"""Probe training objectives ("How to Probe", beyond-spec §1.2), registered by name (``probe_loss``).

- ``bce`` (Eq. 4): binary cross-entropy with logits per class, targets 1 for present
  classes and ``off_value`` for absent ones (0 by default; the authors' B-cos and
  ImageNet code use 1/C). Per image it is the mean over the C classes, the
  convention of the toolkit's Eq. 7 (:func:`dywsss.metrics.classification.multilabel_bce`)
  and of the authors' ``reduction='mean'``; Eq. 4 sums, which only rescales by C.
- ``ce`` (Eq. 1): softmax cross-entropy with the multi-label target t = y / Σy
  (beyond-spec §1.6 default). Shift-invariant: adding δ_i to every logit of image i
  leaves it unchanged (Eq. 2-3), which is the paper's argument against CE probes.

Each loss gives per-image values [B]; ``probs`` turns logits into the scores the
probe is evaluated with (sigmoid for BCE, softmax for CE).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class ProbeLoss:
    """A registered objective: per-image loss ``(logits, labels, off_value) -> [B]`` and its probabilities."""

    name: str
    per_image: Callable[..., torch.Tensor]
    probs: Callable[[torch.Tensor], torch.Tensor]


PROBE_LOSSES: Registry[ProbeLoss] = Registry("probe loss")


def bce_per_image(logits: torch.Tensor, labels: torch.Tensor, off_value: float = 0.0) -> torch.Tensor:
    """Eq. 4 with targets ``max(y, off_value)``, averaged over classes: [B]."""
    targets = labels.to(logits.dtype).clamp(min=float(off_value))
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=1)


def ce_per_image(logits: torch.Tensor, labels: torch.Tensor, off_value: float = 0.0) -> torch.Tensor:
    """Eq. 1 with t = y / Σy: ``-Σ_c t_c log softmax(logits)_c``, [B] (an image without labels gives 0)."""
    y = labels.to(logits.dtype)
    targets = y / y.sum(dim=1, keepdim=True).clamp(min=1.0)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)


PROBE_LOSSES.register("bce")(ProbeLoss("bce", bce_per_image, torch.sigmoid))
PROBE_LOSSES.register("ce")(ProbeLoss("ce", ce_per_image, lambda logits: torch.softmax(logits, dim=1)))


def get_probe_loss(name: str) -> ProbeLoss:
    """The registered loss ``name``; an unknown name is a one-line :class:`ConfigError`."""
    try:
        return PROBE_LOSSES.get(name)
    except KeyError as exc:
        raise ConfigError(f"probe_loss={name!r}: {exc}") from None


def output_probs(logits: torch.Tensor, head: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Class probabilities of a model's logits as it was trained: the probe loss's (softmax for a CE
    probe) when ``head`` (``ModelSpec.head``, the checkpoint's ``arch`` record) names a loss, else
    sigmoid (Eq. 7; every other model of the toolkit)."""
    if head and head.get("loss"):
        return get_probe_loss(str(head["loss"])).probs(logits)
    return torch.sigmoid(logits)


def output_kind(head: Mapping[str, Any] | None = None) -> str:
    """What :func:`output_probs` applies, for records: ``sigmoid`` or ``probe (<loss>)``."""
    return f"probe ({head['loss']})" if head and head.get("loss") else "sigmoid"


def resolve_off_value(value: float | str | None, num_classes: int) -> float:
    """``probe_bce_off_value``: a number in [0, 1), or the string ``"1/C"`` (the authors' code) -> 1/num_classes."""
    if value is None:
        return 0.0
    if isinstance(value, str) and value.replace(" ", "").upper() == "1/C":
        return 1.0 / int(num_classes)
    try:
        off = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"probe_bce_off_value={value!r}: expected a number in [0, 1) or '1/C'") from None
    if isinstance(value, bool) or not 0.0 <= off < 1.0:
        raise ConfigError(f"probe_bce_off_value={value!r}: expected a number in [0, 1) or '1/C'")
    return off
