"""Explainers that refuse a model at construction (so compare_methods' check before any work catches it),
and the B-cos explainer's record in maps_meta.json (issue 12 review)."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from mmengine.config import Config

from dywsss.errors import ConfigError
from dywsss.explain import EXPLAINERS
from dywsss.models.probes import build_probe_model

FEATURE_MAP_METHODS = ["cam", "gradcam", "gradcam++", "layercam", "scorecam"]


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=20, img_size=32, patch_size=8,
                             depth=2).eval()


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("method", FEATURE_MAP_METHODS)
def test_feature_map_methods_refuse_a_vit_when_built(method):
    with pytest.raises(ConfigError) as info:
        EXPLAINERS.get(method)(tiny_vit(), None)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"cam_method={method} needs a [B, C, h, w] feature map, but network "
                          "vit_tiny_patch16_224 is not a CNN: its features are patch tokens [B, N, D]")


def test_a_probe_on_a_vit_backbone_has_a_feature_map_and_passes():
    """The probe puts the patch tokens on their grid, so CAM applies: the map of class c at patch (i, j) is
    ReLU(W_c . token_(4i + j)), computed here from the backbone's tokens directly."""
    model = build_probe_model(tiny_vit(), "linear", 20).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = EXPLAINERS.get("cam")(model, None).explain(x, [[1, 4], [7]])
    with torch.no_grad():
        tokens = model.backbone.forward_features(x)[:, model.backbone.num_prefix_tokens:]  # [2, 16, D]
    w = model.get_classifier().weight.detach().flatten(1)  # [20, D]
    expect = (tokens @ w.t()).clamp(min=0)  # [2, 16, 20], patches in row-major order
    torch.testing.assert_close(maps[0], expect[0][:, [1, 4]].t().reshape(2, 4, 4), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps[1], expect[1][:, [7]].t().reshape(1, 4, 4), rtol=1e-4, atol=1e-5)
    grad = EXPLAINERS.get("gradcam")(model, None).explain(x, [[1], [7]])
    assert [tuple(m.shape) for m in grad] == [(1, 4, 4), (1, 4, 4)]


def test_compare_methods_check_before_any_work_names_the_method(monkeypatch):
    """method_parameter_keys builds each explainer on the session's network: a ViT stops gradcam there."""
    import dywsss.models.spec as spec
    from dywsss.study.methods import method_parameter_keys

    monkeypatch.setattr(spec, "load_session_model", lambda cfg, device: SimpleNamespace(model=tiny_vit()))
    cfg = Config(dict(cam_method="gradient", network="vit_tiny_patch16_224"))
    assert method_parameter_keys(cfg, ["gradient"]) == {"gradient": set()}
    with pytest.raises(ConfigError, match=re.escape("--methods gradcam: cam_method=gradcam needs a [B, C, h, w] "
                                                    "feature map, but network vit_tiny_patch16_224 is not a CNN")):
        method_parameter_keys(cfg, ["gradient", "gradcam"])


def test_bcos_explainer_is_unsigned_and_records_its_head_in_maps_meta():
    from importlib import metadata

    from dywsss.config import load_config
    from dywsss.engine.maps import maps_meta

    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", pretrained=False, num_classes=20)
    model = build_probe_model(backbone, "bcos_mlp3", 20, b=2.5).eval()
    explainer = EXPLAINERS.get("bcos")(model, None)
    assert explainer.signed is False
    meta = explainer.meta()
    assert meta["signed"] is False and meta["head"] == "bcos_mlp3" and meta["b"] == [2.5, 2.5, 2.5]
    assert meta["libraries"]["torch"] == metadata.version("torch")
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "demo.py", dict(cam_method="bcos"))
    assert maps_meta(cfg, explainer)["method_params"] == meta
