"""Ranks, world size and barriers, plus the fix that lets CPU-only ranks train one model."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from axolotl_ipo import compat


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
    """Without ACCELERATE_USE_CPU, CPU ranks under torchrun silently train independent models;
    on a CUDA build of torch without a driver, Axolotl's P2P probe would crash them."""
    if is_cpu_multiprocess():
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")
        compat.guard_cuda_p2p_check()


def fix_cpu_device_map(cfg: MutableMapping) -> None:
    """Axolotl sets `device_map = {"": LOCAL_RANK}` for every multi-rank run; an integer
    device means CUDA, so on CPU-only ranks the model must be loaded without a device map."""
    if is_cpu_multiprocess():
        cfg["device_map"] = None


def barrier() -> None:
    """Wait for every rank (a no-op on a single process)."""
    if world_size() == 1:
        return
    from accelerate import PartialState

    PartialState().wait_for_everyone()
