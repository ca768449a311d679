"""Insertion/deletion (batched) against a per-step loop and a hand-worked case; maps in the input frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from dywsss.data.transforms import center_crop, normalize_image
from dywsss.mapfile import save_maps
from dywsss.metrics.faithfulness import (
    curve_area, curve_scores, image_faithfulness, input_frame_maps, map_to_input_frame, perturbation_curves,
    pixel_ranks,
)

torch.set_num_threads(1)


class SumNet(nn.Module):
    """logit_c = w_c * (sum of channel 0) + b_c: deletion curves by hand."""

    def __init__(self):
        super().__init__()
        self.w = torch.linspace(0.5, 1.5, 20)
        self.b = torch.linspace(-1, 1, 20)

    def forward(self, x):
        return x[:, 0].sum((1, 2))[:, None] * self.w + self.b


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 20)).eval()


def slow_curve(model, x, a, c, steps, mode):
    """One forward per step; the order from np.lexsort (value descending, then row-major)."""
    h, w = a.shape
    n = h * w
    order = np.lexsort((np.arange(n), -a.ravel().astype(np.float64)))
    canvas = gaussian_blur(x[None], [11, 11], [5.0, 5.0])[0] if mode == "insertion" else torch.zeros_like(x)
    out = []
    for k in range(steps + 1):
        chosen = torch.zeros(n, dtype=torch.bool)
        chosen[torch.from_numpy(order[: (k * n) // steps])] = True
        chosen = chosen.view(1, h, w)
        xk = torch.where(chosen, x, canvas) if mode == "insertion" else torch.where(chosen, canvas, x)
        with torch.no_grad():
            out.append(torch.sigmoid(model(xk[None])[0, c].double()).item())
    return np.array(out)


def test_deletion_hand_worked():
    # channel 0 = [[1, 2], [3, 4]]; map ranks pixels 4 > 1 > 3 = 2 (tie: row-major, so (0,1) before (1,0))
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = torch.tensor([[[0.9, 0.5], [0.5, 1.0]]])
    assert pixel_ranks(a).tolist() == [[1, 2, 3, 0]]
    net = SumNet()
    curves = perturbation_curves(net, x, a, [0], [3], steps=4, modes=("deletion",))
    w, b = net.w[3].item(), net.b[3].item()
    remaining = [10, 6, 5, 3, 0]  # delete 4, then 1, then 2, then 3
    p = 1 / (1 + np.exp(-(w * np.array(remaining) + b)))
    np.testing.assert_allclose(curves["deletion"][0], p, rtol=1e-6)
    assert curve_area(curves["deletion"])[0] == pytest.approx((p.sum() - (p[0] + p[-1]) / 2) / 4, rel=1e-6)
    scores = curve_scores(curves)
    assert scores["deletion_norm"][0] == pytest.approx(((p / p[0]).sum() - (1 + p[-1] / p[0]) / 2) / 4, rel=1e-6)


def test_steps_not_dividing_the_pixel_count():
    # N = 6 pixels, S = 4 steps: floor(k * 6 / 4) = 0, 1, 3, 4, 6 pixels deleted
    x = torch.zeros(1, 3, 2, 3)
    x[0, 0] = torch.arange(1.0, 7.0).view(2, 3)
    a = torch.arange(6.0, 0.0, -1).view(1, 2, 3)  # row-major order
    net = SumNet()
    got = perturbation_curves(net, x, a, [0], [0], steps=4, modes=("deletion",))["deletion"][0]
    remaining = np.array([21, 20, 15, 11, 0])
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-(net.w[0].item() * remaining + net.b[0].item()))), rtol=1e-6)


@pytest.mark.parametrize("batch_size", [7, 64])
def test_batched_matches_per_step_loop(batch_size):
    torch.manual_seed(1)
    model = tiny_cnn()
    inputs = torch.randn(3, 3, 20, 24)
    maps = torch.rand(4, 20, 24)
    maps[1] = torch.round(maps[1] * 4) / 4  # ties
    maps[2] = 0  # all-zero: row-major order
    image_index, classes = [0, 0, 1, 2], [3, 7, 0, 19]
    curves = perturbation_curves(model, inputs, maps, image_index, classes, steps=9, batch_size=batch_size)
    for mode in ("insertion", "deletion"):
        for p, (i, c) in enumerate(zip(image_index, classes)):
            want = slow_curve(model, inputs[i], maps[p].numpy(), c, 9, mode)
            np.testing.assert_allclose(curves[mode][p], want, rtol=1e-5, atol=1e-7, err_msg=f"{mode} pair {p}")


def test_image_faithfulness_means_over_classes():
    model = tiny_cnn(2)
    inputs = torch.randn(3, 3, 16, 16)
    maps = [torch.rand(2, 16, 16), torch.zeros(0, 16, 16), torch.rand(1, 16, 16)]
    classes = [[1, 5], [], [9]]
    out = image_faithfulness(model, inputs, maps, classes, steps=5)
    assert set(out) == {"insertion", "insertion_norm", "deletion", "deletion_norm"}
    per = {}
    for mode in ("insertion", "deletion"):
        per[mode] = [curve_area(slow_curve(model, inputs[i], m.numpy(), c, 5, mode)[None])[0]
                     for i, (ms, cs) in enumerate(zip(maps, classes)) for m, c in zip(ms, cs)]
    assert out["insertion"][0] == pytest.approx(np.mean(per["insertion"][:2]), rel=1e-5)
    assert out["deletion"][2] == pytest.approx(per["deletion"][2], rel=1e-5)
    assert np.isnan(out["deletion"][1]) and np.isnan(out["insertion_norm"][1])


def test_map_to_input_frame_center_crop_places_maps_like_the_image():
    rng = np.random.default_rng(0)
    # 7x3 map into a 4x4 frame: rows offset round(3/2) = 2 (cropped), columns padded at round(1/2) = 0
    m = np.arange(21, dtype=np.float32).reshape(1, 7, 3)
    want = np.zeros((1, 4, 4), np.float32)
    want[0, :, :3] = m[0, 2:6]
    np.testing.assert_array_equal(map_to_input_frame(m, "center_crop", 4).numpy(), want)
    # the same placement as the image's: a map equal to a channel of the image lands on that channel
    img = rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)
    x = normalize_image(img)
    for size in (32, 48, 64):
        np.testing.assert_array_equal(map_to_input_frame(x[:1].numpy(), "center_crop", size).numpy(),
                                      center_crop(x, size)[:1].numpy())
    full = map_to_input_frame(np.ones((2, 37, 50), np.float32), "full_image", 16)
    assert full.shape == (2, 16, 16) and torch.allclose(full, torch.ones(2, 16, 16))
    with pytest.raises(ValueError, match="loss_input='crop'"):
        map_to_input_frame(m, "crop", 4)


def test_input_frame_maps_reads_a_map_file(tmp_path):
    cams = np.random.default_rng(0).random((2, 10, 12)).astype(np.float32)
    save_maps(tmp_path / "a.npz", np.array([4, 9]), cams, dtype="float32")
    got = input_frame_maps(tmp_path / "a.npz", [9, 2], "center_crop", 8)
    np.testing.assert_array_equal(got[0].numpy(), cams[1, 1:9, 2:10])
    assert not got[1].any()  # class 2 has no stored map


def test_batch_faithfulness_reads_maps_in_the_input_frame(tmp_path):
    rng = np.random.default_rng(3)
    model = tiny_cnn(4)
    imgs = [rng.integers(0, 256, (30, 26, 3), dtype=np.uint8), rng.integers(0, 256, (18, 40, 3), dtype=np.uint8)]
    classes = [[2, 6], [11]]
    for k, (img, cls) in enumerate(zip(imgs, classes)):
        save_maps(tmp_path / f"im{k}.npz", np.array(cls), rng.random((len(cls),) + img.shape[:2]), dtype="float32")
    inputs = torch.stack([center_crop(normalize_image(im), 24) for im in imgs])
    got = image_faithfulness(model, inputs, [input_frame_maps(tmp_path / f"im{k}.npz", c, "center_crop", 24)
                                             for k, c in enumerate(classes)], classes, steps=4)
    from dywsss.metrics.faithfulness import batch_faithfulness

    out = batch_faithfulness(model, inputs, ["im0", "im1"], tmp_path, classes, "center_crop", 24, steps=4)
    for col in got:
        np.testing.assert_array_equal(out[col], got[col])
    # the deletion of image 1 by hand: its single map, centre-cropped like the image
    m = torch.from_numpy(np.load(tmp_path / "im1.npz")["cams"].astype(np.float32))
    want = curve_area(slow_curve(model, inputs[1], center_crop(m, 24)[0].numpy(), 11, 4, "deletion")[None])[0]
    assert out["deletion"][1] == pytest.approx(want, rel=1e-5)
