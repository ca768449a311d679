"""Insertion and deletion (Petsiuk et al. 2018, RISE §4.1; beyond-spec 3.3), batched over (image, class) pairs.

On the per-sample stage's network input ``x`` (``loss_input``: the centre crop, or the
resized whole image) with the class map ``A_c`` cropped/padded to that input frame
(:func:`map_to_input_frame`): the N input pixels are ordered by ``A_c`` descending, ties in
row-major order. For k = 0..S (``insdel_steps``) the first ``floor(k N / S)`` pixels are

* deletion: set to 0 in the normalised input (all channels);
* insertion: copied from ``x`` into a canvas that starts as ``x`` blurred by torchvision's
  ``gaussian_blur`` (kernel 11, sigma 5).

``p_k`` = sigmoid of class c's logit; score = trapezoid area
``(sum_k p_k - (p_0 + p_S) / 2) / S``; the ``_norm`` variants use ``p_k / p_0``.
Insertion: higher is better; deletion: lower is better.

All S + 1 perturbed inputs of several pairs go through the network together, in batches
of ``batch_size`` rows. This is the only module of :mod:`dywsss.metrics` that imports torch.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from ..data.transforms import center_crop
from ..mapfile import load_maps

MODES = ("insertion", "deletion")
BLUR_KERNEL = 11
BLUR_SIGMA = 5.0
DEFAULT_STEPS = 100
LOSS_INPUTS = ("center_crop", "full_image")


# ------------------------------------------------------------------ maps in the input frame
def map_to_input_frame(cams: torch.Tensor | np.ndarray, loss_input: str, size: int) -> torch.Tensor:
    """Image-size maps [K, H, W] in the network input's frame [K, size, size].

    ``center_crop``: exactly where :func:`dywsss.data.transforms.center_crop` puts the
    image (the same function is applied to the maps, zero padded); ``full_image``:
    resized to ``size`` x ``size`` (bilinear, antialiased when shrinking, as the image).
    """
    cams = torch.as_tensor(np.asarray(cams, dtype=np.float32)) if isinstance(cams, np.ndarray) else cams.float()
    if cams.ndim != 3:
        raise ValueError(f"maps must be [K, H, W], got {tuple(cams.shape)}")
    if loss_input == "center_crop":
        return center_crop(cams, int(size))
    if loss_input == "full_image":
        if cams.shape[0] == 0:
            return cams.new_zeros((0, size, size))
        shrink = size < cams.shape[-2] or size < cams.shape[-1]
        return F.interpolate(cams[None], size=(size, size), mode="bilinear", align_corners=False,
                             antialias=shrink)[0]
    raise ValueError(f"loss_input={loss_input!r}: expected one of {', '.join(LOSS_INPUTS)}")


def input_frame_maps(map_path: str | os.PathLike, classes: Sequence[int], loss_input: str, size: int,
                     allow_pickle: bool = False) -> torch.Tensor:
    """The maps of ``classes`` from a map file, in the input frame [len(classes), size, size];
    a class without a stored map gets an all-zero map."""
    file_classes, cams = load_maps(map_path, allow_pickle=allow_pickle)
    index = {int(c): k for k, c in enumerate(file_classes)}
    h, w = cams.shape[1:] if cams.shape[0] else (size, size)
    full = np.zeros((len(classes), h, w), np.float32)
    for j, c in enumerate(classes):
        if int(c) in index:
            full[j] = cams[index[int(c)]]
    return map_to_input_frame(full, loss_input, size)


# ------------------------------------------------------------------ curves
def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel of each map [P, h, w] -> int64 [P, h*w]: 0 = largest value, ties in row-major order."""
    flat = maps.reshape(maps.shape[0], -1).float()
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def uses_channels_last(model: nn.Module) -> bool:
    """True when the model's convolution weights are channels-last (then so are the perturbed batches)."""
    for p in model.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def step_counts(n_pixels: int, steps: int) -> torch.Tensor:
    """``floor(k N / S)`` for k = 0..S (int64 [S + 1])."""
    return torch.div(torch.arange(steps + 1, dtype=torch.int64) * n_pixels, steps, rounding_mode="floor")


def blurred(inputs: torch.Tensor) -> torch.Tensor:
    """The insertion canvas: torchvision's gaussian_blur with kernel 11, sigma 5."""
    return gaussian_blur(inputs, kernel_size=[BLUR_KERNEL, BLUR_KERNEL], sigma=[BLUR_SIGMA, BLUR_SIGMA])


