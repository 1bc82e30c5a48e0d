"""Ranks, world size, the wait between sampling ranks, and the fix that lets CPU-only ranks
train one model."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from axolotl_ipo.upstream.axolotl import guard_cuda_p2p_check

LOG = logging.getLogger("axolotl_ipo")


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
        guard_cuda_p2p_check()


def fix_cpu_device_map(cfg: MutableMapping) -> None:
    """Axolotl sets `device_map = {"": LOCAL_RANK}` for every multi-rank run; an integer
    device means CUDA, so on CPU-only ranks the model must be loaded without a device map."""
    if is_cpu_multiprocess():
        cfg["device_map"] = None


def store_barrier(
    store: Any, rank: int, world_size: int, poll_s: float = 2.0, report_s: float = 300.0
) -> Callable[[], None]:
    """The barrier of a multi-rank sampling run, kept on the pair store's files, not on NCCL.

    Ranks finish sampling at different times, hours apart on a large dataset; a collective
    barrier would abort the job once the slowest rank is more than the process group's timeout
    (Axolotl's default 1800 s) behind. Instead rank 0 waits until every planned batch is
    committed and every rank has recorded its counts (then merges) and the other ranks wait
    until the store is complete. No timeout: a rank that dies ends the launch (torchrun stops
    the other ranks). The store must be on a filesystem every rank sees, as the merge already
    requires."""
    if world_size <= 1:
        return lambda: None

    def missing() -> int:
        if store.is_complete():
            return 0
        if rank != 0:
            return -1  # unknown: waiting for rank 0's merge
        return len(store.missing_batches()) + len(store.missing_rank_counts(world_size))

    def wait() -> None:
        started = reported = time.monotonic()
        while (left := missing()) != 0:
            if time.monotonic() - reported >= report_s:
                reported = time.monotonic()
                what = (f"{left} batch(es) or rank record(s) from other ranks" if left > 0
                        else "rank 0's merge")
                LOG.info("rank %d: waiting %.0f s so far for %s in %s", rank,
                         reported - started, what, store.dir)
            time.sleep(poll_s)

    return wait
