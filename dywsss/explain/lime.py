"""LIME for images (Ribeiro, Singh & Guestrin, KDD 2016, Sec. 3), as the authors' ``lime`` package does it.

Per image:

1. superpixels by scikit-image's quickshift on the un-normalised RGB image,
   with the package's settings (``kernel_size=4, max_dist=200, ratio=0.2``);
2. ``lime_samples`` binary vectors z over the superpixels (each on with
   probability 1/2; the first is all ones, the image itself), from a
   generator seeded with ``random_seed`` (:func:`lime_samples`);
3. each z becomes an image whose switched-off superpixels take their own mean
   colour (the package's default ``hide_color=None``), scored by the network
   in batches of ``attr_batch_size``;
4. sample weights ``sqrt(exp(-d^2 / w^2))`` with d the cosine distance of z to
   the all-ones vector and ``w = lime_kernel_width`` (the package's image
   explainer: 0.25; :func:`lime_kernel`);
5. one weighted ridge regression (scikit-learn ``Ridge(alpha=1)``, the
   package's default) of the scores of all requested classes on z; a pixel's
   attribution is its superpixel's coefficient (signed).

The samples and their forward passes are shared by all classes of an image
(the package also fits every label on one sample set); captum's ``Lime`` draws
new samples for each target, so it would cost one sample set per class.

Keys: ``lime_samples`` (int >= 1, default 1000), ``lime_kernel_width`` (float
> 0, default 0.25), ``random_seed``, ``perturbation_score`` (``prob``: sigmoid,
default, like the package's predicted probabilities; ``logit``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mmengine.config import Config
from torch import Tensor, nn

from . import EXPLAINERS
from ._input_space import (
    DEFAULT_SEED,
    SCORES,
    InputSpaceExplainer,
    chunks,
    class_score,
    config_choice,
    config_float,
    config_int,
    unnormalize,
)

#: The lime package's quickshift settings (lime_image.LimeImageExplainer.explain_instance).
QUICKSHIFT = dict(kernel_size=4, max_dist=200, ratio=0.2)
RIDGE_ALPHA = 1.0


def superpixels(rgb: np.ndarray, seed: int) -> np.ndarray:
    """Quickshift labels [H, W], renumbered 0..F-1, of an RGB image [H, W, 3] in [0, 1]."""
    from skimage.segmentation import quickshift

    labels = quickshift(rgb.astype(np.float64), rng=seed, **QUICKSHIFT)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def lime_samples(num_features: int, n: int, seed: int) -> np.ndarray:
    """Binary samples [n, num_features] (each entry 1 with probability 1/2), the first all ones."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 2, (n, num_features), generator=gen).numpy().astype(np.float64)
    z[0] = 1.0
    return z


def lime_kernel(z: np.ndarray, width: float) -> np.ndarray:
    """The package's sample weights: ``sqrt(exp(-d^2 / width^2))``, d = cosine distance of each z to all ones."""
    from sklearn.metrics import pairwise_distances

    d = pairwise_distances(z, np.ones((1, z.shape[1])), metric="cosine").ravel()
    return np.sqrt(np.exp(-(d ** 2) / width ** 2))


def segment_mean_image(image: Tensor, segments: Tensor, num_features: int) -> Tensor:
    """[3, H, W] image with every superpixel replaced by its mean colour (``hide_color=None``)."""
    flat = segments.flatten()
    sums = image.new_zeros((3, num_features)).index_add_(1, flat, image.flatten(1))
    counts = torch.bincount(flat, minlength=num_features).to(image.dtype)
    return (sums / counts)[:, flat].view_as(image)


def fit_lime(z: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted ridge (alpha 1, with intercept) of scores [n, K] on samples [n, F] -> coefficients [K, F]."""
    from sklearn.linear_model import Ridge

    model = Ridge(alpha=RIDGE_ALPHA, fit_intercept=True).fit(z, scores, sample_weight=weights)
    return np.atleast_2d(model.coef_).reshape(scores.shape[1], z.shape[1])


@EXPLAINERS.register("lime")
class LIME(InputSpaceExplainer):
    """Ribeiro et al. 2016: per-superpixel coefficients of a locally weighted ridge fit (signed)."""

    libraries = ("torch", "timm", "scikit-image", "scikit-learn")

    def __init__(self, model: nn.Module, cfg: Config | dict | None = None) -> None:
        super().__init__(model, cfg)
        self.samples = config_int(cfg, "lime_samples", 1000)
        self.kernel_width = config_float(cfg, "lime_kernel_width", 0.25, low=0.0)
        self.seed = config_int(cfg, "random_seed", DEFAULT_SEED, minimum=0)
        self.score = config_choice(cfg, "perturbation_score", "prob", SCORES)

    def image_maps(self, image: Tensor, classes: Tensor, segments: np.ndarray) -> Tensor:
        """LIME maps [K, H, W] of one normalised image [3, H, W] for ``classes`` [K], given its superpixels."""
        num_features = int(segments.max()) + 1
        seg = torch.from_numpy(segments).to(image.device)
        hidden = segment_mean_image(image, seg, num_features)
        z = lime_samples(num_features, self.samples, self.seed)
        z_dev = torch.from_numpy(z).to(image.device, image.dtype)
        scores = []
        with torch.no_grad():
            for s in chunks(self.samples, self.batch_size):
                keep = z_dev[s][:, seg]  # [n, H, W]
                x = image * keep[:, None] + hidden * (1 - keep[:, None])
                scores.append(class_score(self.model(x), self.score)[:, classes])
        y = torch.cat(scores).double().cpu().numpy()
        coef = fit_lime(z, y, lime_kernel(z, self.kernel_width))  # [K, F]
        return torch.from_numpy(coef).to(image.device, torch.float32)[:, seg]

    def attribute(self, images: Tensor, img_idx: Tensor, cls: Tensor) -> Tensor:
        out = images.new_zeros((len(cls), *images.shape[-2:]))
        rgb = unnormalize(images.detach()).permute(0, 2, 3, 1).cpu().numpy()
        for b in range(images.shape[0]):
            rows = torch.nonzero(img_idx == b).flatten()
            if len(rows):
                out[rows] = self.image_maps(images[b], cls[rows], superpixels(rgb[b], self.seed)).to(out.dtype)
        return out

    def method_params(self) -> dict[str, Any]:
        return dict(lime_samples=self.samples, lime_kernel_width=self.kernel_width, random_seed=self.seed,
                    perturbation_score=self.score, segmentation=dict(method="skimage quickshift", **QUICKSHIFT),
                    distance="cosine", hide="superpixel mean colour", regressor=f"sklearn Ridge(alpha={RIDGE_ALPHA})")
