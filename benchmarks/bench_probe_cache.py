#!/usr/bin/env python
"""Seconds per probe-training epoch on the feature cache against recomputing the frozen backbone's features.

Both sides train the same head on the same batches (``EpochBatchSampler``, un-augmented
centre crops) in one run:

- ``recompute`` (baseline): every step runs the backbone on the batch's images
  (:class:`dywsss.engine.probe_train.LiveFeatures`), which is what augmentation requires;
- ``cache``: the steps read float16 rows of the memory-mapped cache
  (:class:`dywsss.engine.probe_train.CachedFeatures`), built once (its time is printed too).

    python benchmarks/bench_probe_cache.py --n 96                       # synthetic demo images, Lite0 offline weights
    python benchmarks/bench_probe_cache.py --data data/demo --list train_aug.txt --head mlp2 --device cuda
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

from dywsss.data.demo import make_demo_voc
from dywsss.data.transforms import val_transform
from dywsss.data.datasets import VOCClassification
from dywsss.data.voc import load_cls_labels, read_image_list
from dywsss.engine.feature_cache import feature_cache
from dywsss.engine.probe_train import CachedFeatures, EpochBatchSampler, LiveFeatures, probe_settings
from dywsss.metrics.probe_losses import get_probe_loss
from dywsss.models.builder import build_model
from dywsss.models.probes import build_probe_model


def epoch_seconds(model, source, settings, device: torch.device, epochs: int) -> float:
    """Wall time of ``epochs`` training epochs of the head (forward, loss, backward, Adam step)."""
    loss = get_probe_loss(settings.loss)
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-3)
    sampler = EpochBatchSampler(len(source), settings.batch_size, seed=0)
    model.train()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for feats, labels in source.batches(sampler):
            value = loss.per_image(model.forward_head(feats.to(device)), labels.to(device)).mean()
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="", help="a VOC-layout root with cls_labels.json (default: synthetic)")
    ap.add_argument("--list", default="train_aug.txt")
    ap.add_argument("--n", type=int, default=96, help="synthetic images when --data is not given")
    ap.add_argument("--network", default="efficientnet_lite0")
    ap.add_argument("--pretrained", default="lite0_package")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--head", default="linear")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "demo"
        if not args.data:
            make_demo_voc(root, n_train=args.n, n_val=8, seed=0, min_side=160, max_side=256, progress=False)
        list_file, labels = root / args.list, root / "cls_labels.json"
        torch.manual_seed(0)
        backbone = build_model(args.network, pretrained=args.pretrained or False, num_classes=20)
        model = build_probe_model(backbone, args.head, 20).to(device)
        t0 = time.perf_counter()
        cache = feature_cache(model, list_file, labels, root / "VOC2012", Path(tmp) / "cache", args.size,
                              batch_size=args.batch, device=device, progress=False, log=lambda m: None)
        build = time.perf_counter() - t0
        dataset = VOCClassification(read_image_list(list_file), root / "VOC2012", load_cls_labels(labels),
                                    val_transform(args.size))
        settings = probe_settings(dict(probe=args.head, probe_batch_size=args.batch))
        recompute = epoch_seconds(copy.deepcopy(model), LiveFeatures(model, dataset, device, seed=0), settings,
                                  device, args.epochs)
        cached = epoch_seconds(copy.deepcopy(model), CachedFeatures(cache), settings, device, args.epochs)
    n = len(dataset)
    print(json.dumps(dict(network=args.network, head=args.head, images=n, size=args.size, device=str(device),
                          cache_build_s=round(build, 3), cache_images_per_s=round(n / build, 1),
                          recompute_epoch_s=round(recompute, 3), cache_epoch_s=round(cached, 4),
                          speedup=round(recompute / cached, 1),
                          epochs_to_repay_build=round(build / max(recompute - cached, 1e-9), 2))))


if __name__ == "__main__":
    main()
