"""An Axolotl config -> its IPO pairs: the one path used by `axolotl train`, `axolotl
preprocess` and `axolotl-ipo sample`.

The config's SFT rows (:mod:`axolotl_ipo.sft_datasets`) are sampled by its generator
(:mod:`.sampler`), judged (:mod:`.judge`) and built into pairs (:mod:`.build`) in a store keyed
by everything the pairs depend on (:mod:`.store`). chosen = the dataset's gold answer (or a
sample judged right), rejected = the first of the generator's completions of the same prompt
judged wrong (by default `base_model` before training: self-play), rendered with the training
tokenizer's chat template so both are scored on identical prompts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axolotl_ipo import distributed
from axolotl_ipo.args import RejectionSamplingArgs, sampling_args
from axolotl_ipo.errors import UserError
from axolotl_ipo.sft_datasets import TrainingRows, training_rows
from axolotl_ipo.sft_rows import InvalidRow, PromptExample, fingerprint_examples
from axolotl_ipo.upstream.axolotl import load_tokenizer

from .build import PairsResult, build_pairs
from .checks import check_fingerprint
from .judge import PairPolicy
from .sampler import SamplingSettings, load_generator, model_fingerprint
from .store import PairStore

LOG = logging.getLogger("axolotl_ipo")
PAIRS_FORMAT_VERSION = 3  # 2: answer checks, k samples, chosen_source; 3: rows' end_token


def store_root(cfg: Any, args: RejectionSamplingArgs) -> Path:
    if args.output_dir:
        return Path(args.output_dir)
    return Path(cfg.get("dataset_prepared_path") or "last_run_prepared") / "ipo_pairs"


class NoPairsError(UserError):
    """Every row was dropped or invalid: nothing to train on."""


def _generator_options(cfg: Any, args: RejectionSamplingArgs) -> dict[str, Any]:
    if args.backend == "vllm":
        options: dict[str, Any] = {
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "tensor_parallel_size": args.tensor_parallel_size,
            "trust_remote_code": bool(cfg.get("trust_remote_code")),
        }
        if cfg.get("sequence_len"):  # else vLLM sizes its KV cache for the model's full context
            options["max_model_len"] = int(cfg.get("sequence_len")) + args.max_new_tokens
        return options
    return {"trust_remote_code": bool(cfg.get("trust_remote_code"))}


def _settings(args: RejectionSamplingArgs, stop_tokens: tuple[str, ...]) -> SamplingSettings:
    return SamplingSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        batch_size=args.batch_size,
        batch_tokens=args.batch_tokens,
        stop_tokens=stop_tokens,
    )


def pair_policy(args: RejectionSamplingArgs) -> PairPolicy:
    return PairPolicy(
        args.answer_check, args.num_samples, args.chosen, args.truncated, args.solved
    )


def generator_stop_tokens(training_eos: str, generator_path: str, cfg: Any) -> tuple[str, ...]:
    """Answers stop at the training tokenizer's EOS where the generator's tokenizer has it as one
    token (always in self-play); a generator without it stops at its own EOS, and says so."""
    if generator_path == cfg.get("base_model"):
        return (training_eos,)
    from transformers import AutoTokenizer

    generator = AutoTokenizer.from_pretrained(
        generator_path, trust_remote_code=bool(cfg.get("trust_remote_code"))
    )
    token_id = generator.convert_tokens_to_ids(training_eos)
    if token_id is not None and token_id != generator.unk_token_id:
        return (training_eos,)
    if generator.eos_token is None:
        raise UserError(
            f"rejection_sampling.model {generator_path}: its tokenizer has neither an EOS token "
            f"nor the training EOS {training_eos!r}, so its answers could not end; use a "
            "generator whose tokenizer defines eos_token."
        )
    LOG.warning(
        "rejection_sampling.model %s has no token %r (the training tokenizer's EOS): its "
        "answers stop at its own EOS %r; every pair still ends with %r.",
        generator_path, training_eos, generator.eos_token, training_eos,
    )
    return ()


def build_pairs_for_config(
    cfg: Any,
    output_dir: str | Path | None = None,
    progress: bool = True,
    rows: TrainingRows | None = None,
) -> PairsResult | None:
    """Sample pairs for the config's SFT datasets (None if it has none; ``rows``: their rows,
    already read by :func:`training_rows`). Cached and resumable:
    a second call with the same data, generator, settings and template samples nothing.
    Raises :class:`NoPairsError` when no pair is left."""
    rows = rows or training_rows(cfg)
    if rows is None:
        return None
    tokenizer = load_tokenizer(cfg)  # with Axolotl's chat_template setting: the training one
    return sample_examples(cfg, tokenizer, rows.examples, rows.invalid, output_dir, progress)


@dataclass(frozen=True)
class _Sampling:
    """How a config samples its pairs: the generator, its options and the pair policy."""

    args: RejectionSamplingArgs
    generator_path: str
    options: dict[str, Any]
    settings: SamplingSettings
    policy: PairPolicy


def _config_sampling(cfg: Any, tokenizer: Any) -> _Sampling:
    args = sampling_args(cfg)
    generator_path = args.model or cfg.get("base_model")
    stops = generator_stop_tokens(tokenizer.eos_token, generator_path, cfg)
    options = _generator_options(cfg, args)
    return _Sampling(args, generator_path, options, _settings(args, stops), pair_policy(args))


def _store_parts(
    cfg: Any, tokenizer: Any, sampling: _Sampling, examples: list[PromptExample]
) -> dict[str, Any]:
    """Everything the pairs depend on: the pair store's cache key parts."""
    return {
        "format_version": PAIRS_FORMAT_VERSION,
        "generator": model_fingerprint(sampling.generator_path),
        "backend": sampling.args.backend,
        "backend_options": sampling.options,
        "sampling": sampling.settings.to_dict(),
        "pairs": {
            **sampling.policy.to_dict(),
            "answer_check": check_fingerprint(sampling.args.answer_check),
        },
        "chat_template": tokenizer.chat_template,
        "eos_token": tokenizer.eos_token,
        "examples": fingerprint_examples(examples),
        "sequence_len": cfg.get("sequence_len"),
    }


