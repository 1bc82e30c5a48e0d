"""Build IPO preference pairs: chosen = gold answer, rejected = a sampled answer.

Orchestration only: render prompts with the training tokenizer's chat template, plan
batches globally (so results do not depend on the number of ranks), sample the batches
this rank owns and are not in the store yet, commit each one, then merge on rank 0.
Nothing here knows about Axolotl.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lengths import count_too_long
from .sampling.base import Completion, Generator, SamplingSettings
from .sft import InvalidRow, PromptExample
from .store import MergeStats, PairStore
from .summary import PairsSummary

__all__ = [
    "PairsResult",
    "RenderedPrompt",
    "build_pairs",
    "make_pair_row",
    "plan_batches",
    "render_prompts",
]

logger = logging.getLogger("axolotl_ipo.pairs")


@dataclass(frozen=True)
class RenderedPrompt:
    """An example with its prompt rendered by the chat template."""

    index: int  # position in the examples list
    example: PromptExample
    text: str
    n_tokens: int


@dataclass(frozen=True)
class PairsResult:
    path: Path  # pairs.jsonl
    summary: PairsSummary
    store: PairStore

    @property
    def cached(self) -> bool:
        return self.summary.cached


def render_prompts(
    examples: Sequence[PromptExample],
    tokenizer: Any,
    sequence_len: int | None = None,
) -> tuple[list[RenderedPrompt], list[InvalidRow]]:
    """Render each prompt with ``apply_chat_template(..., add_generation_prompt=True)``.

    A prompt that does not leave room for an answer (``tokens >= sequence_len``) or that
    the template rejects becomes an :class:`InvalidRow`."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the training tokenizer has no chat template; set chat_template in the config "
            "so prompts are rendered exactly as in training"
        )
    texts: list[tuple[int, str]] = []
    invalid: list[InvalidRow] = []
    for index, ex in enumerate(examples):
        try:
            text = tokenizer.apply_chat_template(
                ex.prompt_messages, add_generation_prompt=True, tokenize=False
            )
        except Exception as err:  # noqa: BLE001 - a template error is a row problem
            invalid.append(
                InvalidRow(
                    ex.source,
                    ex.row,
                    "prompt_messages",
                    f"the chat template failed on this conversation ({type(err).__name__}: "
                    f"{err}); fix the row or the chat template.",
                    "template_error",
                )
            )
            continue
        texts.append((index, text))
    lengths = (
        [
            len(ids)
            for ids in tokenizer([t for _, t in texts], add_special_tokens=False)["input_ids"]
        ]
        if texts
        else []
    )
    rendered: list[RenderedPrompt] = []
    for (index, text), n_tokens in zip(texts, lengths, strict=True):
        ex = examples[index]
        if sequence_len is not None and n_tokens >= sequence_len:
            invalid.append(
                InvalidRow(
                    ex.source,
                    ex.row,
                    "prompt_messages",
                    f"the prompt is {n_tokens} tokens, which leaves no room for an answer "
                    f"within sequence_len={sequence_len}; shorten the prompt or raise "
                    "sequence_len.",
                    "prompt_too_long",
                )
            )
            continue
        rendered.append(RenderedPrompt(index, ex, text, n_tokens))
    return rendered, invalid


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Global batch plan: positions sorted by token length (longest first, so memory
    problems show up at once; ties by position), cut into ``batch_size`` chunks."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _plan_record(
    prompts: Sequence[RenderedPrompt], plan: list[list[int]], settings: SamplingSettings
) -> dict[str, Any]:
    digest = hashlib.sha256()
    for batch in plan:
        for pos in batch:
            p = prompts[pos]
            digest.update(json.dumps([p.index, p.text, p.example.gold]).encode("utf-8"))
        digest.update(b"|")
    return {
        "batches": len(plan),
        "prompts": len(prompts),
        "digest": digest.hexdigest(),
        "sampling": settings.to_dict(),
    }


def strip_end(text: str, end: str) -> str:
    text = text.strip()
    while end and text.endswith(end):
        text = text[: -len(end)].rstrip()
    return text


