"""torchrun / DistributedDataParallel helpers.

A plain ``python run_...py`` has no ``WORLD_SIZE`` in its environment and stays
single-process; every helper then degrades to a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) without it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(use_cuda: bool, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes (NCCL on GPU, gloo on CPU).

    Reuses an existing group. With CUDA, each process uses GPU ``LOCAL_RANK``.
    """
    rank, world, local = env_world()
    if world <= 1:
        return DistInfo()
    if use_cuda:
        torch.cuda.set_device(local)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, dist.get_backend(), False)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s),
                            **({"device_id": torch.device("cuda", local)} if use_cuda else {}))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, backend, True)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return not is_dist() or dist.get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place; returns the tensor."""
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Maximum over ranks, in place; returns the tensor."""
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (first dimensions may differ), in rank order; ``[tensor]`` without a group."""
    if not is_dist():
        return [tensor]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, tensor.cpu())
    return out


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BN running statistics drift apart under DDP)."""
    if is_dist():
        for buf in module.buffers():
            dist.broadcast(buf, src=src)


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup(info: DistInfo) -> None:
    """Leave the process group if this code created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