def sample_examples(
    cfg: Any,
    tokenizer: Any,
    examples: list[PromptExample],
    invalid: list[InvalidRow],
    output_dir: str | Path | None = None,
    progress: bool = True,
) -> PairsResult:
    """Sample the pairs of these examples (read from the config's SFT datasets) with the
    config's generator and settings, into the store keyed by all of them; rank 0 prints the
    summary. Raises :class:`NoPairsError` when no pair is left."""
    sampling = _config_sampling(cfg, tokenizer)
    parts = _store_parts(cfg, tokenizer, sampling, examples)
    root = Path(output_dir) if output_dir else store_root(cfg, sampling.args)
    store = PairStore.open(root, parts)
    rank, world_size = distributed.rank(), distributed.world_size()
    result = build_pairs(
        examples,
        tokenizer,
        lambda: load_generator(sampling.args.backend, sampling.generator_path, **sampling.options),
        sampling.settings,
        store,
        rank=rank,
        world_size=world_size,
        sequence_len=cfg.get("sequence_len"),
        barrier=distributed.store_barrier(store, rank, world_size),
        progress=progress and rank == 0,
        invalid_rows=invalid,
        policy=sampling.policy,
    )
    if rank == 0:
        print(f"{result.summary.format()}\npairs: {result.path}", flush=True)
    if result.summary.pairs_out == 0:
        raise NoPairsError(result.summary.no_pairs_message())
    return result


def sampled_store(cfg: Any, tokenizer: Any) -> PairStore | None:
    """The complete pair store the config's SFT datasets were sampled into (what training
    used), found by its cache key; None when the config has no SFT dataset or its pairs were
    never sampled. Reads the rows to compute the key; samples nothing, creates nothing."""
    rows = training_rows(cfg)
    if rows is None:
        return None
    sampling = _config_sampling(cfg, tokenizer)
    parts = _store_parts(cfg, tokenizer, sampling, rows.examples)
    return PairStore.find(store_root(cfg, sampling.args), parts)
