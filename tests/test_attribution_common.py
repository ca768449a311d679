"""What every input-space attribution method shares: batching, seeds, ViT input, config errors, meta()."""
from __future__ import annotations

from importlib import metadata

import pytest
import timm
import torch

from dywsss.errors import ConfigError
from dywsss.explain import EXPLAINERS

torch.set_num_threads(1)

METHODS = ["gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "guided_backprop", "occlusion",
           "rise", "lime", "lrp"]
#: small settings so a test runs in seconds; a batch size that splits the rows differently from one-at-a-time
FAST = dict(ig_steps=6, smoothgrad_samples=3, rise_masks=24, lime_samples=24, occlusion_window=12,
            occlusion_stride=8, attr_batch_size=5)
CLASSES = [[1, 4], [], [2]]


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=20).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 40, generator=torch.Generator().manual_seed(1))


def test_all_methods_are_registered():
    assert set(METHODS) <= set(EXPLAINERS.names())


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_one_at_a_time(resnet, images, method):
    """All rows of a batch at once == each (image, class) alone, to float32 rounding (batch-size dependent kernels)."""
    explainer = EXPLAINERS.get(method)(resnet, FAST)
    batched = explainer.explain(images, CLASSES)
    assert [tuple(m.shape) for m in batched] == [(2, 32, 40), (0, 32, 40), (1, 32, 40)]
    one_at_a_time = EXPLAINERS.get(method)(resnet, dict(FAST, attr_batch_size=64))
    for x, cs, m in zip(images, CLASSES, batched):
        for k, c in enumerate(cs):
            alone = one_at_a_time.explain(x[None], [[c]])[0][0]
            scale = float(alone.abs().max()) + 1e-12
            assert float((m[k] - alone).abs().max()) <= 1e-4 * scale, method
    if not explainer.signed:
        assert all((m >= 0).all() for m in batched)


@pytest.mark.parametrize("method", ["smoothgrad", "rise", "lime"])
def test_random_methods_are_reproducible_and_seeded(resnet, images, method):
    first = EXPLAINERS.get(method)(resnet, FAST).explain(images[:1], [[3]])[0]
    again = EXPLAINERS.get(method)(resnet, FAST).explain(images[:1], [[3]])[0]
    other = EXPLAINERS.get(method)(resnet, dict(FAST, random_seed=1)).explain(images[:1], [[3]])[0]
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("guided_backprop", "lrp")])
def test_vit_input_is_fed_at_the_model_img_size(method):
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=20, img_size=32, patch_size=8, depth=2).eval()
    explainer = EXPLAINERS.get(method)(vit, FAST)
    assert explainer.input_size == (32, 32)
    maps = explainer.explain(torch.randn(2, 3, 32, 32), [[0, 5], [7]])
    assert [tuple(m.shape) for m in maps] == [(2, 32, 32), (1, 32, 32)]
    assert all(torch.isfinite(m).all() and m.abs().sum() > 0 for m in maps)


BAD = [
    ("occlusion", "occlusion_window", 0), ("occlusion", "occlusion_stride", -1), ("occlusion", "occlusion_window", 2.5),
    ("rise", "rise_masks", 0), ("rise", "rise_grid", 0), ("rise", "rise_p", 0.0), ("rise", "rise_p", 1.5),
    ("integrated_gradients", "ig_steps", 0), ("integrated_gradients", "ig_baseline", "grey"),
    ("smoothgrad", "smoothgrad_samples", 0), ("smoothgrad", "smoothgrad_sd", -0.1), ("smoothgrad", "random_seed", -1),
    ("lime", "lime_samples", 0), ("lime", "lime_kernel_width", 0), ("lime", "perturbation_score", "softmax"),
    ("gradient", "attr_batch_size", 0), ("gradient", "attr_batch_size", True),
]


@pytest.mark.parametrize("method, key, value", BAD)
def test_bad_config_values_give_a_one_line_config_error(resnet, method, key, value):
    with pytest.raises(ConfigError) as err:
        EXPLAINERS.get(method)(resnet, {key: value})
    assert str(err.value).startswith(f"{key}=") and "\n" not in str(err.value)


def test_occlusion_stride_larger_than_window_is_refused(resnet):
    with pytest.raises(ConfigError, match="occlusion_stride=20: must not exceed occlusion_window=8"):
        EXPLAINERS.get("occlusion")(resnet, dict(occlusion_window=8, occlusion_stride=20))


def test_meta_records_parameters_and_library_versions(resnet):
    meta = EXPLAINERS.get("rise")(resnet, None).meta()
    assert meta["signed"] is False
    assert (meta["rise_masks"], meta["rise_grid"], meta["rise_p"], meta["random_seed"]) == (4000, 7, 0.5, 2022)
    assert EXPLAINERS.get("occlusion")(resnet, None).meta()["occlusion_window"] == 32
    ig = EXPLAINERS.get("integrated_gradients")(resnet, None).meta()
    assert ig["signed"] is True and ig["ig_steps"] == 50 and ig["libraries"]["captum"] == metadata.version("captum")
    assert EXPLAINERS.get("lrp")(resnet, None).meta()["libraries"]["zennit"] == metadata.version("zennit")
    lime = EXPLAINERS.get("lime")(resnet, None).meta()
    assert lime["lime_samples"] == 1000 and lime["libraries"]["scikit-image"] == metadata.version("scikit-image")
    assert "attr_batch_size" not in ig  # speed only: a rerun with another batch size may resume


def test_existing_explainers_have_meta_and_are_unsigned(resnet):
    cam = EXPLAINERS.get("cam")(resnet, None)
    assert cam.signed is False and cam.meta()["libraries"]["timm"] == metadata.version("timm")
    assert EXPLAINERS.get("gradcam")(resnet, None).meta()["libraries"]["grad-cam"] == metadata.version("grad-cam")
