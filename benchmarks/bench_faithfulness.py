#!/usr/bin/env python
"""Time batched insertion/deletion against a per-step loop (one forward per perturbed input).

    python benchmarks/bench_faithfulness.py                       # CPU: resnet18 at 112 px, 6 pairs, 50 steps
    python benchmarks/bench_faithfulness.py --device cuda --network resnet50 --size 224 --pairs 64

(a) batched: dywsss.metrics.faithfulness.perturbation_curves, the S + 1 inputs of all pairs
    through the network --batch rows at a time (both modes);
(b) baseline: for each pair and step, build that one perturbed input and run the network on it
    (the usual reference loop), both modes; timed on --baseline_pairs pairs and scaled to --pairs.
Prints the speed-up (goal >= 5x on CPU), the largest difference of the curves, and (a)'s
images/s ((image, class) pairs per second, both modes).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dywsss.metrics.faithfulness import (  # noqa: E402
    blurred, perturbation_curves, pixel_ranks, step_counts, uses_channels_last,
)


@torch.inference_mode()
def per_step_loop(model, inputs, maps, image_index, classes, steps):
    """The reference: one perturbed input and one forward per step."""
    h, w = inputs.shape[2:]
    ranks = pixel_ranks(maps)
    counts = step_counts(h * w, steps)
    out = {m: np.empty((maps.shape[0], steps + 1)) for m in ("insertion", "deletion")}
    for p, (i, c) in enumerate(zip(image_index, classes)):
        x = inputs[i:i + 1]
        canvas = {"insertion": blurred(x), "deletion": torch.zeros_like(x)}
        for mode in out:
            for k in range(steps + 1):
                revealed = (ranks[p] < counts[k]).view(1, 1, h, w)
                xk = torch.where(revealed, x, canvas[mode]) if mode == "insertion" else \
                    torch.where(revealed, canvas[mode], x)
                if uses_channels_last(model):
                    xk = xk.contiguous(memory_format=torch.channels_last)
                out[mode][p, k] = torch.sigmoid(model(xk)[0, c].double()).item()
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--network", default="resnet18")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--pairs", type=int, default=6, help="(image, class) pairs")
    p.add_argument("--baseline_pairs", type=int, default=1)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=64, help="rows per forward in the batched version")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--channels-last", action="store_true",
                   help="model (and so both versions' inputs) in channels-last memory format")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.network, pretrained=False, num_classes=20).to(device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_img = max(1, args.pairs // 2)
    inputs = torch.randn(n_img, 3, args.size, args.size, device=device)
    maps = torch.rand(args.pairs, args.size, args.size, device=device)
    image_index = [k % n_img for k in range(args.pairs)]
    classes = [(3 * k) % 20 for k in range(args.pairs)]
    perturbation_curves(model, inputs, maps[:1], image_index[:1], classes[:1], steps=4, batch_size=args.batch)  # warm
    sync(device)
    t0 = time.perf_counter()
    batched = perturbation_curves(model, inputs, maps, image_index, classes, steps=args.steps, batch_size=args.batch)
    sync(device)
    t_batched = time.perf_counter() - t0
    nb = min(args.baseline_pairs, args.pairs)
    t0 = time.perf_counter()
    loop = per_step_loop(model, inputs, maps[:nb], image_index[:nb], classes[:nb], args.steps)
    sync(device)
    t_loop = (time.perf_counter() - t0) * args.pairs / nb
    diff = max(np.abs(batched[m][:nb] - loop[m]).max() for m in loop)
    fmt = "channels-last" if args.channels_last else "contiguous"
    print(f"{args.network} ({fmt}) at {args.size}px on {device}, {args.pairs} pairs x 2 modes x {args.steps + 1} steps")
    print(f"(a) batched (batch {args.batch}): {t_batched:8.2f}s  ({args.pairs / t_batched:.2f} pairs/s)")
    print(f"(b) per-step loop:       {t_loop:8.2f}s  (measured on {nb} pairs, scaled to {args.pairs})")
    print(f"max |curve(a) - curve(b)|: {diff:.2e}")
    print(f"speed-up of batching: {t_loop / t_batched:.1f}x (goal >= 5x on CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
