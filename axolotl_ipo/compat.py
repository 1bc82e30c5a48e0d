"""The one place that knows which Axolotl release supports what, and that touches
transformers internals (KV cache objects)."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import version
from typing import Any


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
