"""The one place that knows which Axolotl release supports what."""

from __future__ import annotations

import functools
import logging
from collections.abc import MutableMapping
from functools import lru_cache
from importlib.metadata import version

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


def native_ipo_keys() -> dict:
    """The config keys that make the installed Axolotl train with TRL's IPO loss."""
    if supports_dpo_loss_type():
        return {"rl": "dpo", "dpo_loss_type": ["ipo"]}
    if supports_native_rl_ipo():
        return {"rl": "ipo"}
    raise RuntimeError(
        f"axolotl {axolotl_version()} supports neither `dpo_loss_type` nor `rl: ipo`; "
        "install an axolotl release between 0.19 and 0.21, or report this at axolotl-ipo."
    )


@lru_cache(maxsize=1)
def autoloads_entry_point_plugins() -> bool:
    """Axolotl >= 0.21 registers every installed `axolotl.plugins` entry point itself."""
    import axolotl.integrations.base as base

    return hasattr(base, "PLUGIN_ENTRY_POINT_GROUP")


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
