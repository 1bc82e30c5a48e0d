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


def select_cache_rows(cache: Any, rows: Any, *, copy: bool = False) -> Any:
    """A transformers KV cache holding batch rows ``rows`` of ``cache`` (repeats allowed), via
    the beam-search reordering every cache class implements; ``copy`` leaves ``cache`` as it
    was (the model appends to the cache it is given)."""
    import copy as copying

    selected = copying.deepcopy(cache) if copy else cache
    selected.reorder_cache(rows)
    return selected
