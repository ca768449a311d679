"""The architecture record of a checkpoint: everything needed to rebuild the exact trained network.

Training writes ``arch`` (a JSON-able dict, :class:`ModelSpec`) into every
checkpoint: the timm name, the constructor's keyword arguments, the number of
classes, every change made after construction (BatchNorm epsilons that a
weight loader set, e.g. 1e-3 for the TF-trained EfficientNet-Lite weights), an
optional probe head, and the input the network was trained on (size, mean,
std). Every stage rebuilds its network from this record with
:func:`load_trained_model`; the config may add what the record lacks but never
contradict it (a contradiction is a :class:`~dywsss.errors.ConfigError` naming
both values). A checkpoint without the record (older runs, foreign state dicts)
still loads, from the config, with a warning.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError, InputError
from .builder import create_timm_model, read_state_dict_file, unwrap_model
from .lite import LITE_BN_EPS, LITE_VALUES

ARCH_KEY = "arch"
SPEC_VERSION = 1
#: ``norm_eps`` key meaning "every BatchNorm layer".
ALL_BATCHNORM = "*"


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a trained network (``arch`` in a checkpoint)."""

    network: str
    num_classes: int = 20
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: BatchNorm eps set after construction: ``{"*": eps}`` for all layers, else per module name.
    norm_eps: dict[str, float] = field(default_factory=dict)
    #: Probe head on a frozen backbone (issue 13): ``{"type": name, "kwargs": {...}}``, else None.
    head: dict[str, Any] | None = None
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: Where the initial weights came from (informational; does not change the architecture).
    init: str = ""
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | os.PathLike = "") -> ModelSpec:
        try:
            return cls(network=str(data["network"]), num_classes=int(data["num_classes"]),
                       model_kwargs=dict(data.get("model_kwargs") or {}),
                       norm_eps={str(k): float(v) for k, v in (data.get("norm_eps") or {}).items()},
                       head=dict(data["head"]) if data.get("head") else None,
                       input_size=int(data.get("input_size", 224)),
                       mean=tuple(float(v) for v in data.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
                       std=tuple(float(v) for v in data.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
                       init=str(data.get("init", "")), version=int(data.get("version", SPEC_VERSION)))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: malformed architecture record ({exc!r})") from exc


def _norm_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def norm_eps_changes(model: nn.Module, network: str, num_classes: int, model_kwargs: Mapping[str, Any]) -> dict[str, float]:
    """BatchNorm epsilons of ``model`` that differ from a freshly constructed ``network``.

    The fresh model is built on the meta device (no memory, no weights). All
    changed layers sharing one value are recorded as ``{"*": eps}``.
    """
    with torch.device("meta"):
        fresh = create_timm_model(network, num_classes, model_kwargs)
    ours, ref = _norm_layers(unwrap_model(model)), _norm_layers(fresh)
    changed = {n: float(m.eps) for n, m in ours.items() if n in ref and m.eps != ref[n].eps}
    values = set(changed.values())
    if changed and len(changed) == len(ours) and len(values) == 1:
        return {ALL_BATCHNORM: values.pop()}
    return changed


def apply_norm_eps(model: nn.Module, norm_eps: Mapping[str, float]) -> None:
    layers = _norm_layers(model)
    for name, eps in norm_eps.items():
        targets = layers.values() if name == ALL_BATCHNORM else [layers[name]] if name in layers else None
        if targets is None:
            raise InputError(f"architecture record names BatchNorm layer {name!r}, which the model lacks")
        for m in targets:
            m.eps = float(eps)


def describe_model(model: nn.Module, cfg: Mapping[str, Any]) -> ModelSpec:
    """The record of a model built from ``cfg`` (network, num_classes, model_kwargs, crop_size, pretrained)."""
    network, num_classes = str(cfg["network"]), int(cfg.get("num_classes", 20))
    kwargs = dict(cfg.get("model_kwargs") or {})
    probe = getattr(unwrap_model(model), "probe_spec", None)
    head = None
    if callable(probe):  # a probe head on a frozen backbone (dywsss.models.probes)
        p = probe()
        head = {"type": p["head"], "kwargs": dict(p["head_kwargs"]), "num_features": int(p["num_features"]),
                # how the outputs are read (sigmoid for BCE, softmax for CE probes) and the probe's own loss
                "loss": str(cfg.get("probe_loss", "bce")), "off_value": cfg.get("probe_bce_off_value", 0.0)}
    return ModelSpec(network=network, num_classes=num_classes, model_kwargs=kwargs,
                     norm_eps=norm_eps_changes(_backbone(model), network, num_classes, kwargs),
                     head=head, input_size=int(cfg.get("crop_size", 224)),
                     init=str(cfg.get("pretrain") or cfg.get("pretrained", False)))


def _backbone(model: nn.Module) -> nn.Module:
    """The timm network inside a probe model (``backbone``), else the model itself."""
    model = unwrap_model(model)
    return getattr(model, "backbone", model) if getattr(model, "probe_spec", None) else model


def spec_from_cfg(cfg: Mapping[str, Any]) -> ModelSpec:
    """The record a checkpoint without one is assumed to have: the config's model keys.

    Known post-construction changes are inferred from ``pretrained`` (the
    EfficientNet-Lite packages set BatchNorm eps 1e-3).
    """
    init = cfg.get("pretrain") or cfg.get("pretrained", False)
    return ModelSpec(network=str(cfg["network"]), num_classes=int(cfg.get("num_classes", 20)),
                     model_kwargs=dict(cfg.get("model_kwargs") or {}),
                     norm_eps={ALL_BATCHNORM: LITE_BN_EPS} if init in LITE_VALUES else {},
                     input_size=int(cfg.get("crop_size", 224)), init=str(init))


def build_from_spec(spec: ModelSpec) -> nn.Module:
    """The untrained network of ``spec`` (no weights loaded), with its recorded changes applied."""
    model = create_timm_model(spec.network, spec.num_classes if spec.head is None else 0, spec.model_kwargs)
    apply_norm_eps(model, spec.norm_eps)
    if spec.head is not None:
        from .probes import build_probe_model

        model = build_probe_model(model, spec.head["type"], spec.num_classes, **dict(spec.head.get("kwargs") or {}))
        if spec.head.get("num_features") not in (None, model.num_features):
            raise InputError(f"architecture record: {spec.network} gives {model.num_features} features, the record "
                             f"says {spec.head['num_features']}")
    return model


#: Record fields the config must agree with: (spec attribute, config key).
CHECKED_KEYS: tuple[tuple[str, str], ...] = (
    ("network", "network"), ("num_classes", "num_classes"), ("model_kwargs", "model_kwargs"),
    ("input_size", "crop_size"),
)


def check_cfg_against_spec(spec: ModelSpec, cfg: Mapping[str, Any], source: str | os.PathLike) -> None:
    """Raise a :class:`ConfigError` naming both values where the config contradicts the record."""
    clashes = []
    for attr, key in CHECKED_KEYS:
        if key not in cfg:
            continue
        ours, theirs = getattr(spec, attr), cfg[key]
        if key == "model_kwargs":
            theirs = dict(theirs or {})
        elif key in ("num_classes", "crop_size"):
            theirs = int(theirs)
        if ours != theirs:
            clashes.append(f"{key}={theirs!r} in the config but {ours!r} in the checkpoint")
    if clashes:
        raise ConfigError(f"{source}: the config contradicts the checkpoint's architecture record: "
                          f"{'; '.join(clashes)}. Pass the checkpoint's values (--options ...) or use the "
                          "session's own config.py")


@dataclass(frozen=True)
class TrainedModel:
    """A network rebuilt from a checkpoint, its record, and the checkpoint's identity."""

    model: nn.Module
    spec: ModelSpec
    path: Path
    sha256: str
    recorded: bool  # False: the checkpoint had no ``arch`` record (rebuilt from the config)


def read_spec(ckpt: Mapping[str, Any], cfg: Mapping[str, Any] | None, path: str | os.PathLike) -> tuple[ModelSpec, bool]:
    """The checkpoint's record (checked against ``cfg``), or the config's with a warning when it has none."""
    if isinstance(ckpt.get(ARCH_KEY), Mapping):
        spec = ModelSpec.from_dict(ckpt[ARCH_KEY], path)
        if cfg is not None:
            check_cfg_against_spec(spec, cfg, path)
        return spec, True
    if cfg is None:
        raise InputError(f"{path}: no architecture record (an older or foreign checkpoint); pass a config "
                         "naming network, num_classes and model_kwargs")
    spec = spec_from_cfg(cfg)
    warnings.warn(f"{path}: no architecture record (checkpoint from an older version or another tool); rebuilding "
                  f"network={spec.network} from the config (BatchNorm eps {spec.norm_eps or 'default'}). Retrain to "
                  "get a self-describing checkpoint.", stacklevel=3)
    return spec, False


def load_trained_model(path: str | os.PathLike, cfg: Mapping[str, Any] | None = None,
                       device: torch.device | str = "cpu") -> TrainedModel:
    """Rebuild the trained network of checkpoint ``path`` (eval mode, on ``device``).

    The record in the checkpoint decides the architecture; ``cfg`` may only agree
    with it. The weights load strictly. The result carries the file's sha256.
    """
    from ..provenance import sha256_file
    from .checkpoint import state_dict_of, strict_load, strip_advprop

    path = Path(path)
    ckpt = read_state_dict_file(path)
    spec, recorded = read_spec(ckpt, cfg, path)
    model = build_from_spec(spec)
    weights = state_dict_of(ckpt)
    if str(ckpt.get("adv_train", "none")).startswith("advprop"):
        weights = strip_advprop(weights)  # evaluation uses the main BatchNorms
    strict_load(model, weights, path)
    return TrainedModel(model.to(device).eval(), spec, path, sha256_file(path), recorded)


def load_session_model(cfg: Mapping[str, Any], device: torch.device | str = "cpu") -> TrainedModel:
    """The trained network of a session: ``work_dirs/<session>/model/<weights>`` rebuilt from its record."""
    from ..config import session_paths
    from ..errors import MissingInputError

    path = session_paths(cfg).weights_file(cfg["weights"])
    if not path.is_file():
        raise MissingInputError(f"{path}: weights not found (weights={cfg['weights']!r}); train first or pass "
                                "weights=PATH")
    return load_trained_model(path, cfg, device)
