"""Build any timm classifier with 20 outputs and load backbone weights.

``pretrained`` may be ``True`` (timm's hub weights), ``False``, ``"lite_package"``
(offline ImageNet weights for ``efficientnet_lite0/1/2``; ``"lite0_package"`` is
the older name for Lite0) or a local checkpoint
file: a plain state dict or one of the usual wrappers of self-supervised
training code (``state_dict`` / ``model`` / ``teacher`` entries, ``module.`` /
``backbone.`` / ``base_encoder.`` prefixes). Only the classifier may be left
unloaded; anything else missing is an error that names the file and the keys.
"""
from __future__ import annotations

import difflib
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..errors import ConfigError, InputError, MissingInputError
from .lite import LITE0_PACKAGE, LITE_PACKAGE, LITE_VALUES, check_lite_network, load_lite_package

LOG = logging.getLogger(__name__)
# Entries that hold the weights in checkpoints of common training code; the
# first present one is used (DINO: teacher; ours / MoCo / mmselfsup: model, state_dict).
WRAPPER_KEYS: tuple[str, ...] = ("teacher", "state_dict", "model", "module", "net")
# Key prefixes of wrappers: DDP, torch.compile, MoCo v3 (base_encoder), DINO / mmselfsup (backbone).
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "base_encoder.", "backbone.", "encoder_q.")


class CheckpointMismatchError(InputError):
    """A checkpoint does not fit the model beyond its classifier."""


@dataclass
class LoadReport:
    """What a backbone load did: keys left at init, keys ignored, heads dropped."""

    source: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped_heads: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "") if keys else "none"

        return (f"{self.source}: missing (left at init): {few(self.missing)}; "
                f"unexpected (ignored): {few(self.unexpected)}; dropped heads: {few(self.dropped_heads)}")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def classifier_module_name(model: nn.Module) -> str:
    """Dotted name of the module returned by timm's ``get_classifier()`` (fc / classifier / head)."""
    model = unwrap_model(model)
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head and name:
            return name
    raise ValueError(f"{type(model).__name__}: classifier module not found among its submodules")


def classifier_param_names(model: nn.Module) -> list[str]:
    """State-dict names of the classifier's parameters and buffers (e.g. ``fc.weight``, ``fc.bias``)."""
    prefix = classifier_module_name(model) + "."
    return [k for k in unwrap_model(model).state_dict() if k.startswith(prefix)]


def is_vit(model: nn.Module) -> bool:
    """True for patch-token transformers (ViT, DeiT, ...): channels-last and CAM do not apply."""
    model = unwrap_model(model)
    return hasattr(model, "patch_embed") and hasattr(model, "blocks")


def _as_pretrained(value: Any) -> bool | str:
    """Normalise the config value: bools, 'true'/'false' strings, None/'' -> False, else a path."""
    if value is None or value is False or value == "":
        return False
    if value is True:
        return True
    if isinstance(value, str) and value.lower() in ("true", "false", "none"):
        return value.lower() == "true"
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    raise ConfigError(f"pretrained={value!r}: expected True, False, {LITE_PACKAGE!r} or a checkpoint path")


def create_timm_model(network: str, num_classes: int, kwargs: Mapping[str, Any]) -> nn.Module:
    """``timm.create_model`` without weights; bad keyword arguments become a :class:`ConfigError`."""
    try:
        return timm.create_model(network, pretrained=False, num_classes=num_classes, **dict(kwargs))
    except TypeError as exc:
        raise ConfigError(f"model_kwargs={dict(kwargs)!r}: not accepted by timm {network} ({exc})") from exc


def build_model(network: str, pretrained: bool | str = False, num_classes: int = 20, **kwargs: Any) -> nn.Module:
    """A timm model ``network`` with ``num_classes`` outputs and the requested initial weights.

    ``kwargs`` go to ``timm.create_model`` (e.g. ``img_size=64`` for a ViT,
    ``drop_path_rate``). Unknown network names raise with timm's close matches.
    """
    pretrained = _as_pretrained(pretrained)
    if not timm.is_model(network):
        close = difflib.get_close_matches(network, timm.list_models(), n=5, cutoff=0.6)
        raise ConfigError(f"network={network!r}: not a timm model" + (f" (similar: {', '.join(close)})" if close else ""))
    if pretrained is True:
        # timm replaces the 1000-class head by a fresh num_classes one.
        try:
            return timm.create_model(network, pretrained=True, num_classes=num_classes, **kwargs)
        except (OSError, RuntimeError) as exc:  # hub unreachable, file not in the cache
            raise ConfigError(
                f"network={network!r}, pretrained=True: timm could not get its pretrained weights ({exc}). "
                "Without network access, pass --options pretrained=/path/to/checkpoint.pth (a state dict or "
                "a wrapped checkpoint) or place the weights in the Hugging Face cache (HF_HUB_OFFLINE=1)."
            ) from exc
    if pretrained in LITE_VALUES:
        check_lite_network(network, str(pretrained))
    model = create_timm_model(network, num_classes, kwargs)
    if pretrained in LITE_VALUES:
        load_lite_package(model, network)
        LOG.info("loaded offline %s ImageNet weights (package)", network)
    elif pretrained:
        report = load_backbone_checkpoint(model, pretrained)
        LOG.info(report.summary())
        print(f"[model] {report.summary()}")
    return model


