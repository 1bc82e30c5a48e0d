"""Ranks, world size, the wait between sampling ranks, and the fix that lets CPU-only ranks
train one model; what cannot run on CPU ranks (DeepSpeed) is refused before Axolotl starts."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from axolotl_ipo.errors import UserError
from axolotl_ipo.upstream.accelerate import single_process_launch_of_many
from axolotl_ipo.upstream.axolotl import guard_cuda_p2p_check

LOG = logging.getLogger("axolotl_ipo")

# `axolotl-ipo check` validates a config without training it: nothing is refused for the
# machine it runs on (it says instead what it could not check there).
_VALIDATING_ONLY = False

# How long a rank waits at the store barrier with no batch, rank record or merge appearing
# before it gives up (seconds; 0 waits forever).
BARRIER_TIMEOUT_ENV = "AXOLOTL_IPO_BARRIER_TIMEOUT"
DEFAULT_BARRIER_TIMEOUT_S = 3600.0
CPU_RANKS_LAUNCH = ("accelerate launch --multi_gpu --num_processes N --num_machines 1 "
                    "--mixed_precision no --dynamo_backend no -m axolotl.cli.train cfg.yml")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def broadcast_from_main(value: float | None) -> float | None:
    """Rank 0's ``value`` on every rank of an initialised process group (None stays None
    only if rank 0's is None); the value itself on one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def is_cpu_multiprocess() -> bool:
    return world_size() > 1 and not cuda_available()


@contextlib.contextmanager
def validating_only() -> Iterator[None]:
    """While a config is only validated (`axolotl-ipo check`), nothing is refused for this
    machine's lack of GPUs."""
    global _VALIDATING_ONLY
    before, _VALIDATING_ONLY = _VALIDATING_ONLY, True
    try:
        yield
    finally:
        _VALIDATING_ONLY = before


def prepare_ranks(cfg: Mapping) -> None:
    """The `register` hook's part: warn about an accelerate launch that started one process
    where more were asked for, refuse DeepSpeed without CUDA, and make CPU ranks one process
    group."""
    warn_single_process_launch()
    refuse_deepspeed_without_cuda(cfg)
    request_cpu_process_group()


def refuse_deepspeed_without_cuda(cfg: Mapping) -> None:
    """DeepSpeed cannot train on CPU-only ranks: with ACCELERATE_USE_CPU (which CPU ranks
    need) accelerate drops it and trains plain DDP without a word (ZeRO-3 then crashes on its
    partitioned model); forced on, its gloo all-gather fails at the first step."""
    if _VALIDATING_ONLY or not cfg.get("deepspeed") or cuda_available():
        return
    raise UserError(
        f"deepspeed: {cfg.get('deepspeed')} is set, but this process has no CUDA GPU: DeepSpeed "
        "cannot train on CPU ranks (accelerate drops it and trains plain DDP, or its gloo "
        "all-gather fails); run on CUDA GPUs, or remove `deepspeed:` to train on CPU."
    )


def warn_single_process_launch() -> None:
    """`accelerate launch --cpu --num_processes 2` (or more processes than GPUs without
    --multi_gpu) starts ONE process (world size 1) and says nothing."""
    if world_size() > 1 or not single_process_launch_of_many():
        return
    LOG.warning(
        "accelerate launch was asked for more than one process but started one (world size "
        "1): without --multi_gpu it runs a single process; for N CPU ranks use `%s` (no GPU), "
        "or `torchrun --nproc_per_node N -m axolotl.cli.train cfg.yml`", CPU_RANKS_LAUNCH)


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


def barrier_timeout_s() -> float:
    """AXOLOTL_IPO_BARRIER_TIMEOUT (seconds without progress; 0: no limit), default 1 hour."""
    text = os.environ.get(BARRIER_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_BARRIER_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise UserError(
            f"{BARRIER_TIMEOUT_ENV}={text!r} is not a number; give seconds (0: wait forever)."
        ) from None
    if value < 0:
        raise UserError(f"{BARRIER_TIMEOUT_ENV}={text!r} is negative; give seconds (0: wait "
                        "forever).")
    return value


def store_barrier(
    store: Any,
    rank: int,
    world_size: int,
    poll_s: float = 2.0,
    report_s: float = 300.0,
    timeout_s: float | None = None,
) -> Callable[[], None]:
    """The barrier of a multi-rank sampling run, kept on the pair store's files, not on NCCL.

    Ranks finish sampling at different times, hours apart on a large dataset; a collective
    barrier would abort the job once the slowest rank is more than the process group's timeout
    (Axolotl's default 1800 s) behind. Instead rank 0 waits until every planned batch is
    committed and every rank has recorded its counts (then merges) and the other ranks wait
    until the store is complete. The store must be on a filesystem every rank sees, as the
    merge already requires. A rank gives up (one-line error naming the store) once nothing has
    changed in the store for ``timeout_s`` (default :func:`barrier_timeout_s`: no batch
    committed by any rank, no rank record, no merge): a store on node-local disks in a
    multi-node run, where the ranks never see each other's files, would otherwise wait forever.
    """
    if world_size <= 1:
        return lambda: None
    limit = barrier_timeout_s() if timeout_s is None else timeout_s

    def state() -> tuple[int, int] | None:
        """None when the store is complete, else (missing batches, missing rank records)."""
        if store.is_complete():
            return None
        try:
            batches = len(store.missing_batches())
        except (OSError, ValueError, KeyError):
            batches = -1  # no readable plan (yet)
        return batches, len(store.missing_rank_counts(world_size))

    def done(now: tuple[int, int] | None) -> bool:
        return now is None or (rank == 0 and now == (0, 0))

    def wait() -> None:
        started = reported = progressed = time.monotonic()
        last = state()
        while not done(last):
            now_t = time.monotonic()
            if now_t - reported >= report_s:
                reported = now_t
                what = (f"{last[0]} batch(es), {last[1]} rank record(s) from other ranks"
                        if rank == 0 else "rank 0's merge")
                LOG.info("rank %d: waiting %.0f s so far for %s in %s", rank,
                         reported - started, what, store.dir)
            if limit and now_t - progressed >= limit:
                raise UserError(_barrier_timeout_message(store, rank, limit, last))
            time.sleep(poll_s)
            now = state()
            if now != last:
                last, progressed = now, time.monotonic()

    return wait


def _barrier_timeout_message(store: Any, rank: int, limit: float, last: tuple[int, int]) -> str:
    batches, ranks = last
    seen = "rank 0's merge" if rank != 0 else (
        f"{batches if batches >= 0 else 'the planned'} batch(es) and {ranks} rank record(s) of "
        "other ranks")
    return (
        f"rank {rank}: nothing changed in the pair store {store.dir} for {limit:.0f} s while "
        f"waiting for {seen}: every rank must see the same store, so `dataset_prepared_path` "
        "must be on a filesystem shared by all nodes (or run one node, or sample first with "
        "`axolotl-ipo sample` and copy the complete store to that path on every node); a "
        f"slower run can raise {BARRIER_TIMEOUT_ENV} (seconds, 0: no limit)."
    )