@torch.inference_mode()
def perturbation_curves(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    image_index: Sequence[int],
    classes: Sequence[int],
    steps: int = DEFAULT_STEPS,
    modes: Sequence[str] = MODES,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """``p_k`` for k = 0..S of every pair: {mode: float64 [P, S + 1]}.

    ``inputs`` [B, 3, h, w]: the network inputs (normalised, on the model's device);
    ``maps`` [P, h, w]: one map per (image, class) pair in the input frame;
    ``image_index[p]`` / ``classes[p]``: the pair's image row and 0-based class.
    Rows (pair, step) are sent through the network ``batch_size`` at a time (channels-last when
    the model is, e.g. after the map stage's ``channels_last``).
    """
    if steps < 1:
        raise ValueError(f"insdel_steps must be >= 1, got {steps}")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown perturbation mode(s) {bad}; expected {MODES}")
    n_pairs = maps.shape[0]
    img = torch.as_tensor(np.asarray(image_index, dtype=np.int64), device=inputs.device)
    cls = torch.as_tensor(np.asarray(classes, dtype=np.int64), device=inputs.device)
    if img.numel() != n_pairs or cls.numel() != n_pairs:
        raise ValueError(f"{n_pairs} maps but {img.numel()} image indices and {cls.numel()} classes")
    if tuple(maps.shape[1:]) != tuple(inputs.shape[2:]):
        raise ValueError(f"maps are {tuple(maps.shape[1:])} but inputs {tuple(inputs.shape[2:])}: put the maps in "
                         "the input frame first (map_to_input_frame)")
    h, w = inputs.shape[2:]
    channels_last = uses_channels_last(model)
    ranks = pixel_ranks(maps.to(inputs.device))
    counts = step_counts(h * w, steps).to(inputs.device)
    total = n_pairs * (steps + 1)
    out = {}
    for mode in modes:
        canvas = blurred(inputs) if mode == "insertion" else torch.zeros_like(inputs)
        probs = torch.empty(total, dtype=torch.float64)
        for start in range(0, total, batch_size):
            rows = torch.arange(start, min(start + batch_size, total), device=inputs.device)
            pair, k = rows // (steps + 1), rows % (steps + 1)
            revealed = (ranks[pair] < counts[k, None]).view(-1, 1, h, w)  # the first floor(kN/S) pixels
            x, base = inputs[img[pair]], canvas[img[pair]]
            # insertion: revealed pixels come from x, the rest from the blurred canvas;
            # deletion: revealed pixels become 0, the rest stay x
            batch = torch.where(revealed, x, base) if mode == "insertion" else torch.where(revealed, base, x)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            logits = model(batch)
            probs[start:start + rows.numel()] = torch.sigmoid(
                logits.gather(1, cls[pair][:, None])[:, 0].double()).cpu()
        out[mode] = probs.view(n_pairs, steps + 1).numpy()
    return out


def curve_area(p: np.ndarray) -> np.ndarray:
    """Trapezoid area under curves [P, S + 1] on [0, 1]: ``(sum_k p_k - (p_0 + p_S) / 2) / S``."""
    p = np.asarray(p, dtype=np.float64)
    steps = p.shape[-1] - 1
    return (p.sum(-1) - (p[..., 0] + p[..., -1]) / 2) / steps


def curve_scores(curves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{``insertion``, ``insertion_norm``, ``deletion``, ``deletion_norm``: [P]} from :func:`perturbation_curves`."""
    out = {}
    for mode, p in curves.items():
        out[mode] = curve_area(p)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{mode}_norm"] = curve_area(p / p[:, :1])
    return out


def image_faithfulness(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: Sequence[torch.Tensor],
    classes: Sequence[Sequence[int]],
    steps: int = DEFAULT_STEPS,
    modes: Sequence[str] = MODES,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Per-image insertion/deletion (+ ``_norm``): the mean over each image's classes.

    ``inputs`` [B, 3, h, w]; ``maps[i]`` [K_i, h, w] in the input frame (see
    :func:`input_frame_maps`) for ``classes[i]``. An image without classes gets NaN.
    Returns {column: float64 [B]}.
    """
    if len(maps) != inputs.shape[0] or len(classes) != inputs.shape[0]:
        raise ValueError(f"{inputs.shape[0]} inputs but {len(maps)} map sets and {len(classes)} class lists")
    image_index = [i for i, c in enumerate(classes) for _ in c]
    flat_classes = [int(k) for c in classes for k in c]
    columns = [col for m in modes for col in (m, f"{m}_norm")]
    if not flat_classes:
        return {col: np.full(inputs.shape[0], np.nan) for col in columns}
    stacked = torch.cat([m.to(inputs.device).float() for m in maps if m.shape[0]])
    scores = curve_scores(perturbation_curves(model, inputs, stacked, image_index, flat_classes, steps, modes,
                                              batch_size))
    group = np.asarray(image_index)
    n_per = np.bincount(group, minlength=inputs.shape[0])
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for col in columns:
            out[col] = np.bincount(group, weights=scores[col], minlength=inputs.shape[0]) / n_per
    return out


def batch_faithfulness(
    model: nn.Module,
    inputs: torch.Tensor,
    names: Sequence[str],
    map_dir: str | os.PathLike,
    classes: Sequence[Sequence[int]],
    loss_input: str,
    size: int,
    steps: int = DEFAULT_STEPS,
    modes: Sequence[str] = MODES,
    batch_size: int = 64,
    allow_pickle: bool = False,
) -> dict[str, np.ndarray]:
    """:func:`image_faithfulness` for a batch of the per-sample stage: ``inputs`` [B, 3, size, size]
    (the ``loss_input`` transform of the images ``names``, on the model's device), the maps read from
    ``map_dir/<name>.npz`` for each image's ground-truth ``classes``."""
    from .segmentation import map_file

    maps = [input_frame_maps(map_file(map_dir, n), c, loss_input, size, allow_pickle) for n, c in zip(names, classes)]
    return image_faithfulness(model, inputs, maps, classes, steps, modes, batch_size)