def build_model_from_cfg(cfg: Mapping[str, Any], load_pretrained: bool = True) -> nn.Module:
    """``build_model`` from config keys: network, pretrained (``pretrain`` overrides it), num_classes, model_kwargs.

    ``load_pretrained=False`` builds the bare architecture (resume, map stage).
    """
    pretrained = cfg.get("pretrain") or cfg.get("pretrained", False)
    return build_model(
        cfg["network"],
        pretrained=pretrained if load_pretrained else False,
        num_classes=int(cfg.get("num_classes", 20)),
        **dict(cfg.get("model_kwargs") or {}),
    )


# ------------------------------------------------------------- checkpoint files
def read_state_dict_file(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a checkpoint file, errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for non-tensor objects, EOFError/RuntimeError when truncated
        raise InputError(
            f"{path}: cannot read as a weights-only checkpoint ({type(exc).__name__}: {str(exc)[:300]}). "
            "If it also stores Python objects (e.g. argparse args), save its state dict alone: "
            "torch.save(ckpt['state_dict'], 'weights.pth') in a trusted session."
        ) from exc
    if not isinstance(obj, Mapping):
        raise InputError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def unwrap_state_dict(obj: Mapping[str, Any], model_keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Descend into wrapper entries and strip wrapper prefixes.

    For a prefix such as ``backbone.`` only keys with that prefix are kept
    (DINO / mmselfsup store their projection heads beside it; MoCo v3 its
    momentum encoder and predictor beside ``base_encoder.``). A prefix is left
    alone when the model itself has keys starting with it.
    """
    model_keys = model_keys or set()
    while True:
        entry = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if entry is None:
            break
        obj = obj[entry]
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if any(k.startswith(prefix) for k in model_keys):
                continue
            inner = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if inner:
                sd, changed = inner, True
    return sd


def _resample_pos_embed(model: nn.Module, value: torch.Tensor) -> torch.Tensor:
    """Interpolate a ViT position embedding to the model's patch grid (e.g. a 224 checkpoint at img_size=64)."""
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    grid = model.patch_embed.grid_size
    return resample_abs_pos_embed(value, new_size=list(grid), num_prefix_tokens=prefix)


def load_backbone_checkpoint(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load a (self-supervised) backbone checkpoint; only the classifier may stay at init.

    The checkpoint's own classifier or projection head (keys under the model's
    classifier name that are absent or shaped differently) is dropped.
    Raises :class:`CheckpointMismatchError` naming the file and the keys when a
    non-classifier weight is missing or has a different shape.
    """
    model = unwrap_model(model)
    own = model.state_dict()
    sd = unwrap_state_dict(read_state_dict_file(path), set(own))
    head_prefix = classifier_module_name(model) + "."
    head_keys = set(classifier_param_names(model))
    report = LoadReport(source=str(path))
    load: dict[str, torch.Tensor] = {}
    wrong_shape: list[str] = []
    for key, value in sd.items():
        if key.startswith(head_prefix) and (key not in own or own[key].shape != value.shape):
            report.dropped_heads.append(key)
        elif key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            if key == "pos_embed" and is_vit(model):
                load[key] = _resample_pos_embed(model, value)
            else:
                wrong_shape.append(f"{key} {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            load[key] = value
    report.missing = [k for k in own if k not in load]
    backbone_missing = [k for k in report.missing if k not in head_keys and not k.endswith("num_batches_tracked")]
    if wrong_shape or backbone_missing:
        problems = []
        if wrong_shape:
            problems.append(f"shape mismatch: {', '.join(wrong_shape[:6])}")
        if backbone_missing:
            more = f" (+{len(backbone_missing) - 8} more)" if len(backbone_missing) > 8 else ""
            problems.append(f"{len(backbone_missing)} backbone weights missing: {', '.join(backbone_missing[:8])}{more}")
        raise CheckpointMismatchError(
            f"{path}: does not fit {type(model).__name__} beyond its classifier ({'; '.join(problems)}). "
            "Is it a checkpoint of this network?"
        )
    model.load_state_dict(load, strict=False)
    if report.unexpected:
        warnings.warn(f"{path}: {len(report.unexpected)} checkpoint weights not used by {type(model).__name__} "
                      f"(unexpected): {', '.join(report.unexpected[:6])}", stacklevel=2)
    return report