def normalise_answer(text: str) -> str:
    return " ".join(text.split())


def make_pair_row(
    prompt: RenderedPrompt,
    completion: Completion,
    end_token: str,
    generator: str,
    settings: SamplingSettings,
    *,
    keep_messages: bool = False,
) -> dict[str, Any]:
    """One pair row. Both answers are stripped of surrounding whitespace and a trailing
    ``end_token`` and end with exactly one ``end_token``. A row that must not be used
    gets a ``drop_reason`` (``empty_rejected`` or ``rejected_equals_chosen``)."""
    chosen = strip_end(prompt.example.gold, end_token)
    rejected = strip_end(completion.text, end_token)
    drop = None
    if not rejected:
        drop = "empty_rejected"
    elif normalise_answer(rejected) == normalise_answer(chosen):
        drop = "rejected_equals_chosen"
    row: dict[str, Any] = {
        "prompt": prompt.text,
        "chosen": chosen + end_token,
        "rejected": rejected + end_token,
        "source": prompt.example.source,
        "row": prompt.example.row,
        "index": prompt.index,
        "generator": generator,
        "sampling": settings.to_dict(),
        "rejected_tokens": completion.n_tokens,
        "finish_reason": completion.finish_reason,
    }
    if keep_messages:
        row["prompt_messages"] = prompt.example.prompt_messages
    if drop:
        row["drop_reason"] = drop
    return row


def _invalid_record(bad: InvalidRow) -> dict[str, Any]:
    return {
        "source": bad.source,
        "row": bad.row,
        "field": bad.field,
        "kind": bad.kind,
        "message": bad.message,
    }


def _log_invalid(invalid: Sequence[InvalidRow]) -> None:
    if not invalid:
        return
    counts = Counter(bad.kind for bad in invalid)
    shown = "; ".join(bad.message for bad in invalid[:3])
    logger.warning(
        "skipped %d invalid row(s) (%s); first: %s",
        len(invalid),
        ", ".join(f"{k}={v}" for k, v in sorted(counts.items())),
        shown,
    )


def _whole_run(counts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every rank's share summed: the batches and tokens sampled now by the whole run; its
    generation time is the slowest rank's (ranks generate in parallel)."""
    return {
        "batches_sampled": sum(int(c["batches_sampled"]) for c in counts),
        "tokens_this_run": sum(int(c["tokens_this_run"]) for c in counts),
        "generation_seconds": max((float(c["generation_seconds"]) for c in counts), default=0.0),
    }


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc="sampling rejected answers",
        unit="row",
        disable=not enabled,
        dynamic_ncols=True,
    )


