"""Which training and map recipe a run used: the original code's, or which of the toolkit's options.

Where the authors' code and the toolkit differ (issue 10), both are available
behind a named config key; :data:`ORIGINAL` holds the original's value of each.
:func:`recipe_of` names a run's recipe for every output (checkpoints, map
records, per-sample records, report): ``original``, or ``original except
key=value, ...`` listing the keys set otherwise. Keys that do not apply to the
run (the ViT map protocol for a CNN, BatchNorm mode without fine-tuning) are
left out.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The original code's choice for each recipe key (vice-spec, stage 1-2; issue 10).
ORIGINAL: dict[str, Any] = {
    "lr_warmup": "epoch",            # GradualWarmupScheduler stepped per epoch; milestones shifted by warmup
    "finetune_bn": "train",          # classifier-only training keeps model.train(): BN statistics adapt
    "amp": False,                    # fp32 training and validation
    "val_drop_last": True,           # best.pth chosen on the first floor(N / batch) * batch val images
    "vit_map_protocol": "original",  # PIL resize to the input, relevance min-max at the input size
}
#: Keys of the network's own training, which a probe on a frozen backbone (``probe`` set) does not use.
TRAINING_KEYS = ("lr_warmup", "finetune_bn", "amp", "val_drop_last")
TRANSFORMER_MARKERS = ("vit", "deit", "beit", "swin", "eva", "cait", "xcit")


def is_transformer_name(network: str) -> bool:
    return any(m in str(network).lower() for m in TRANSFORMER_MARKERS)


def applicable_keys(cfg: Mapping[str, Any]) -> list[str]:
    keys = [k for k in ORIGINAL if not (cfg.get("probe") and k in TRAINING_KEYS)]
    if not is_transformer_name(cfg.get("network", "")):
        keys.remove("vit_map_protocol")
    if not cfg.get("finetune", False) and "finetune_bn" in keys:
        keys.remove("finetune_bn")
    return keys


def recipe_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe keys that apply to this run, with their values."""
    return {k: cfg.get(k) for k in applicable_keys(cfg)}


def recipe_of(cfg: Mapping[str, Any]) -> str:
    """``original`` or ``original except k=v, ...`` for the run's config; for a probe (``probe`` set)
    ``probe <head> (<loss>, <probe recipe>, <epochs> epochs) on frozen <network>; maps: original ...``."""
    differ = [f"{k}={v}" for k, v in recipe_settings(cfg).items() if v != ORIGINAL[k]]
    label = "original" if not differ else "original except " + ", ".join(differ)
    if cfg.get("probe"):
        return (f"probe {cfg.get('probe')} ({cfg.get('probe_loss', 'bce')}, {cfg.get('probe_recipe', 'adam')}, "
                f"{cfg.get('probe_epochs', 50)} epochs) on frozen {cfg.get('network')}; maps: {label}")
    return label


def describe_recipe(cfg: Mapping[str, Any]) -> str:
    """``original (lr_warmup=epoch, amp=False, ...)``: the label and every applicable setting; the label
    alone when no recipe key applies (a probe on a CNN: no training key, no ViT map protocol)."""
    settings = ", ".join(f"{k}={v}" for k, v in recipe_settings(cfg).items())
    return f"{recipe_of(cfg)} ({settings})" if settings else recipe_of(cfg)
