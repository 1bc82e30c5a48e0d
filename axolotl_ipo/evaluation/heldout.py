"""The held-out split: its prompts rendered as in training and its gold answers
(:func:`read_heldout`), and pairs of gold vs. the *base* model's own sampled answer (sampled
once with the config's `rejection_sampling` settings, cached like training pairs), so every
model evaluated on it is judged on the same pairs (:func:`load_heldout`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axolotl_ipo.args import sampling_args
from axolotl_ipo.pairs.build import RenderedPrompt, real_pairs, render_prompts
from axolotl_ipo.pairs.checks import gold_answers
from axolotl_ipo.pairs.from_config import sample_examples
from axolotl_ipo.pairs.judge import strip_end
from axolotl_ipo.sft_datasets import config_examples, sft_sources
from axolotl_ipo.upstream.axolotl import config_dict

__all__ = ["HeldOut", "HeldOutRows", "heldout_config", "load_heldout", "read_heldout"]


@dataclass(frozen=True)
class HeldOut:
    prompts: list[RenderedPrompt]  # every usable held-out example, rendered for generation
    golds: list[str]  # the chosen text per prompt (gold answer + end token)
    answers: list[list[str]]  # acceptable answers per prompt, for the task score
    pairs: list[tuple[int, str]]  # (position in prompts, base model's sampled answer)
    pairs_path: Path
    invalid_rows: int


def heldout_config(cfg: Any, entry: dict[str, Any]) -> Any:
    """A shallow copy of the training config whose only dataset is the held-out entry."""
    copy = config_dict(dict(cfg))
    copy["datasets"] = [config_dict(entry)]
    copy["ipo_sft_datasets"] = [dict(entry)]
    return copy


@dataclass(frozen=True)
class HeldOutRows:
    prompts: list[RenderedPrompt]  # every usable held-out example, rendered for generation
    golds: list[str]  # the chosen text per prompt (gold answer + end token)
    answers: list[list[str]]  # acceptable answers per prompt, gold first
    invalid_rows: int


def _read(cfg: Any, entry: dict[str, Any], tokenizer: Any, limit: int | None):
    """(held-out config, examples, invalid rows, rows) of the held-out entry."""
    held = heldout_config(cfg, entry)
    sources, _ = sft_sources(held)
    if not sources:
        raise ValueError(
            f"held-out data {entry.get('path')!r} with type {entry.get('type')!r} is not an SFT "
            "dataset the plugin can read; use alpaca, chat_template or prompt_completion rows "
            "with a gold answer"
        )
    answers_field = sampling_args(held).answers_field
    examples, invalid = config_examples(held, sources, strict=False, answers_field=answers_field)
    if limit is not None:
        examples = examples[:limit]
    rendered, too_long = render_prompts(examples, tokenizer, held.get("sequence_len"))
    end = tokenizer.eos_token
    golds = [strip_end(p.example.gold, end) + end for p in rendered]
    answers = [gold_answers(strip_end(p.example.gold, end), p.example.answers) for p in rendered]
    rows = HeldOutRows(rendered, golds, answers, len(invalid) + len(too_long))
    return held, examples, invalid, rows


def read_heldout(
    cfg: Any, entry: dict[str, Any], tokenizer: Any, *, limit: int | None = None
) -> HeldOutRows:
    """The held-out entry's prompts and gold answers, nothing sampled."""
    return _read(cfg, entry, tokenizer, limit)[3]


def load_heldout(
    cfg: Any, entry: dict[str, Any], tokenizer: Any, store_dir: Path, *, limit: int | None = None
) -> HeldOut:
    """Read the held-out entry (any SFT format the plugin samples from) once and build its
    pairs from those rows."""
    held, examples, invalid, rows = _read(cfg, entry, tokenizer, limit)
    result = sample_examples(held, tokenizer, examples, invalid, output_dir=store_dir)
    position = {p.index: i for i, p in enumerate(rows.prompts)}  # pairs keep their example's index
    pairs = [(position[row["index"]], row["rejected"])
             for row in real_pairs(result.store.read_pairs())]
    return HeldOut(rows.prompts, rows.golds, rows.answers, pairs, result.path, rows.invalid_rows)
