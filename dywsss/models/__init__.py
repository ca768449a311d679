"""timm classifiers with 20 outputs, backbone-weight loading and training checkpoints."""
from .builder import (
    CheckpointMismatchError,
    LoadReport,
    build_model,
    build_model_from_cfg,
    classifier_module_name,
    classifier_param_names,
    is_vit,
    load_backbone_checkpoint,
    unwrap_model,
)
from .checkpoint import load_checkpoint, load_weights, save_checkpoint

__all__ = [
    "CheckpointMismatchError", "LoadReport", "build_model", "build_model_from_cfg", "classifier_module_name",
    "classifier_param_names", "is_vit", "load_backbone_checkpoint", "unwrap_model",
    "load_checkpoint", "load_weights", "save_checkpoint",
]
