"""RISE (Petsiuk, Das & Saenko, BMVC 2018), written here: no maintained package implements it.

Saliency of class c at pixel u (Eq. 6, Monte Carlo with N masks):
``S_c(u) = 1 / (N p) * sum_i score_c(x * M_i) M_i(u)``. Each mask M_i comes
from a random binary s x s grid (cells 1 with probability p), upsampled
bilinearly to ``(s + 1) * ceil(h / s)`` x ``(s + 1) * ceil(w / s)`` and
cropped to h x w at a random shift of less than one cell (Sec. 3.2). The
upsampling is the reference code's skimage ``resize(order=1, mode='reflect')``:
bilinear on pixel centres, the grid mirrored at its border (``d c b | a b c d``),
written as two small interpolation matrices (:func:`interpolation_matrix`) so
that all masks of a chunk come from one batched product. ``x * M`` multiplies
the normalised input, so masked pixels take the mean colour, as in the reference code.

The random grids and shifts are drawn once from ``random_seed``
(:func:`rise_grids`) and reused for every image; the masks for an input size
are made from them in chunks of ``attr_batch_size`` (:func:`rise_masks`), each
chunk serving all images of the batch and all their classes. Unsigned with
``perturbation_score=prob`` (the paper's class probability; sigmoid here, as
the models are multi-label); signed with ``logit``.

Keys: ``rise_masks`` N (int >= 1, default 4000), ``rise_grid`` s (int >= 1,
default 7), ``rise_p`` (float in (0, 1], default 0.5), ``random_seed``, ``perturbation_score``.
"""
from __future__ import annotations

import math
from typing import Any

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
)


def rise_grids(n: int, s: int, p: float, seed: int) -> tuple[Tensor, Tensor]:
    """The random part of N masks: binary grids [N, s, s] (1 with probability p), shift fractions [N, 2] in [0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    grids = (torch.rand((n, s, s), generator=gen) < p).float()
    shifts = torch.rand((n, 2), generator=gen)
    return grids, shifts


def interpolation_matrix(out: int, n: int, device: torch.device | None = None) -> Tensor:
    """Bilinear resampling of n samples to ``out`` as a matrix [out, n] (pixel centres, mirrored border).

    Output pixel u reads input coordinate ``(u + 0.5) n / out - 0.5``, the two
    neighbouring samples weighted linearly; an index -1 or n is mirrored to 1
    or n - 2 (skimage's ``mode='reflect'``, scipy's ``mirror``).
    """
    coord = (torch.arange(out, device=device, dtype=torch.float64) + 0.5) * n / out - 0.5
    low = torch.floor(coord).long()
    frac = coord - low
    matrix = torch.zeros(out, n, dtype=torch.float64, device=device)
    for idx, weight in ((low, 1 - frac), (low + 1, frac)):
        idx = idx.abs()  # -1 -> 1
        idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx).clamp(0, n - 1)  # n -> n - 2 (n == 1: 0)
        matrix.index_put_((torch.arange(out, device=device), idx), weight, accumulate=True)
    return matrix.float()


def rise_masks(grids: Tensor, shifts: Tensor, height: int, width: int) -> Tensor:
    """Masks [n, height, width] in [0, 1]: each grid upsampled to (s + 1) cells a side, cropped at its shift.

    Petsiuk et al. 2018, Sec. 3.2: cell = ceil(size / s); the crop starts at
    ``floor(shift * cell)`` pixels, less than one cell.
    """
    n, s, _ = grids.shape
    cell_h, cell_w = math.ceil(height / s), math.ceil(width / s)
    rows = interpolation_matrix((s + 1) * cell_h, s, grids.device)
    cols = interpolation_matrix((s + 1) * cell_w, s, grids.device)
    dy = (shifts[:, 0] * cell_h).long().clamp(max=cell_h - 1)
    dx = (shifts[:, 1] * cell_w).long().clamp(max=cell_w - 1)
    rows = rows[dy[:, None] + torch.arange(height, device=grids.device)]  # [n, height, s]
    cols = cols[dx[:, None] + torch.arange(width, device=grids.device)]  # [n, width, s]
    return torch.einsum("nhi,nij,nwj->nhw", rows, grids, cols)


@EXPLAINERS.register("rise")
class RISE(InputSpaceExplainer):
    """Petsiuk et al. 2018: score-weighted mean of N random masks, divided by p (Eq. 6)."""

    libraries = ("torch", "timm")

    def __init__(self, model: nn.Module, cfg: Config | dict | None = None) -> None:
        super().__init__(model, cfg)
        self.n_masks = config_int(cfg, "rise_masks", 4000)
        self.grid = config_int(cfg, "rise_grid", 7)
        self.p = config_float(cfg, "rise_p", 0.5, low=0.0, high=1.0)
        self.seed = config_int(cfg, "random_seed", DEFAULT_SEED, minimum=0)
        self.score = config_choice(cfg, "perturbation_score", "prob", SCORES)
        self.signed = self.score == "logit"
        self.grids, self.shifts = rise_grids(self.n_masks, self.grid, self.p, self.seed)

    @torch.no_grad()
    def attribute(self, images: Tensor, img_idx: Tensor, cls: Tensor) -> Tensor:
        B, _, h, w = images.shape
        device = images.device
        grids, shifts = self.grids.to(device), self.shifts.to(device)
        sums = images.new_zeros((len(cls), h * w), dtype=torch.float32)
        rows_of = [torch.nonzero(img_idx == b).flatten() for b in range(B)]
        for s in chunks(self.n_masks, self.batch_size):
            masks = rise_masks(grids[s], shifts[s], h, w)  # made once, used for every image
            flat = masks.reshape(len(masks), -1)
            for b, rows in enumerate(rows_of):
                if len(rows) == 0:
                    continue
                scores = class_score(self.model(images[b:b + 1] * masks[:, None].to(images.dtype)), self.score)
                sums[rows] += scores[:, cls[rows]].t() @ flat
        return (sums / (self.n_masks * self.p)).view(-1, h, w)

    def method_params(self) -> dict[str, Any]:
        return dict(rise_masks=self.n_masks, rise_grid=self.grid, rise_p=self.p, random_seed=self.seed,
                    perturbation_score=self.score, masking="x * M on the normalised input (mean colour)",
                    upsampling="bilinear, mirrored border (skimage resize order=1, reflect), random shift < 1 cell")
