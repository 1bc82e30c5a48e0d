"""The one place that knows which Axolotl release supports what, and that touches
transformers internals (KV cache objects)."""

from __future__ import annotations

import functools
import logging
from collections.abc import MutableMapping
from functools import lru_cache
from importlib.metadata import version
from typing import Any

LOG = logging.getLogger("axolotl_ipo")


@lru_cache(maxsize=1)
def axolotl_version() -> str:
    return version("axolotl")


@lru_cache(maxsize=1)
def supports_dpo_loss_type() -> bool:
    """`rl: dpo` + `dpo_loss_type: [ipo]`: Axolotl's announced replacement for `rl: ipo`."""
    from axolotl.utils.schemas.config import AxolotlInputConfig

    return "dpo_loss_type" in AxolotlInputConfig.model_fields


@lru_cache(maxsize=1)
def supports_native_rl_ipo() -> bool:
    from axolotl.utils.schemas.enums import RLType

    return "ipo" in {member.value for member in RLType}


def ipo_losses(sft_weight: float | None = None) -> dict:
    """TRL's `loss_type` (and `loss_weights` with an SFT term) for IPO [+ alpha * SFT]."""
    if not sft_weight:
        return {"loss_type": ["ipo"]}
    return {"loss_type": ["ipo", "sft"], "loss_weights": [1.0, float(sft_weight)]}


def native_ipo_keys(sft_weight: float | None = None) -> dict:
    """The config keys that make the installed Axolotl train with TRL's IPO loss (plus TRL's
    `sft` loss on the chosen answer, weighted by ``sft_weight``, when it is > 0)."""
    if supports_dpo_loss_type():
        losses = ipo_losses(sft_weight)
        keys = {"rl": "dpo", "dpo_loss_type": losses["loss_type"]}
        if "loss_weights" in losses:
            keys["dpo_loss_weights"] = losses["loss_weights"]
        return keys
    if supports_native_rl_ipo() and not sft_weight:
        return {"rl": "ipo"}
    raise RuntimeError(
        f"axolotl {axolotl_version()} supports neither `dpo_loss_type` nor `rl: ipo` (or, with "
        "ipo_sft_weight, no `dpo_loss_weights`); install an axolotl release between 0.19 and "
        "0.21, or report this at axolotl-ipo."
    )


@lru_cache(maxsize=1)
def autoloads_entry_point_plugins() -> bool:
    """Axolotl >= 0.21 registers every installed `axolotl.plugins` entry point itself."""
    import axolotl.integrations.base as base

    return hasattr(base, "PLUGIN_ENTRY_POINT_GROUP")


def select_cache_rows(cache: Any, rows: Any, *, copy: bool = False) -> Any:
    """A transformers KV cache holding batch rows ``rows`` of ``cache`` (repeats allowed), via
    the beam-search reordering every cache class implements; ``copy`` leaves ``cache`` as it
    was (the model appends to the cache it is given)."""
    import copy as copying

    selected = copying.deepcopy(cache) if copy else cache
    selected.reorder_cache(rows)
    return selected


def add_callback_first(trainer: Any, callback: Any) -> None:
    """Put ``callback`` before every other callback of a transformers Trainer, the reporting
    integrations (W&B, MLflow, TensorBoard) included: Trainer.log hands the same ``logs`` dict
    to each callback's ``on_log`` in list order (transformers 5.16-5.20), and Axolotl appends
    plugin callbacks after the integrations."""
    trainer.callback_handler.callbacks.insert(0, callback)


def guard_cuda_p2p_check() -> None:
    """Let Axolotl's NCCL peer-to-peer probe answer "no GPU pairs" on CPU-only ranks.

    `axolotl.utils.environment.check_cuda_p2p_support` (called by `prepare_optim_env` for
    every multi-rank run) calls `torch.cuda.can_device_access_peer` and catches only the
    AssertionError of a CPU build of torch; a CUDA build without an NVIDIA driver raises
    RuntimeError ("Found no NVIDIA driver") and every CPU rank crashes. Without CUDA there is
    no pair of GPUs, so the answer is True (Axolotl's newer probe says the same for < 2 GPUs).
    """
    import axolotl.utils.environment as environment

    probe = getattr(environment, "check_cuda_p2p_support", None)
    if probe is None or getattr(probe, "axolotl_ipo_guarded", False):
        return

    @functools.wraps(probe)
    def guarded() -> bool:
        try:
            return probe()
        except RuntimeError as err:
            import torch

            if torch.cuda.is_available():
                raise
            LOG.debug("no CUDA device, so no GPU peer-to-peer to probe (%s)", err)
            return True

    guarded.axolotl_ipo_guarded = True
    environment.check_cuda_p2p_support = guarded


@lru_cache(maxsize=1)
def lora_kernel_keys() -> tuple[str, ...]:
    """Axolotl's `lora_*_kernel` switches (fused Triton LoRA kernels: CUDA only)."""
    from axolotl.utils.schemas.config import AxolotlInputConfig

    fields = AxolotlInputConfig.model_fields
    return tuple(sorted(k for k in fields if k.startswith("lora_") and k.endswith("_kernel")))


def disable_lora_kernels_without_cuda(cfg: MutableMapping) -> None:
    """Without CUDA, switch Axolotl's Triton LoRA kernels off before it validates the config.

    Axolotl auto-enables them for LoRA SFT configs (0.19-0.21 skip RL configs, which is what an
    IPO config becomes) and uses them wherever a config sets them; on a CUDA build of torch
    without a GPU they crash the first forward ("Found no NVIDIA driver")."""
    import torch

    if torch.cuda.is_available():
        return
    for key in lora_kernel_keys():
        if cfg.get(key):
            LOG.warning("%s: true needs a CUDA GPU; turned off (no CUDA device here)", key)
        cfg[key] = False
