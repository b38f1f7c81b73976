"""Data-parallel training under `torchrun` (DistributedDataParallel), PyTorch's own engine.

Launched with ``WORLD_SIZE`` > 1, every rank draws the same seeded batch stream and trains on its
own slice of each batch (rows rank, rank + world, …); DDP averages the gradients, so every rank
takes the same step and holds the same weights and masks. Only rank 0 writes files and reports.
"""

from __future__ import annotations

import os

import torch
from torch import nn


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if world_size() <= 1:
        return 0
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def local_device(device: str) -> str:
    """``cuda`` under torchrun means this rank's GPU (``LOCAL_RANK``)."""
    if device == "cuda" and world_size() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def wrap(module: nn.Module, device: str) -> nn.Module:
    """``module`` itself on one process; a DistributedDataParallel view of it under torchrun."""
    if world_size() <= 1:
        return module
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(module, device_ids=ids)


def shard(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of a batch (all of them on one process)."""
    size = world_size()
    if size <= 1:
        return x, y
    here = rank()
    return x[here::size], y[here::size]
