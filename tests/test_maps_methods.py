"""Every registered attribution method through the map stage: side by side (map_tag), raw maps, records."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from dywsss.config import load_config
from dywsss.data.transforms import normalize_image
from dywsss.data.voc import image_path, load_image, read_image_list
from dywsss.engine.maps import generate_maps
from dywsss.explain import EXPLAINERS
from dywsss.mapfile import load_maps, load_raw
from dywsss.models.checkpoint import save_checkpoint
from dywsss.models.spec import describe_model

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(ig_steps=8, smoothgrad_samples=4, occlusion_window=16, occlusion_stride=8, rise_masks=64, rise_grid=4,
            lime_samples=32, attr_batch_size=32)
CNN_METHODS = ["cam", "gradcam", "gradient", "input_x_gradient", "integrated_gradients", "smoothgrad",
               "guided_backprop", "occlusion", "rise", "lime", "lrp"]


@pytest.fixture(scope="module")
def session(demo_voc, tmp_path_factory):
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("methods")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=20).eval()
    weights = work / "r18.pth"
    save_checkpoint(weights, dict(model=model.state_dict(), epoch=1, step=1, arch=describe_model(
        model, dict(network="resnet18", num_classes=20, crop_size=64)).to_dict()))
    names = read_image_list(demo_voc / "val.txt")[:3]
    (work / "three.txt").write_text("\n".join(names) + "\n")
    return work, weights, names, model


def _cfg(demo_voc, work, weights, **options):
    base = dict(list_root=str(demo_voc), voc12_root=str(demo_voc / "VOC2012"), cls_label=str(demo_voc / "cls_labels.json"),
                infer_list=str(work / "three.txt"), network="resnet18", crop_size=64, weights=str(weights),
                work_dir_root=str(work), session_name="s", device="cpu", num_workers=0, cam_batch_size=2,
                pretrained=False, **FAST)
    base.update(options)
    return load_config(ROOT / "config/demo.py", base)


def test_every_cnn_method_runs_in_the_stage_side_by_side(demo_voc, session):
    work, weights, names, _ = session
    assert set(CNN_METHODS) <= set(EXPLAINERS.names())
    dirs = {}
    for method in CNN_METHODS:
        dirs[method] = generate_maps(_cfg(demo_voc, work, weights, cam_method=method, map_tag=method))
    assert len(set(dirs.values())) == len(CNN_METHODS)  # one folder per method, none overwritten
    for method, out in dirs.items():
        assert out.name == f"cam_three_r18_{method}"
        meta = json.loads((out / "maps_meta.json").read_text())
        assert meta["method"] == method and "signed" in meta["method_params"]
        assert meta["method_params"]["libraries"]["torch"] == torch.__version__.split("+")[0]
        for name in names:
            classes, cams = load_maps(out / f"{name}.npz")
            assert len(classes) and cams.min() >= 0 and cams.max() <= 1 and np.isfinite(cams).all()
    assert json.loads((dirs["lrp"] / "maps_meta.json").read_text())["method_params"]["approximate"] is False


def test_raw_maps_keep_the_integrated_gradients_total(demo_voc, session):
    """IG completeness through the stage: with cam_store_raw, the raw map's total over image pixels is the mean
    over the two passes (image, mirrored image) of logit(x) - logit(baseline), the baseline the zero input."""
    work, weights, names, model = session
    out = generate_maps(_cfg(demo_voc, work, weights, cam_method="integrated_gradients", ig_steps=64,
                             map_tag="ig_raw", cam_store_raw=True))
    meta = json.loads((out / "maps_meta.json").read_text())
    assert meta["raw"].startswith("mean over passes")
    for name in names:
        classes, cams = load_maps(out / f"{name}.npz")
        raw = load_raw(out / f"{name}.npz")
        assert raw.shape == cams.shape and raw.dtype == np.float32 and (raw < 0).any()  # signed
        x = normalize_image(load_image(image_path(demo_voc / "VOC2012", name)))[None]
        with torch.no_grad():
            both = model(torch.cat([x, x.flip(-1), torch.zeros_like(x)]))
        expected = ((both[0] + both[1]) / 2 - both[2])[classes].numpy()
        np.testing.assert_allclose(raw.sum(axis=(1, 2)), expected, rtol=0.03, atol=0.03)
    without = generate_maps(_cfg(demo_voc, work, weights, cam_method="integrated_gradients", map_tag="ig_plain"))
    assert load_raw(without / f"{names[0]}.npz") is None
