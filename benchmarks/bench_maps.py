#!/usr/bin/env python
"""Images per second of the map stage's batched path against the original's per-image, per-class loop.

Both sides compute the same normalised maps (scale 1.0 plus the flip, per-class
min-max) for the same random images and classes on the same model in one run:

- ``loop``: the original's way: per image, one forward pass per flip and one
  map per class (upsampled and normalised class by class, in numpy); for the
  ViT, one forward/backward per (image, class), as Chefer's batch-size-1 code.
- ``stage``: :func:`dywsss.engine.maps.explain_batch` on batches of equal-size
  images, all classes of an image (and its flip) in one pass, maps on the device.

The input-space methods (``--methods``: gradient, input_x_gradient,
integrated_gradients, smoothgrad, guided_backprop, occlusion, rise, lime, lrp)
run on the CNN; their loop calls the same explainer on one (image, class,
flip) at a time (each call still batches its own IG steps, SmoothGrad samples
and perturbed images), so the ratio measures the batching over rows and the
sharing of perturbed forward passes across an image's classes. Their
parameters can be reduced for a quick run (``--ig-steps`` etc.).

    python benchmarks/bench_maps.py --device cpu --n 16 --height 188 --width 250
    python benchmarks/bench_maps.py --device cuda --n 128 --height 375 --width 500 --network resnet50
    python benchmarks/bench_maps.py --device cpu --n 4 --height 64 --width 80 --vit '' --classes 2 \
        --rise-masks 200 --lime-samples 100 --methods gradient occlusion rise
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import numpy as np
import timm
import torch
import torch.nn.functional as F

from dywsss.engine.maps import explain_batch
from dywsss.explain import EXPLAINERS


def loop_cam(model: torch.nn.Module, images: torch.Tensor, classes: list[list[int]]) -> list[np.ndarray]:
    """The original's CAM loop: per image a forward per flip, then a map per class in numpy."""
    weight = model.get_classifier().weight.detach()
    H, W = images.shape[-2:]
    out = []
    for x, cs in zip(images, classes):
        sums = {c: np.zeros((H, W), np.float32) for c in cs}
        for flipped in (False, True):
            inp = (x.flip(-1) if flipped else x)[None]
            with torch.no_grad():
                f = model.forward_features(inp)[0]
            for c in cs:
                cam = F.relu(torch.einsum("khw,k->hw", f, weight[c]))
                up = F.interpolate(cam[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
                up = up.cpu().numpy()
                sums[c] += up[:, ::-1] if flipped else up
        out.append(np.stack([_np_normalise(sums[c]) for c in cs]) if cs else np.zeros((0, H, W), np.float32))
    return out


def loop_explainer(explainer, images: torch.Tensor, classes: list[list[int]]) -> list[np.ndarray]:
    """Any explainer one (image, class) at a time, flip included, normalised in numpy."""
    H, W = images.shape[-2:]
    size = explainer.input_size or (H, W)
    out = []
    for x, cs in zip(images, classes):
        maps = []
        for c in cs:
            total = np.zeros((H, W), np.float32)
            resized = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)
            for flipped in (False, True):
                raw = explainer.explain(resized.flip(-1) if flipped else resized, [[c]])[0]
                up = F.interpolate(raw[None].float(), size=(H, W), mode="bilinear", align_corners=False)[0, 0]
                up = up.cpu().numpy()
                total += up[:, ::-1] if flipped else up
            maps.append(_np_normalise(total))
        out.append(np.stack(maps) if maps else np.zeros((0, H, W), np.float32))
    return out


def _np_normalise(s: np.ndarray) -> np.ndarray:
    s = np.maximum(s, 0)
    m, M = s.min(), s.max()
    s = np.where(s < m + 1e-5, 0, s)
    return np.clip((s - m - 1e-5) / (M - m + 1e-5), 0, 1)


def stage_maps(explainer, images: torch.Tensor, classes: list[list[int]], batch: int) -> list[np.ndarray]:
    out = []
    for i in range(0, len(images), batch):
        maps = explain_batch(explainer, images[i:i + batch], classes[i:i + batch], (1.0,), True)
        out += [m.cpu().numpy() for m in maps]
    return out


def timed(fn: Callable[[], list], device: torch.device, repeats: int) -> tuple[float, list]:
    """Best time of ``repeats`` runs after a warm-up; ``repeats=0``: the one (cold) run."""
    if repeats == 0:
        t0 = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, result
    result = fn()  # warm-up (allocator, oneDNN / cuDNN kernel choice)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench(name: str, model, explainer, loop: Callable[[], list], images, classes, batch, device, repeats) -> dict:
    t_loop, ref = timed(loop, device, repeats)
    t_stage, got = timed(lambda: stage_maps(explainer, images, classes, batch), device, repeats)
    diff = max((float(np.abs(a - b).max()) for a, b in zip(got, ref) if a.size), default=0.0)
    n = len(images)
    return dict(method=name, images=n, classes_per_image=len(classes[0]), loop_img_s=n / t_loop,
                stage_img_s=n / t_stage, speedup=t_loop / t_stage, max_abs_diff=diff)


def ceiling(model: torch.nn.Module, images: torch.Tensor, rows: int, device: torch.device, repeats: int) -> dict:
    """What batching alone can gain here: plain torch forward (+ input backward) per row, batch 1 against ``rows``.

    No explainer code: the gradient methods cannot beat the fwd+bwd ratio, the
    perturbation methods (forward only) the forward ratio, except by sharing
    passes across an image's classes.
    """
    x = images[:1].expand(rows, *images.shape[1:]).contiguous(memory_format=torch.channels_last)

    def fwd_bwd(batch: torch.Tensor) -> list:
        batch = batch.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(batch)[:, 0].sum(), batch)
        return [g]

    def forward(batch: torch.Tensor) -> list:
        with torch.no_grad():
            return [model(batch)]

    out = dict(method="ceiling: torch per row", images=rows, classes_per_image=0)
    for name, fn in (("fwd_bwd", fwd_bwd), ("fwd", forward)):
        t_one, _ = timed(lambda: [fn(x[i:i + 1]) for i in range(rows)], device, repeats)
        t_all, _ = timed(lambda: fn(x), device, repeats)
        out[f"{name}_speedup"] = t_one / t_all
    return out


