"""Build IPO preference pairs: chosen = gold answer, rejected = a sampled answer judged wrong.

Orchestration only: render prompts with the training tokenizer's chat template, plan
batches globally (so results do not depend on the number of ranks), sample the batches
this rank owns and are not in the store yet (up to ``num_samples`` rounds each, judged by
:mod:`axolotl_ipo.pairs.judge`), commit each one, then merge on rank 0.
Nothing here imports Axolotl (the length count copies its RL loader's rule:
`upstream.axolotl.count_too_long`).
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

from axolotl_ipo.errors import UserError
from axolotl_ipo.sft_rows import InvalidRow, PromptExample
from axolotl_ipo.upstream.axolotl import count_too_long

from .judge import PairPolicy, PromptSamples
from .sampler.base import Generator, SamplingSettings
from .store import MergeStats, PairStore
from .summary import PairsSummary

__all__ = [
    "PairsResult",
    "RenderedPrompt",
    "build_pairs",
    "make_pair_row",
    "plan_batches",
    "real_pairs",
    "render_prompts",
    "sample_prompts",
]

logger = logging.getLogger("axolotl_ipo.pairs.build")


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
    """Render each prompt with ``apply_chat_template(..., add_generation_prompt=True)``, or
    take its ``prompt_text`` (formats Axolotl's SFT renders as plain text).

    A prompt that does not leave room for an answer (``tokens >= sequence_len``) or that
    the template rejects becomes an :class:`InvalidRow`."""
    templated = any(ex.prompt_text is None for ex in examples)
    if templated and not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "the training tokenizer has no chat template; set chat_template in the config "
            "so prompts are rendered exactly as in training"
        )
    texts: list[tuple[int, str]] = []
    invalid: list[InvalidRow] = []
    for index, ex in enumerate(examples):
        if ex.prompt_text is not None:
            texts.append((index, ex.prompt_text))
            continue
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


def plan_batches(
    lengths: Sequence[int],
    batch_size: int | None,
    batch_tokens: int | None = None,
    new_tokens: int = 0,
) -> list[list[int]]:
    """Global batch plan: positions sorted by token length (longest first, so memory
    problems show up at once; ties by position), cut into consecutive batches of at most
    ``batch_size`` rows whose KV cache, rows x (longest prompt + ``new_tokens``), stays within
    ``batch_tokens`` (a prompt over the budget alone gets a batch of its own). Under a token
    budget the rows are spread evenly over the fewest batches that fit it (128 prompts in two
    batches of 64, not 100 + 28: a small last batch runs at a small batch's speed)."""
    if batch_size is None and batch_tokens is None:
        raise ValueError("plan_batches needs batch_size or batch_tokens")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    plan = _fill(order, lengths, batch_size, batch_tokens, new_tokens)
    if batch_tokens is not None and len(plan) > 1:
        even = -(-len(order) // len(plan))
        spread = _fill(order, lengths, min(even, batch_size or even), batch_tokens, new_tokens)
        if len(spread) == len(plan):
            return spread
    return plan


def _fill(
    order: Sequence[int],
    lengths: Sequence[int],
    batch_size: int | None,
    batch_tokens: int | None,
    new_tokens: int,
) -> list[list[int]]:
    """``order`` cut greedily into batches within both caps."""
    batches: list[list[int]] = []
    for pos in order:
        batch = batches[-1] if batches else []
        rows = len(batch) + 1
        full = not batch or (batch_size is not None and rows > batch_size)
        if batch_tokens is not None and batch:
            full = full or rows * (lengths[batch[0]] + new_tokens) > batch_tokens
        if full:
            batches.append([pos])
        else:
            batch.append(pos)
    return batches


def sampling_plan(lengths: Sequence[int], settings: SamplingSettings) -> list[list[int]]:
    """:func:`plan_batches` with the sampling settings' caps."""
    caps = (settings.batch_size, settings.batch_tokens)
    return plan_batches(lengths, *caps, settings.max_new_tokens)


def _plan_record(
    prompts: Sequence[RenderedPrompt],
    plan: list[list[int]],
    settings: SamplingSettings,
    policy: PairPolicy,
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
        "pairs": policy.to_dict(),
    }


def sample_prompts(
    generator: Generator,
    batch: Sequence[RenderedPrompt],
    settings: SamplingSettings,
    policy: PairPolicy,
    batch_index: int,
    end: str,
) -> tuple[list[PromptSamples], int]:
    """Up to ``num_samples`` rounds over one batch: round k samples, with the seed of
    (seed, batch, k), only the prompts that are not settled yet. Returns the judged samples per
    prompt and the number of tokens generated."""
    states = [
        PromptSamples.start(p.example.prompt_messages, p.example.gold, p.example.answers, end)
        for p in batch
    ]
    tokens = 0
    for round_index in range(policy.num_samples):
        todo = [i for i, state in enumerate(states) if not state.settled(policy)]
        if not todo:
            break
        completions = generator.generate(
            [batch[i].text for i in todo], settings, settings.sample_seed(batch_index, round_index)
        )
        if len(completions) != len(todo):
            raise RuntimeError(
                f"generator {generator.name} returned {len(completions)} completions "
                f"for {len(todo)} prompts"
            )
        for i, completion in zip(todo, completions, strict=True):
            states[i].judge(completion, policy, end)
        tokens += sum(c.n_tokens for c in completions)
    return states, tokens


def real_pairs(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that are preference pairs: without the solved prompts `solved: nll` keeps for
    the NLL term (rejected = chosen by design), which no preference metric may count."""
    return [row for row in rows if not row.get("solved")]


def make_pair_row(
    prompt: RenderedPrompt,
    samples: PromptSamples,
    end_token: str,
    generator: str,
    settings: SamplingSettings,
    policy: PairPolicy,
) -> dict[str, Any]:
    """One pair row. Both answers are stripped of surrounding whitespace and a trailing
    ``end_token`` and end with exactly one ``end_token``. A row that must not be used gets a
    ``drop_reason`` (see :meth:`PromptSamples.rejected`); it shows its first sample."""
    chosen, chosen_source = samples.chosen(policy)
    position, drop = samples.rejected(chosen, policy)
    shown = samples.samples[position or 0]
    solved = drop == "already_solved" and policy.solved == "nll"
    row: dict[str, Any] = {
        "prompt": prompt.text,
        "chosen": chosen + end_token,
        "rejected": (chosen if solved else shown.text) + end_token,
        "end_token": end_token,
        "source": prompt.example.source,
        "row": prompt.example.row,
        "index": prompt.index,
        "generator": generator,
        "sampling": settings.to_dict(),
        "rejected_tokens": shown.completion.n_tokens,
        "finish_reason": shown.completion.finish_reason,
        "chosen_source": chosen_source,
        "rejected_sample": position or 0,
        "samples": len(samples.samples),
        "samples_right": sum(s.right is True for s in samples.samples),
        "sample_tokens": sum(s.completion.n_tokens for s in samples.samples),
    }
    if samples.error is not None:
        row["check_error"] = samples.error
    if solved:  # kept for the NLL term: identical answers give IPO a zero gradient
        row["solved"] = True
    elif drop:
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


def _log_turns_after(examples: Sequence[PromptExample]) -> None:
    if examples:
        first = examples[0]
        logger.warning(
            "%d conversation(s) go on after their last assistant turn (first: dataset %r, row "
            "%d, %d turn(s) after it): each pair answers that last assistant turn and leaves the "
            "later turns out, as Axolotl's SFT trains nothing on them. End each conversation "
            "with its answer to silence this.",
            len(examples), first.source, first.row, first.turns_after,
        )


def _log_check_errors(rows: Sequence[dict], check: str) -> None:
    failed = [r for r in rows if r.get("check_error")]
    if failed:
        shown = "; ".join(
            f"dataset {r['source']!r}, row {r['row']}: {r['check_error']}" for r in failed[:3]
        )
        logger.warning(
            "rejection_sampling.answer_check %r raised on %d row(s), skipped and counted; "
            "first: %s",
            check,
            len(failed),
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


@dataclass
class _Job:
    """The global work: rendered prompts, the batch plan, and the rows not used."""

    prompts: list[RenderedPrompt]
    plan: list[list[int]]
    invalid: list[InvalidRow]
    rows_in: int
    turns_after: list[PromptExample]  # conversations with turns after the answer left out


@dataclass
class _Sampler:
    """Samples and commits batches; loads the generator on first use."""

    factory: Callable[[], Generator]
    settings: SamplingSettings
    policy: PairPolicy
    end: str
    store: PairStore
    generator: Generator | None = None
    tokens: int = 0
    seconds: float = 0.0

    def commit(self, index: int, batch: list[RenderedPrompt]) -> None:
        if self.generator is None:
            self.generator = self.factory()
        started = time.perf_counter()
        states, tokens = sample_prompts(
            self.generator, batch, self.settings, self.policy, index, self.end
        )
        self.seconds += time.perf_counter() - started
        self.tokens += tokens
        rows = [
            make_pair_row(
                prompt, state, self.end, self.generator.name, self.settings, self.policy
            )
            for prompt, state in zip(batch, states, strict=True)
        ]
        self.store.commit_batch(index, rows)

    def close(self) -> None:
        if self.generator is not None and hasattr(self.generator, "close"):
            self.generator.close()


def _cached_result(store: PairStore, started: float) -> PairsResult:
    summary = PairsSummary.from_dict(store.read_summary() or {})
    summary.cached = True
    summary.batches_sampled = 0
    summary.tokens_this_run = 0
    summary.generation_seconds = 0.0
    summary.wall_seconds = time.perf_counter() - started
    return PairsResult(store.pairs_path, summary, store)


def _prepare(
    examples: Sequence[PromptExample],
    tokenizer: Any,
    sequence_len: int | None,
    invalid_rows: Sequence[InvalidRow],
    settings: SamplingSettings,
) -> _Job:
    prompts, too_long = render_prompts(examples, tokenizer, sequence_len)
    invalid = [*invalid_rows, *too_long]
    if not prompts:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(Counter(b.kind for b in invalid).items()))
        first = f" First: {invalid[0].message}" if invalid else ""
        raise UserError(
            f"no usable rows to build pairs from ({len(invalid)} invalid: {counts}).{first}"
        )
    plan = sampling_plan([p.n_tokens for p in prompts], settings)
    after = [p.example for p in prompts if p.example.turns_after]
    return _Job(prompts, plan, invalid, len(examples) + len(invalid_rows), after)


def _sample_mine(job: _Job, mine: list[int], sampler: _Sampler, progress: bool) -> int:
    """Sample this rank's batches that are not in the store yet; returns how many this
    process sampled."""
    done = sampler.store.done_batches()
    todo = [i for i in mine if i not in done]
    bar = _progress(
        total=sum(len(job.plan[i]) for i in mine),
        initial=sum(len(job.plan[i]) for i in mine if i in done),
        enabled=progress,
    )
    sampled = 0  # what this process sampled (not batches another process sharing the store did)
    try:
        for index in sampler.store.claim(todo):
            sampler.commit(index, [job.prompts[pos] for pos in job.plan[index]])
            sampled += 1
            bar.update(len(job.plan[index]))
            rate = sampler.tokens / max(sampler.seconds, 1e-9)
            bar.set_postfix_str(f"{rate:.0f} tok/s", refresh=False)
    finally:
        bar.close()
        sampler.close()
    return sampled


def _summary(
    job: _Job, policy: PairPolicy, stats: MergeStats, rows: list[dict], too_long: int
) -> PairsSummary:
    """The run summary from every shard row (earlier, interrupted runs included)."""
    solved = sum(bool(r.get("solved")) for r in rows if not r.get("drop_reason"))
    return PairsSummary(
        rows_in=job.rows_in,
        pairs_out=stats.kept - solved,
        solved_kept=solved,
        invalid=dict(sorted(Counter(bad.kind for bad in job.invalid).items())),
        dropped=stats.dropped,
        batches=len(job.plan),
        tokens_generated=sum(int(r.get("sample_tokens", 0)) for r in rows),
        truncated=sum(r.get("finish_reason") == "length" for r in rows),
        samples_judged=sum(int(r.get("samples", 0)) for r in rows),
        samples_right=sum(int(r.get("samples_right", 0)) for r in rows),
        answer_check=policy.answer_check,
        too_long=too_long,
        turns_after_answer=len(job.turns_after),
        generator=next((str(r["generator"]) for r in rows if r.get("generator")), ""),
    )


def _merge(
    store: PairStore, job: _Job, policy: PairPolicy, run: dict[str, Any], too_long: Callable
) -> PairsSummary:
    """Rank 0: every shard into pairs.jsonl, with the summary of this run (``run``: the counters
    of every rank of this job summed). Returns that summary: another process sharing the store
    may merge and write its own after this one."""
    merged: list[PairsSummary] = []

    def summary(stats: MergeStats, rows: list[dict]) -> dict[str, Any]:
        _log_check_errors(rows, policy.answer_check)
        kept = [r for r in rows if not r.get("drop_reason")]
        merged.append(_summary(job, policy, stats, rows, too_long(kept)))
        for key, value in run.items():
            setattr(merged[0], key, value)
        return merged[0].to_dict()

    store.merge(len(job.plan), summary=summary, invalid=map(_invalid_record, job.invalid))
    return merged[0]


def _check_ranks(rank: int, world_size: int, barrier: Callable[[], None] | None) -> None:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if world_size > 1 and barrier is None:
        raise ValueError("world_size > 1 needs a barrier callable")


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
    policy: PairPolicy | None = None,
) -> PairsResult:
    """Cached? -> plan -> sample my batches -> merge on rank 0 -> summary.

    ``tokenizer`` is the training tokenizer (its chat template renders the prompts); the
    generator is only made when this rank has batches left. ``barrier`` syncs ranks (required
    when ``world_size > 1``). ``invalid_rows`` are counted and written to ``invalid.jsonl``;
    ``end_token`` (default EOS) ends every answer; ``policy`` (default: one sample, check
    ``none``, gold chosen) says how samples become pairs."""
    started = time.perf_counter()
    _check_ranks(rank, world_size, barrier)
    if store.is_complete():
        return _cached_result(store, started)
    end = end_token if end_token is not None else tokenizer.eos_token
    if not end:
        raise UserError("the training tokenizer has no eos_token; pass end_token explicitly")
    policy = policy or PairPolicy()
    job = _prepare(examples, tokenizer, sequence_len, invalid_rows, settings)
    if rank == 0:
        _log_invalid(job.invalid)
        _log_turns_after(job.turns_after)
    store.ensure_plan(_plan_record(job.prompts, job.plan, settings, policy))

    if world_size > 1:  # the ranks' records: the barrier waits for them, rank 0 sums them
        store.clear_rank_counts(rank)
    sampler = _Sampler(generator_factory, settings, policy, end, store)
    mine = [i for i in range(len(job.plan)) if i % world_size == rank]
    sampled = _sample_mine(job, mine, sampler, progress and rank == 0)
    local = {"batches_sampled": sampled, "tokens_this_run": sampler.tokens,
             "generation_seconds": sampler.seconds}
    if world_size > 1:
        store.record_rank_counts(rank, local)
    sync = barrier or (lambda: None)
    sync()
    summary: PairsSummary | None = None
    if rank == 0:  # this job's counts: another process sharing the store keeps its own
        run = local if world_size == 1 else _whole_run(store.rank_counts(world_size))
        summary = _merge(store, job, policy, run,
                         lambda rows: count_too_long(rows, tokenizer, sequence_len))
    sync()

    recorded = store.read_summary() if summary is None and store.is_complete() else None
    if recorded is not None:
        summary = PairsSummary.from_dict(recorded)
    elif summary is None:  # only when ranks are simulated without a real barrier
        summary = PairsSummary(rows_in=job.rows_in, batches=len(job.plan), **local)
    summary.wall_seconds = time.perf_counter() - started
    if rank == 0 and progress:
        logger.info("pairs written to %s\n%s", store.pairs_path, summary.format())
    return PairsResult(store.pairs_path, summary, store)
