"""Device choice, seeding, deterministic mode and the environment record of a run."""
from __future__ import annotations

import os
import platform
import random
import sys
from importlib import metadata
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError


def select_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (GPU ``local_rank``) when available, else CPU; ``cpu``; ``cuda``; ``cuda:N``."""
    spec = str(spec or "auto").lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec!r} but CUDA is not available; use device=cpu or device=auto")
        return torch.device("cuda", local_rank) if spec == "cuda" else torch.device(spec)
    raise ConfigError(f"device={spec!r}: expected auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """Seed Python and NumPy in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic algorithms (bitwise-reproducible runs) or cuDNN autotuning (speed)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False


def resolve_num_workers(value: int) -> int:
    """-1 -> half the CPU cores, at most 8; otherwise the value (>= 0)."""
    value = int(value)
    if value >= 0:
        return value
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores // 2)


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def env_info(device: torch.device, seed: int, world_size: int = 1, **extra: Any) -> dict[str, Any]:
    """Versions, hardware and seed, for ``log/env.json``."""
    info: dict[str, Any] = dict(
        python=sys.version.split()[0],
        platform=platform.platform(),
        versions={p: _version(p) for p in ("torch", "torchvision", "timm", "numpy", "mmengine-lite", "mmengine", "pillow")},
        device=str(device),
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        seed=int(seed),
        world_size=int(world_size),
    )
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    info.update(extra)
    return info
