"""Perturbation attributions (occlusion, RISE, LIME) against slow, obvious loops and known identities."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.segmentation import quickshift
from skimage.transform import resize
from torch import nn

from attribution_nets import tiny_cnn
from dywsss.explain import EXPLAINERS
from dywsss.explain.lime import fit_lime, lime_kernel, lime_samples
from dywsss.explain.rise import rise_grids

torch.set_num_threads(1)
CLASSES = [[0, 3], [4]]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 13, 11, generator=torch.Generator().manual_seed(1))


def score(net: nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    with torch.no_grad():
        logits = net(x)
    return torch.sigmoid(logits) if kind == "prob" else logits


# ------------------------------------------------------------ occlusion
def slow_occlusion(net, x, cls, window, stride, kind):
    """Per window: the score drop, spread over the window's pixels, averaged over the windows covering each pixel.

    Windows start at multiples of the stride; if the last one does not reach the
    border, one more (cropped) window starts a stride later.
    """
    _, H, W = x.shape
    wh, ww = min(window, H), min(window, W)

    def starts(size, win):
        pos = list(range(0, size - win + 1, stride))
        return pos + [pos[-1] + stride] if pos[-1] + win < size else pos

    base = score(net, x[None], kind)[0, cls]
    total, count = torch.zeros(H, W), torch.zeros(H, W)
    for top in starts(H, wh):
        for left in starts(W, ww):
            occluded = x.clone()
            occluded[:, top:top + wh, left:left + ww] = 0.0
            total[top:top + wh, left:left + ww] += base - score(net, occluded[None], kind)[0, cls]
            count[top:top + wh, left:left + ww] += 1
    assert (count > 0).all()
    return total / count


@pytest.mark.parametrize("window, stride, kind", [(5, 3, "logit"), (4, 4, "prob"), (20, 2, "logit")])
def test_occlusion_matches_slow_window_loop(images, window, stride, kind):
    net = tiny_cnn()
    cfg = dict(occlusion_window=window, occlusion_stride=min(stride, window), perturbation_score=kind,
               attr_batch_size=7)
    maps = EXPLAINERS.get("occlusion")(net, cfg).explain(images, CLASSES)
    for x, cs, m in zip(images, CLASSES, maps):
        want = torch.stack([slow_occlusion(net, x, c, window, stride, kind) for c in cs])
        torch.testing.assert_close(m, want, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------ RISE
def test_rise_grids_are_seeded_bernoulli_p():
    grids, shifts = rise_grids(4000, 7, 0.3, seed=5)
    assert set(grids.unique().tolist()) == {0.0, 1.0}
    assert abs(float(grids.mean()) - 0.3) < 0.01  # 196000 draws: sd 0.001
    assert float(shifts.min()) >= 0 and float(shifts.max()) < 1
    again, _ = rise_grids(4000, 7, 0.3, seed=5)
    other, _ = rise_grids(4000, 7, 0.3, seed=6)
    assert torch.equal(grids, again) and not torch.equal(grids, other)


def slow_rise(net, x, cls, n, s, p, seed, kind):
    """Petsiuk et al.'s reference procedure, mask by mask, upsampled by skimage's resize (order 1, reflect)."""
    grids, shifts = rise_grids(n, s, p, seed)
    _, H, W = x.shape
    cell_h, cell_w = int(np.ceil(H / s)), int(np.ceil(W / s))
    sal = torch.zeros(H, W, dtype=torch.float64)
    for grid, shift in zip(grids.numpy(), shifts.numpy()):
        up = resize(grid, ((s + 1) * cell_h, (s + 1) * cell_w), order=1, mode="reflect", anti_aliasing=False)
        dy, dx = int(shift[0] * cell_h), int(shift[1] * cell_w)
        mask = torch.from_numpy(up[dy:dy + H, dx:dx + W])
        sal += float(score(net, (x * mask.float())[None], kind)[0, cls]) * mask
    return (sal / (n * p)).float()


@pytest.mark.parametrize("kind", ["prob", "logit"])
def test_rise_matches_slow_mask_loop(images, kind):
    net = tiny_cnn()
    cfg = dict(rise_masks=37, rise_grid=4, rise_p=0.4, random_seed=11, perturbation_score=kind, attr_batch_size=10)
    explainer = EXPLAINERS.get("rise")(net, cfg)
    assert explainer.signed == (kind == "logit")
    maps = explainer.explain(images, CLASSES)
    for x, cs, m in zip(images, CLASSES, maps):
        want = torch.stack([slow_rise(net, x, c, 37, 4, 0.4, 11, kind) for c in cs])
        torch.testing.assert_close(m, want, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------ LIME
def test_lime_kernel_and_samples_follow_the_lime_package():
    z = lime_samples(6, 200, seed=3)
    assert z.shape == (200, 6) and (z[0] == 1).all() and set(np.unique(z)) == {0.0, 1.0}
    assert abs(z[1:].mean() - 0.5) < 0.06
    on = z.sum(1)
    # cos(z, 1) = sum z / (|z| |1|) = sqrt(on / F); an all-zero z has similarity 0 (scikit-learn's convention)
    cosine_distance = 1 - np.sqrt(on / 6)
    np.testing.assert_allclose(lime_kernel(z, 0.25), np.sqrt(np.exp(-cosine_distance ** 2 / 0.25 ** 2)), rtol=1e-10)


def test_lime_fit_is_weighted_ridge_with_intercept():
    rng = np.random.default_rng(0)
    z, y, w = rng.integers(0, 2, (80, 5)).astype(float), rng.normal(size=(80, 2)), rng.uniform(0.1, 1, 80)
    coef = fit_lime(z, y, w)
    # closed form: centre with the weighted means, then (Zc' W Zc + I) b = Zc' W yc
    zc = z - np.average(z, axis=0, weights=w)
    yc = y - np.average(y, axis=0, weights=w)
    want = np.linalg.solve(zc.T @ (w[:, None] * zc) + np.eye(5), zc.T @ (w[:, None] * yc)).T
    np.testing.assert_allclose(coef, want, rtol=1e-8, atol=1e-10)


class PixelLinear(nn.Module):
    """logit_k = sum_p W_k(p) x_0(p): linear in the image, so LIME's surrogate is exact."""

    def __init__(self, h: int, w: int, classes: int = 5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, h, w, generator=torch.Generator().manual_seed(4)))

    def forward(self, x):
        return torch.einsum("bhw,khw->bk", x[:, 0], self.weight)