def build_pairs(
    examples: Sequence[PromptExample],
    tokenizer: Any,
    generator_factory: Callable[[], Generator],
    settings: SamplingSettings,
    store: PairStore,
    *,
    rank: int = 0,
    world_size: int = 1,
    sequence_len: int | None = None,
    barrier: Callable[[], None] | None = None,
    progress: bool = True,
    invalid_rows: Sequence[InvalidRow] = (),
    end_token: str | None = None,
    keep_messages: bool = False,
) -> PairsResult:
    """Sample the rejected answers this rank owns, commit them, merge on rank 0.

    ``tokenizer`` must be the training tokenizer (its chat template renders the prompts).
    ``generator_factory`` is only called when this rank has batches left to sample, so a
    complete store never loads a model. ``barrier`` synchronises ranks (required when
    ``world_size > 1``). ``invalid_rows`` (from :func:`~axolotl_ipo.sft.extract_examples`)
    are counted in the summary and written to ``invalid.jsonl``. ``end_token`` (default
    ``tokenizer.eos_token``) ends every chosen/rejected answer.
    """
    started = time.perf_counter()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if world_size > 1 and barrier is None:
        raise ValueError("world_size > 1 needs a barrier callable")
    sync = barrier or (lambda: None)

    if store.is_complete():
        summary = PairsSummary.from_dict(store.read_summary() or {})
        summary.cached = True
        summary.batches_sampled = 0
        summary.tokens_this_run = 0
        summary.generation_seconds = 0.0
        summary.wall_seconds = time.perf_counter() - started
        return PairsResult(store.pairs_path, summary, store)

    end = end_token if end_token is not None else tokenizer.eos_token
    if not end:
        raise ValueError("the training tokenizer has no eos_token; pass end_token explicitly")
    prompts, too_long = render_prompts(examples, tokenizer, sequence_len)
    invalid = [*invalid_rows, *too_long]
    rows_in = len(examples) + len(invalid_rows)
    if not prompts:
        first = f" First: {invalid[0].message}" if invalid else ""
        raise ValueError(f"no usable rows to build pairs from ({len(invalid)} invalid).{first}")
    if rank == 0:
        _log_invalid(invalid)

    plan = plan_batches([p.n_tokens for p in prompts], settings.batch_size)
    store.ensure_plan(_plan_record(prompts, plan, settings))
    done = store.done_batches()
    mine = [i for i in range(len(plan)) if i % world_size == rank]
    todo = [i for i in mine if i not in done]

    generator: Generator | None = None
    generator_name = ""
    tokens = 0
    gen_seconds = 0.0
    bar = _progress(
        total=sum(len(plan[i]) for i in mine),
        initial=sum(len(plan[i]) for i in mine if i in done),
        enabled=progress and rank == 0,
    )
    sampled: list[int] = []  # of `todo`, what this process sampled (not another sharing it)
    try:
        for index in store.claim(todo):
            if generator is None:
                generator = generator_factory()
                generator_name = generator.name
            batch = [prompts[pos] for pos in plan[index]]
            t0 = time.perf_counter()
            completions = generator.generate(
                [p.text for p in batch], settings, settings.batch_seed(index)
            )
            gen_seconds += time.perf_counter() - t0
            if len(completions) != len(batch):
                raise RuntimeError(
                    f"generator {generator_name} returned {len(completions)} completions "
                    f"for {len(batch)} prompts"
                )
            rows = [
                make_pair_row(p, c, end, generator_name, settings, keep_messages=keep_messages)
                for p, c in zip(batch, completions, strict=True)
            ]
            store.commit_batch(index, rows)
            sampled.append(index)
            tokens += sum(c.n_tokens for c in completions)
            bar.update(len(batch))
            bar.set_postfix_str(f"{tokens / max(gen_seconds, 1e-9):.0f} tok/s", refresh=False)
    finally:
        bar.close()
        if generator is not None and hasattr(generator, "close"):
            generator.close()

    def make_summary(stats: MergeStats, all_rows: list[dict]) -> dict[str, Any]:
        return PairsSummary(
            rows_in=rows_in,
            pairs_out=stats.kept,
            invalid=dict(sorted(Counter(bad.kind for bad in invalid).items())),
            dropped=stats.dropped,
            batches=len(plan),
            tokens_generated=sum(int(r.get("rejected_tokens", 0)) for r in all_rows),
            truncated=sum(r.get("finish_reason") == "length" for r in all_rows),
            too_long=count_too_long(
                [r for r in all_rows if not r.get("drop_reason")], tokenizer, sequence_len
            ),
            wall_seconds=time.perf_counter() - started,
            generator=next((str(r["generator"]) for r in all_rows if r.get("generator")), ""),
            **_whole_run(store.rank_counts(world_size)),
        ).to_dict()

    local = {"batches_sampled": len(sampled), "tokens_this_run": tokens,
             "generation_seconds": gen_seconds}
    store.record_rank_counts(rank, local)
    sync()
    if rank == 0:
        store.merge(len(plan), summary=make_summary, invalid=map(_invalid_record, invalid))
    sync()

    recorded = store.read_summary() if store.is_complete() else None
    if recorded is not None:
        summary = PairsSummary.from_dict(recorded)
    else:  # only when ranks are simulated without a real barrier
        summary = PairsSummary(rows_in=rows_in, batches=len(plan), **local)
    summary.wall_seconds = time.perf_counter() - started
    if rank == 0 and progress:
        logger.info("pairs written to %s\n%s", store.pairs_path, summary.format())
    return PairsResult(store.pairs_path, summary, store)
