"""Load the models an evaluation compares: the base (= IPO's reference) and a trained one
(a LoRA/QLoRA adapter on the base, or a fully fine-tuned checkpoint), or a trained run alone."""

from __future__ import annotations

import os
from copy import deepcopy
from pathlib import Path
from typing import Any

__all__ = ["load_base", "load_run", "load_trained", "trained_kind"]


def load_base(path: str, trust_remote_code: bool = False, dtype: str = "auto") -> Any:
    """The checkpoint in ``dtype`` (``auto``: bf16 on a GPU, fp32 on CPU), in eval mode."""
    from transformers import AutoModelForCausalLM

    from axolotl_ipo.pairs.sampler.transformers_backend import default_device, resolve_dtype

    device = default_device()
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=resolve_dtype(dtype, device), trust_remote_code=trust_remote_code
    )
    return model.to(device).eval()


def trained_kind(path: str | Path) -> str:
    """``adapter`` (PEFT folder), ``full`` (a model checkpoint) or an error naming the path."""
    folder = Path(path)
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "full"
    raise FileNotFoundError(
        f"{folder} holds neither a PEFT adapter (adapter_config.json) nor a model "
        "(config.json); pass the output_dir of a finished training run with --adapter"
    )


def _merged(base: Any, adapter: str | Path) -> Any:
    """``adapter`` merged into ``base`` (which it changes), in eval mode."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, os.fspath(adapter)).merge_and_unload().eval()


def load_trained(
    base: Any, path: str | Path, trust_remote_code: bool = False, dtype: str = "auto"
) -> Any:
    """The trained policy. An adapter is merged into a copy of ``base`` (``base`` stays the
    reference model, whatever is scored first; merged weights give the same outputs without
    LoRA's extra small matmuls, which dominate CPU generation); a full checkpoint is loaded as
    its own model."""
    if trained_kind(path) == "adapter":
        return _merged(deepcopy(base), path)
    return load_base(os.fspath(path), trust_remote_code, dtype)


def load_run(
    path: str | Path, base_model: str | None, trust_remote_code: bool = False,
    dtype: str = "auto",
) -> Any:
    """A trained run on its own: an adapter merged into a fresh load of ``base_model`` (no
    copy kept), or a full checkpoint."""
    if trained_kind(path) == "adapter":
        return _merged(load_base(base_model, trust_remote_code, dtype), path)
    return load_base(os.fspath(path), trust_remote_code, dtype)
