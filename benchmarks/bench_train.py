#!/usr/bin/env python
"""Training throughput at the paper's settings (resnet50, batch 16, crop 224).

Measures, in images per second:
  * loader: the training DataLoader alone (decode, random resize of the long
    side to 448-768, flip, colour jitter, normalise, 224 crop), as used by
    ``dywsss.engine.train``;
  * step: full training steps (forward, loss, backward, SGD step) on batches
    already on the device, for fp32 eager (the baseline) and, on CUDA, bf16
    autocast, channels-last and torch.compile, each against the same run's
    baseline;
  * end to end: loader feeding fp32 (CPU) or the fastest variant (CUDA) steps.

    python benchmarks/bench_train.py --steps 10 --batch-size 16
    python benchmarks/bench_train.py --data data/demo --num-workers 8 --variants all

Images come from ``--data`` (a VOC-layout tree) or, by default, a demo tree at
VOC-like sizes written to a temporary folder with dywsss.data.demo.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dywsss.config import load_config  # noqa: E402
from dywsss.engine import train as T  # noqa: E402
from dywsss.engine.runtime import resolve_num_workers, select_device  # noqa: E402
from dywsss.models import build_model  # noqa: E402

# name -> (bf16 autocast, channels_last, compile)
VARIANTS = {
    "fp32": (False, False, False),
    "fp32+cl": (False, True, False),
    "bf16": (True, False, False),
    "bf16+cl": (True, True, False),
    "fp32+compile": (False, False, True),
    "bf16+cl+compile": (True, True, True),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def demo_tree(n_images: int, out: Path) -> Path:
    from dywsss.data.demo import make_demo_voc

    make_demo_voc(out, n_train=n_images, n_val=1, seed=0, progress=False)
    return out


def make_cfg(data: Path, batch_size: int, crop: int, num_workers: int):
    return load_config(ROOT / "config" / "resnet50.py", dict(
        list_root=str(data), voc12_root=str(data / "VOC2012"), cls_label=str(data / "cls_labels.json"),
        train_list=str(data / "train_aug.txt"), val_list=str(data / "val.txt"), batch_size=batch_size,
        crop_size=crop, num_workers=num_workers, max_steps_per_epoch=0, session_name="bench"))


def loader_throughput(loader, batches: T.EpochBatchSampler, steps: int) -> float:
    """Images/s of the training loader alone (epochs repeated until ``steps`` batches)."""
    n, epoch, t0 = 0, 0, None
    while True:
        batches.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if t0 is None:  # first batch pays the worker start-up
                t0 = time.perf_counter()
                continue
            n += len(batch["label"])
            if n >= steps * batches.batch_size:
                return n / (time.perf_counter() - t0)
        epoch += 1


def step_throughput(network: str, device: torch.device, batch_size: int, crop: int, steps: int, warmup: int,
                    bf16: bool, channels_last: bool, compile_: bool) -> float:
    """Images/s of full training steps on a fixed device batch."""
    torch.manual_seed(0)
    model = build_model(network, pretrained=False, num_classes=20).to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile_ else model
    opt = T.build_optimizer(list(model.parameters()), dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4))
    x = torch.randn(batch_size, 3, crop, crop, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch_size, 20, device=device) > 0.85).float()

    def step() -> None:
        with T._autocast(device, bf16):
            loss = T.multilabel_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


def end_to_end(cfg, device: torch.device, steps: int, bf16: bool, channels_last: bool) -> float:
    """Images/s of the loader feeding training steps (what ``train`` sees)."""
    loader, batches, _ = T.build_loaders(cfg, T.check_training_data(cfg), 0, 1, device.type == "cuda")
    model = build_model(cfg.network, pretrained=False, num_classes=20).to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = T.build_optimizer(list(model.parameters()), cfg.optimizer)
    n, epoch, t0 = 0, 0, None
    while True:
        batches.set_epoch(epoch)
        for batch in loader:
            x = T._to_device(batch["img"], device, channels_last)
            with T._autocast(device, bf16):
                loss = T.multilabel_loss(model(x), batch["label"].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if t0 is None:
                _sync(device)
                t0 = time.perf_counter()
                continue
            n += len(batch["label"])
            if n >= steps * cfg.batch_size:
                _sync(device)
                return n / (time.perf_counter() - t0)
        epoch += 1


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile: more)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--network", default="resnet50")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=-1, help="-1: half the cores, at most 8")
    p.add_argument("--data", type=Path, default=None, help="VOC-layout tree (default: a temporary demo tree)")
    p.add_argument("--variants", default="auto",
                   help="comma list of " + ", ".join(VARIANTS) + "; auto: fp32,fp32+cl on CPU, all on CUDA")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    device = select_device(args.device)
    if args.variants == "auto":
        names = list(VARIANTS) if device.type == "cuda" else ["fp32", "fp32+cl"]
    else:
        names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    workers = resolve_num_workers(args.num_workers)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or demo_tree(max(64, (args.steps + 2) * args.batch_size), Path(tmp) / "demo")
        cfg = make_cfg(data, args.batch_size, args.crop, workers)
        cfg.network = args.network
        loader, batches, _ = T.build_loaders(cfg, T.check_training_data(cfg), 0, 1, device.type == "cuda")
        results: dict = dict(device=str(device), network=args.network, batch_size=args.batch_size, crop=args.crop,
                             num_workers=workers, torch_threads=torch.get_num_threads(), steps=args.steps)
        results["loader_img_s"] = loader_throughput(loader, batches, args.steps)
        del loader
        step = {}
        for name in names:
            bf16, cl, comp = VARIANTS[name]
            if bf16 and device.type != "cuda":
                continue  # the trainer never autocasts on CPU
            warm = args.warmup + (3 if comp else 0)
            step[name] = step_throughput(args.network, device, args.batch_size, args.crop, args.steps, warm,
                                         bf16, cl, comp)
        results["step_img_s"] = step
        fastest = max(step, key=step.get)
        bf16, cl, _ = VARIANTS[fastest]
        results["end_to_end_img_s"] = end_to_end(cfg, device, args.steps, bf16 and device.type == "cuda", cl)
        results["end_to_end_variant"] = fastest if not VARIANTS[fastest][2] else fastest.replace("+compile", "")

    base = step.get("fp32")
    print(f"device {device} | {args.network} batch {args.batch_size} crop {args.crop} | "
          f"{workers} loader workers, {torch.get_num_threads()} torch threads, {args.steps} timed steps")
    print(f"  loader alone          {results['loader_img_s']:8.1f} img/s")
    for name, ips in step.items():
        rel = f"x{ips / base:.2f} vs fp32 eager" if base else ""
        print(f"  step {name:<16s} {ips:8.1f} img/s  {rel}")
    print(f"  end to end ({results['end_to_end_variant']}) {results['end_to_end_img_s']:8.1f} img/s")
    best = max(step.values())
    verdict = "the loader keeps up" if results["loader_img_s"] >= best else "the LOADER is the bottleneck"
    print(f"  loader / fastest step = {results['loader_img_s'] / best:.2f} ({verdict})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
