"""The YAML keys axolotl-ipo adds to an Axolotl config, declared once with their defaults.

Axolotl merges `IPOArgs` into its own config schema (`BasePlugin.get_input_args`); keys that
are not declared here would be silently dropped by Axolotl's validation.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class RejectionSamplingArgs(BaseModel):
    """How rejected answers are sampled for SFT datasets (chosen = the gold answer)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(
        default=None,
        description="Generator of the rejected answers: a local path or hub id. Default: "
        "`base_model` itself before training (self-play), as in Intel's neural-chat recipe.",
    )
    backend: Literal["transformers", "vllm"] = Field(
        default="transformers",
        description="`transformers` (CPU or GPU) or `vllm` (GPU only, `pip install vllm`).",
    )
    max_new_tokens: int = Field(default=256, ge=1, description="Longest rejected answer.")
    temperature: float = Field(
        default=0.7, ge=0.0, description="Sampling temperature; 0 means greedy decoding."
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int = Field(
        default=42,
        description="Batch i is sampled with a seed derived from (seed, i): the pairs do not "
        "depend on the number of ranks.",
    )
    batch_size: int = Field(default=16, ge=1, description="Prompts generated together per rank.")
    output_dir: str | None = Field(
        default=None,
        description="Where the pair store lives. Default: `<dataset_prepared_path>/ipo_pairs`.",
    )
    strict: bool = Field(
        default=False,
        description="Stop on the first invalid SFT row instead of skipping and counting it.",
    )
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        description="vLLM only: GPUs per engine. 1 under a multi-process launch (each rank samples "
        "on its own GPU); > 1 only in a single process (`axolotl-ipo sample CONFIG`).",
    )
    gpu_memory_utilization: float = Field(
        default=0.85,
        gt=0.0,
        le=1.0,
        description="vLLM only: the fraction of each GPU's memory its engine may take (weights + "
        "KV cache) while sampling; freed before training.",
    )


class IPOArgs(BaseModel):
    """Top-level keys (Axolotl drops unknown per-dataset keys in RL mode)."""

    ipo_tau: float | None = Field(
        default=None,
        description="IPO's regularisation tau (Azar et al. 2023, Eq. 17): the loss pulls the "
        "token-averaged log-ratio margin towards 1/(2*tau). It is TRL's `beta`; setting it "
        "sets `rl_beta`. Default: `rl_beta` if given, else 0.1.",
    )
    # None, not 0.0: Axolotl writes plugin defaults into every validated config (inertness)
    ipo_sft_weight: float | None = Field(
        default=None,
        ge=0.0,
        description="Weight alpha of TRL's `sft` loss (the NLL of the chosen answer, averaged over "
        "its tokens) added to IPO's: `loss_type: [ipo, sft]`, `loss_weights: [1, alpha]`. Keeps "
        "the chosen answers likely (Iterative RPO's NLL term). Unset or 0: pure IPO. At step 0 "
        "the loss is (1/(2*tau))^2 + alpha * chosen NLL.",
    )
    rejection_sampling: RejectionSamplingArgs | None = Field(
        default=None, description="Settings for building pairs from SFT datasets."
    )
    ipo_sft_datasets: list[dict[str, Any]] | None = Field(
        default=None,
        description="Internal: the user's `datasets` entries as written, saved by the plugin "
        "before Axolotl coerces them to preference entries (which drops SFT-only keys).",
    )
