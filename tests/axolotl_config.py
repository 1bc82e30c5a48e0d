"""Validate a raw YAML mapping through Axolotl's own config loader with the plugin, optionally with
the capabilities Axolotl probes on a bf16-capable GPU node (no GPU, no model download needed)."""

from __future__ import annotations

import copy


def gpu_capabilities(n_gpu: int) -> dict:
    """What `axolotl.cli.config.gpu_capabilities()` returns on H100s."""
    import torch

    return {
        "capabilities": {"bf16": True, "fp8": True, "tf32": True, "n_gpu": n_gpu,
                         "compute_capability": "sm_90"},
        "env_capabilities": {"torch_version": torch.__version__.split("+")[0]},
    }


def validate(raw: dict, n_gpu: int | None = None) -> tuple[dict, type]:
    """(validated config, the schema Axolotl merged with the plugin's keys). `n_gpu` None: as on
    this CPU machine. Call with a fresh PluginManager (monkeypatch its `_instance` to None)."""
    from axolotl.cli.config import prepare_plugins
    from axolotl.integrations.config import merge_input_args
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    from axolotl_ipo.distributed import validating_only

    cfg = DictDefault(copy.deepcopy(raw))
    assert "axolotl_ipo.IPOPlugin" in cfg.plugins
    if n_gpu:  # as on GPUs: nothing refused for this CPU machine (a `deepspeed:` key)
        with validating_only():
            prepare_plugins(cfg)
    else:
        prepare_plugins(cfg)
    schema = merge_input_args()[1]
    options = gpu_capabilities(n_gpu) if n_gpu else {}
    return validate_config(cfg, **options), schema


def unknown_or_deprecated_keys(raw: dict, schema: type) -> dict[str, str]:
    """Top-level keys the installed Axolotl would silently drop, or has deprecated."""
    fields = schema.model_fields
    problems = {key: "unknown (dropped)" for key in raw if key not in fields}
    problems.update({key: str(fields[key].deprecated) for key in raw
                     if key in fields and fields[key].deprecated})
    return problems