def test_lime_recovers_a_linear_model_per_superpixel():
    h, w = 12, 16
    net = PixelLinear(h, w).eval()
    x = torch.randn(3, h, w, generator=torch.Generator().manual_seed(2))
    segments = (np.arange(h)[:, None] // 6) * 2 + (np.arange(w)[None, :] // 8)  # four quadrants
    explainer = EXPLAINERS.get("lime")(net, dict(perturbation_score="logit", lime_samples=1000, random_seed=5))
    maps = explainer.image_maps(x, torch.tensor([1, 3]), segments)
    seg = torch.from_numpy(segments)
    z = lime_samples(4, 1000, seed=5)
    weights = lime_kernel(z, 0.25)
    zc = z - np.average(z, axis=0, weights=weights)
    gram = zc.T @ (weights[:, None] * zc)
    with torch.no_grad():
        for k, c in enumerate([1, 3]):
            # switching quadrant q off replaces x_0 there by its mean: the logit is exactly linear in z
            effect = np.array([float((net.weight[c][seg == q] * (x[0][seg == q] - x[0][seg == q].mean())).sum())
                               for q in range(4)])
            got = np.array([float(maps[k][seg == q][0]) for q in range(4)])
            for q in range(4):
                assert torch.allclose(maps[k][seg == q], maps[k][seg == q][0])  # one value per superpixel
            # weighted ridge on exact linear data: (Zc' W Zc + alpha I)^-1 Zc' W Zc effect
            np.testing.assert_allclose(got, np.linalg.solve(gram + np.eye(4), gram @ effect), rtol=1e-4, atol=1e-6)
            assert np.abs(got - effect).max() <= 0.1 * np.abs(effect).max()  # ... close to the true effects


def test_lime_superpixels_are_quickshift_of_the_unnormalised_image():
    rng = np.random.default_rng(0)
    rgb = np.kron(rng.uniform(0, 1, (4, 4, 3)), np.ones((16, 16, 1))) + rng.normal(0, 0.02, (64, 64, 3))
    rgb = rgb.clip(0, 1)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(((rgb - mean) / std).transpose(2, 0, 1)).float()[None]
    maps = EXPLAINERS.get("lime")(tiny_cnn(), dict(lime_samples=60, random_seed=9)).explain(x, [[2]])[0][0]
    labels = quickshift(rgb, kernel_size=4, max_dist=200, ratio=0.2, rng=9)
    assert len(np.unique(labels)) >= 10
    for q in np.unique(labels):
        values = maps[torch.from_numpy(labels == q)]
        assert torch.allclose(values, values[0])
    assert len(torch.unique(maps)) == len(np.unique(labels))  # one coefficient per quickshift segment, no coarser
