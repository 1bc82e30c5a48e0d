"""Ranks, world size and barriers, plus the fix that lets CPU-only ranks train one model."""

from __future__ import annotations

import os
from collections.abc import MutableMapping


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def is_cpu_multiprocess() -> bool:
    return world_size() > 1 and not cuda_available()


def request_cpu_process_group() -> None:
    """Without ACCELERATE_USE_CPU, CPU ranks under torchrun silently train independent models."""
    if is_cpu_multiprocess():
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")


def fix_cpu_device_map(cfg: MutableMapping) -> None:
    """Axolotl sets `device_map = {"": LOCAL_RANK}` for every multi-rank run; an integer
    device means CUDA, so on CPU-only ranks the model must be loaded without a device map."""
    if is_cpu_multiprocess():
        cfg["device_map"] = None


def barrier() -> None:
    """Wait for every rank (a no-op on a single process).

    On CPU-only ranks Accelerate's default state is not distributed before training (Axolotl
    creates it without `cpu=True`), so its `wait_for_everyone` would return at once: there the
    ranks meet in a gloo process group, which Accelerate reuses when training starts."""
    if world_size() == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized() and not cuda_available():
        dist.init_process_group("gloo")
    if dist.is_initialized():
        dist.barrier()
        return
    from accelerate import PartialState

    PartialState().wait_for_everyone()
