"""The transformers adapter: its DeepSpeed registration (a private module global), KV-cache
reordering, the Trainer's callback list and its default seed."""

from __future__ import annotations

import contextlib
import copy as copying
import os
from collections.abc import Iterator
from typing import Any

# Every transformers name this module touches ("module:attribute"); tests/test_upstream.py
# resolves each on the installed release (and runs the instance-level ones on real objects).
REQUIRED = (
    "transformers.integrations.deepspeed:_hf_deepspeed_config_weak_ref",  # whole_model_loading
    "transformers.integrations.deepspeed:set_hf_deepspeed_config",
    "transformers.integrations.deepspeed:unset_hf_deepspeed_config",
    "transformers.cache_utils:Cache.reorder_cache",  # select_cache_rows
    "transformers.trainer_callback:CallbackHandler",  # its `callbacks` list: add_callback_first
    "transformers.training_args:TrainingArguments",  # default_training_seed: its `seed`
    "transformers.training_args:TrainingArguments.seed",
)


def default_training_seed() -> int:
    """The seed a config without `seed` trains with: TrainingArguments' own default."""
    from transformers.training_args import TrainingArguments

    return int(TrainingArguments.seed)


@contextlib.contextmanager
def whole_model_loading() -> Iterator[None]:
    """Load a complete, unpartitioned copy even inside a DeepSpeed ZeRO-3 or FSDP launch.

    Axolotl registers its DeepSpeed config with transformers when it loads the config, before
    `load_datasets`; with ZeRO-3 registered, `from_pretrained` would partition the sampler's copy
    across ranks (`zero.Init`), and under FSDP with `cpu_ram_efficient_loading` ranks other than
    0 would get empty weights. Ranks sample different batches, so each needs a whole copy. The
    training model's loading (after sampling) sees the settings unchanged.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    registered = ref() if ref is not None else None
    fsdp_low_ram = os.environ.pop("FSDP_CPU_RAM_EFFICIENT_LOADING", None)
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if registered is not None:
            hf_deepspeed.set_hf_deepspeed_config(registered)
        if fsdp_low_ram is not None:
            os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = fsdp_low_ram


def select_cache_rows(cache: Any, rows: Any, *, copy: bool = False) -> Any:
    """A transformers KV cache holding batch rows ``rows`` of ``cache`` (repeats allowed), via
    the beam-search reordering every cache class implements; ``copy`` leaves ``cache`` as it
    was (the model appends to the cache it is given)."""
    selected = copying.deepcopy(cache) if copy else cache
    selected.reorder_cache(rows)
    return selected


def add_callback_first(trainer: Any, callback: Any) -> None:
    """Put ``callback`` before every other callback of a transformers Trainer, the reporting
    integrations (W&B, MLflow, TensorBoard) included: Trainer.log hands the same ``logs`` dict
    to each callback's ``on_log`` in list order (transformers 5.16-5.20), and Axolotl appends
    plugin callbacks after the integrations."""
    trainer.callback_handler.callbacks.insert(0, callback)
