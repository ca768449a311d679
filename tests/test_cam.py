"""CAM (Eq. 5), the map stage's aggregation/normalisation, and the Grad-CAM family."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from dywsss.engine.maps import explain_batch, normalize_maps, select_classes
from dywsss.explain import EXPLAINERS, builtin_method_modules, load_builtin_methods
from dywsss.explain.cam import CAM, classifier_weight

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=20).eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(3, 3, 64, 96)


def hand_cam(model, x):
    """Eq. 5 written out: M_c = ReLU(sum_k w_ck f_k), a loop over channels, no bias."""
    with torch.no_grad():
        f = model.forward_features(x)
    w = model.fc.weight.detach()
    out = torch.zeros(x.shape[0], w.shape[0], *f.shape[-2:])
    for k in range(f.shape[1]):
        out += w[None, :, k, None, None] * f[:, k, None]
    return out.clamp(min=0), f


def test_registry_has_the_cnn_methods():
    names = load_builtin_methods()
    assert {"cam", "gradcam", "gradcam++", "scorecam", "layercam"} <= set(names)
    assert builtin_method_modules()[:2] == ["dywsss.explain.cam", "dywsss.explain.gradcam_family"]
    with pytest.raises(KeyError, match="did you mean gradcam"):
        EXPLAINERS.get("gradcm")


def test_cam_equals_features_times_weights(resnet, images):
    classes = [[0, 3], [5], list(range(20))]
    maps = CAM(resnet).explain(images, classes)
    ref, f = hand_cam(resnet, images)
    assert [m.shape for m in maps] == [(2, 2, 3), (1, 2, 3), (20, 2, 3)]
    for i, c in enumerate(classes):
        torch.testing.assert_close(maps[i], ref[i, c], rtol=1e-5, atol=1e-5)
    # GAP + linear: the logit is the spatial mean of the unrectified map plus the bias
    unrect = torch.einsum("bkhw,ck->bchw", f, resnet.fc.weight)
    with torch.no_grad():
        torch.testing.assert_close(unrect.mean((2, 3)) + resnet.fc.bias, resnet(images), rtol=1e-4, atol=1e-5)


def test_cam_rejects_head_that_is_not_gap_linear():
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=20).eval()  # LayerNorm after pooling
    with pytest.raises(ValueError, match="global average pooling followed directly by the linear classifier"):
        CAM(model).explain(torch.randn(1, 3, 64, 64), [[0]])
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=20, img_size=32, patch_size=8,
                            depth=1)
    with pytest.raises(ValueError, match="not a CNN"):
        CAM(vit).explain(torch.randn(1, 3, 32, 32), [[0]])
    with pytest.raises(ValueError, match="linear classifier"):
        classifier_weight(timm.create_model("resnet18", pretrained=False, num_classes=0))


def test_normalisation_hand_worked():
    s = torch.tensor([[[0.0, 1.0], [2.0, 4.0]], [[3.0, 3.0], [3.0, 3.0]]])
    out = normalize_maps(s)
    eps = 1e-5
    expected0 = np.array([[0.0, (1 - eps) / (4 + eps)], [(2 - eps) / (4 + eps), (4 - eps) / (4 + eps)]])
    np.testing.assert_allclose(out[0].numpy(), expected0, rtol=1e-6)
    np.testing.assert_array_equal(out[1].numpy(), np.zeros((2, 2)))  # a constant map: all below m + eps
    raw = normalize_maps(s, clamp=False)  # the original, unclamped: zeroed pixels end at -(m + eps)/(M - m + eps)
    assert raw[0, 0, 0].item() == pytest.approx(-eps / (4 + eps), rel=1e-5)
    assert raw[1, 0, 0].item() == pytest.approx(-(3 + eps) / eps, rel=1e-5)
    assert out.min() >= 0 and out.max() < 1


def test_flip_scale_aggregation_equals_hand_computation(resnet, images):
    classes = [[1, 2], [7], []]
    scales = (1.0, 0.75)
    got = explain_batch(CAM(resnet), images, classes, scales=scales, flip=True)
    H, W = images.shape[-2:]
    for i, c in enumerate(classes):
        total = torch.zeros(len(c), H, W)
        for s in scales if c else ():
            size = (round(H * s), round(W * s))
            x = images[i:i + 1]
            if size != (H, W):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            for flipped in (False, True):
                cam, _ = hand_cam(resnet, x.flip(-1) if flipped else x)
                up = F.interpolate(cam[:, c], size=(H, W), mode="bilinear", align_corners=False)[0]
                total += up.flip(-1) if flipped else up
        total = total.numpy()
        m = total.min(axis=(1, 2), keepdims=True)
        M = total.max(axis=(1, 2), keepdims=True)
        ref = np.where(total < m + 1e-5, 0.0, total)
        ref = np.clip((ref - m - 1e-5) / (M - m + 1e-5), 0, 1)
        assert got[i].shape == (len(c), H, W)
        np.testing.assert_allclose(got[i].numpy(), ref, atol=2e-5)


def test_flip_of_a_mirrored_image_mirrors_the_map(resnet):
    torch.manual_seed(2)
    x = torch.randn(1, 3, 64, 64)
    a = explain_batch(CAM(resnet), x, [[4]], flip=True)[0]
    b = explain_batch(CAM(resnet), x.flip(-1), [[4]], flip=True)[0]
    torch.testing.assert_close(a, b.flip(-1), atol=1e-5, rtol=0)


def test_batched_equals_unbatched(resnet, images):
    classes = [[0, 1], [2], [3, 19]]
    together = explain_batch(CAM(resnet), images, classes)
    alone = [explain_batch(CAM(resnet), images[i:i + 1], [c])[0] for i, c in enumerate(classes)]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_class_modes():
    labels = np.zeros((2, 20), np.float32)
    labels[0, [3, 7]] = 1
    probs = np.full((2, 20), 0.2)
    probs[1, [0, 19]] = 0.9
    probs[1, 5] = 0.5  # not strictly above the threshold
    assert select_classes("gt", labels) == [[3, 7], []]
    assert select_classes("pred", labels, probs, 0.5) == [[], [0, 19]]
    assert select_classes("all", labels) == [list(range(20))] * 2
    with pytest.raises(ValueError, match="cam_classes='top'"):
        select_classes("top", labels)


# ----------------------------------------------------------------- Grad-CAM family
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "scorecam"])
def test_gradcam_family_shapes_and_sign(method):
    torch.manual_seed(3)
    model = timm.create_model("resnet18", pretrained=False, num_classes=20).eval()
    x = torch.randn(2, 3, 32, 64)
    classes = [[0, 5], [] if method == "scorecam" else [11]]
    maps = EXPLAINERS.get(method)(model).explain(x, classes)
    assert [tuple(m.shape) for m in maps] == [(2, 1, 2), (len(classes[1]), 1, 2)]
    assert all(torch.isfinite(m).all() and (m >= 0).all() for m in maps)
    assert maps[0].sum() > 0


def test_gradcam_and_layercam_equal_hand_computation(resnet, images):
    classes = [[0, 3], [5], [19]]
    f = resnet.forward_features(images).detach().requires_grad_(True)
    logits = resnet.forward_head(f)
    hand_grad, hand_layer = [], []
    for i, cs in enumerate(classes):
        g_rows, l_rows = [], []
        for c in cs:
            (g,) = torch.autograd.grad(logits[i, c], f, retain_graph=True)
            alpha = g[i].mean((1, 2))  # Grad-CAM: spatially averaged gradients weight the channels
            g_rows.append((alpha[:, None, None] * f[i]).sum(0).clamp(min=0).detach())
            l_rows.append((g[i].clamp(min=0) * f[i]).sum(0).clamp(min=0).detach())  # LayerCAM
        hand_grad.append(torch.stack(g_rows))
        hand_layer.append(torch.stack(l_rows))
    got_grad = EXPLAINERS.get("gradcam")(resnet).explain(images, classes)
    got_layer = EXPLAINERS.get("layercam")(resnet).explain(images, classes)
    cam = CAM(resnet).explain(images, classes)
    hw = f.shape[-2] * f.shape[-1]
    for i in range(len(classes)):
        torch.testing.assert_close(got_grad[i], hand_grad[i], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got_layer[i], hand_layer[i], rtol=1e-4, atol=1e-6)
        # GAP + linear head: the class gradient is w_c / (h w) everywhere, so Grad-CAM = CAM / (h w)
        torch.testing.assert_close(got_grad[i] * hw, cam[i], rtol=1e-4, atol=1e-5)
    assert all(p.grad is None for p in resnet.parameters())


def test_gradcam_batched_equals_unbatched(resnet, images):
    classes = [[0, 3], [5], [19]]
    explainer = EXPLAINERS.get("gradcam++")(resnet)
    together = explainer.explain(images, classes)
    alone = [explainer.explain(images[i:i + 1], [c])[0] for i, c in enumerate(classes)]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