INPUT_SPACE_METHODS = ("gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "guided_backprop",
                       "occlusion", "rise", "lime", "lrp")


def method_cfg(args: argparse.Namespace) -> dict:
    """The input-space methods' config keys from the command line (defaults: the library's)."""
    return dict(ig_steps=args.ig_steps, smoothgrad_samples=args.smoothgrad_samples, rise_masks=args.rise_masks,
                lime_samples=args.lime_samples, occlusion_window=args.occlusion_window,
                occlusion_stride=args.occlusion_stride, attr_batch_size=args.attr_batch_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--network", default="resnet18", help="'' to skip CAM")
    p.add_argument("--vit", default="vit_small_patch16_224", help="'' to skip transformer_attribution")
    p.add_argument("--vit-depth", type=int, default=0, help="0: the model's own depth")
    p.add_argument("--n", type=int, default=16, help="images")
    p.add_argument("--height", type=int, default=188)
    p.add_argument("--width", type=int, default=250)
    p.add_argument("--classes", type=int, nargs="+", default=[2, 20], help="classes per image (runs each)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="timed runs after a warm-up (0: one cold run)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="CNN in the default memory format (the stage uses channels_last for CNNs)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--methods", nargs="*", default=list(INPUT_SPACE_METHODS), choices=INPUT_SPACE_METHODS,
                   help="input-space methods to run on the CNN (none: only CAM and the ViT)")
    p.add_argument("--ig-steps", type=int, default=50)
    p.add_argument("--smoothgrad-samples", type=int, default=50)
    p.add_argument("--rise-masks", type=int, default=4000)
    p.add_argument("--lime-samples", type=int, default=1000)
    p.add_argument("--occlusion-window", type=int, default=32)
    p.add_argument("--occlusion-stride", type=int, default=16)
    p.add_argument("--attr-batch-size", type=int, default=64)
    p.add_argument("--loop-attr-batch-size", type=int, default=0,
                   help="attr_batch_size of the loop's explainer (0: the same; 1: one perturbed image per "
                        "forward, captum's default perturbations_per_eval)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.n, 3, args.height, args.width, device=device)
    rows = []
    cnn = timm.create_model(args.network, pretrained=False, num_classes=20).to(device).eval() if args.network else None
    cnn_images = images
    if cnn is not None and args.channels_last:  # the stage's default for CNNs; the loop gets it too
        cnn.to(memory_format=torch.channels_last)
        cnn_images = images.contiguous(memory_format=torch.channels_last)
    for k in args.classes if cnn is not None else ():
        classes = [list(range(k))] * args.n
        rows.append(bench(f"cam/{args.network}", cnn, EXPLAINERS.get("cam")(cnn),
                          lambda: loop_cam(cnn, cnn_images, classes), cnn_images, classes, args.batch, device,
                          args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    if cnn is not None and args.methods:
        ceil = ceiling(cnn, cnn_images, args.attr_batch_size, device, args.repeats)
        print(json.dumps(ceil), flush=True)
    for method in args.methods if cnn is not None else ():
        explainer = EXPLAINERS.get(method)(cnn, method_cfg(args))
        loop_cfg = dict(method_cfg(args), attr_batch_size=args.loop_attr_batch_size or args.attr_batch_size)
        looped = EXPLAINERS.get(method)(cnn, loop_cfg)
        for k in args.classes:
            classes = [list(range(k))] * args.n
            rows.append(bench(f"{method}/{args.network}", cnn, explainer,
                              lambda: loop_explainer(looped, cnn_images, classes), cnn_images, classes, args.batch,
                              device, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    if args.vit and "transformer_attribution" in EXPLAINERS:
        kw = dict(depth=args.vit_depth) if args.vit_depth else {}
        vit = timm.create_model(args.vit, pretrained=False, num_classes=20, **kw).to(device).eval()
        ta = EXPLAINERS.get("transformer_attribution")(vit)
        for k in args.classes:
            classes = [list(range(k))] * args.n
            rows.append(bench(f"transformer_attribution/{args.vit}", vit, ta,
                              lambda: loop_explainer(ta, images, classes), images, classes, args.batch, device,
                              args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\ndevice: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"threads {torch.get_num_threads()}, images {args.height}x{args.width}")
    print(f"{'method':48s} {'K':>3s} {'loop img/s':>11s} {'stage img/s':>12s} {'speedup':>8s} {'max|diff|':>10s}")
    for r in rows:
        print(f"{r['method']:48s} {r['classes_per_image']:3d} {r['loop_img_s']:11.2f} {r['stage_img_s']:12.2f} "
              f"{r['speedup']:8.2f} {r['max_abs_diff']:10.2e}")
    if cnn is not None and args.methods:
        print(f"ceiling on this device ({args.network}, batch 1 vs {args.attr_batch_size} rows): forward+backward "
              f"{ceil['fwd_bwd_speedup']:.2f}x, forward {ceil['fwd_speedup']:.2f}x")


if __name__ == "__main__":
    main()
