"""Log-probabilities of answers given prompts, token by token, batched.

Tokenisation follows TRL's DPOTrainer (`upstream.trl.tokenize_pair`), so the numbers are the ones
IPO trains on. The forward passes are cut so that no token is run twice:

1. the prefix every prompt shares (e.g. the chat template's system turn) runs once per call;
2. each distinct prompt runs once (left-padded after that prefix), keeping only its last
   position's logits, which score the first token of every answer to it;
3. the answers run on their prompt's KV cache (right-padded), without their last token (nothing
   follows it), with logits only where answer tokens are scored.

The sums equal one full forward pass of prompt + answer per sequence to float rounding (about
1e-5 in fp32, tested). Nothing here knows about Axolotl.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from axolotl_ipo.pairs.sampler.prefix import pad_rows, prefix_cache, shared_prefix_length
from axolotl_ipo.upstream.transformers import select_cache_rows
from axolotl_ipo.upstream.trl import tokenize_pair

__all__ = ["DEFAULT_SCORE_BATCH", "AnswerScore", "encode_answers", "score_answers", "score_encoded"]

DEFAULT_SCORE_BATCH = 16  # answers per teacher-forced batch

Encoded = tuple[tuple[int, ...], tuple[int, ...]]  # (prompt ids, answer ids)


@dataclass(frozen=True)
class AnswerScore:
    """Sum of the answer tokens' log-probabilities and how many tokens there were."""

    logp_sum: float
    n_tokens: int

    @property
    def mean(self) -> float:
        """Token-averaged log-probability (what TRL's IPO loss uses)."""
        return self.logp_sum / max(self.n_tokens, 1)


def encode_answers(
    tokenizer: Any, prompts: Sequence[str], answers: Sequence[str], max_length: int | None = None
) -> list[Encoded]:
    """Token ids of each (prompt, answer). A sequence longer than ``max_length`` keeps its
    prompt's tail and its answer's head (TRL's ``keep_start`` truncation of the completion after
    the prompt). After an empty prompt the answer's first token is scored by nobody (as in TRL's
    shifted loss mask), so it becomes the prompt."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    encoded = []
    for prompt, answer in zip(prompts, answers, strict=True):
        p_ids, a_ids = tokenize_pair(tokenizer, prompt, answer)
        if max_length is not None and len(p_ids) + len(a_ids) > max_length:
            a_ids = a_ids[: max(1, max_length - len(p_ids))]
            p_ids = p_ids[-(max_length - len(a_ids)) :]
        if not p_ids:
            p_ids, a_ids = a_ids[:1], a_ids[1:]
        encoded.append((tuple(p_ids), tuple(a_ids)))
    return encoded


def _plan(groups: dict[tuple, list[tuple]], batch_size: int) -> list[list[tuple]]:
    """Prompts sorted by length (then by their longest answer), cut into batches of about
    ``batch_size`` answers (a prompt's answers stay together)."""
    order = sorted(groups, key=lambda p: (-len(p), -max(map(len, groups[p]))))
    batches: list[list[tuple]] = []
    rows = 0
    for prompt in order:
        if not batches or rows + len(groups[prompt]) > batch_size:
            batches.append([])
            rows = 0
        batches[-1].append(prompt)
        rows += len(groups[prompt])
    return batches


def _chunks(lengths: Sequence[int], overhead: int = 8) -> list[list[int]]:
    """Positions of ``lengths`` (longest first) in consecutive chunks, one forward pass each,
    that minimise padded tokens plus ``overhead`` tokens per pass (so a batch of long sampled
    answers and short gold ones is not all padded to the longest)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    cost, cut = [0] * (len(order) + 1), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        cost[end], cut[end] = min(
            (cost[start] + lengths[order[start]] * (end - start) + overhead, start)
            for start in range(end)
        )
    chunks, end = [], len(order)
    while end:
        chunks.append(order[cut[end] : end])
        end = cut[end]
    return chunks[::-1]


def _prompt_pass(model: Any, rests: list[tuple], prefix_len: int, cache: Any, pad_id: int):
    """Run the prompts' tails after the shared prefix: (log-probs of the token after each
    prompt [B, V], the attention mask over the cache [B, prefix + tail], the cache)."""
    import torch

    device = next(model.parameters()).device
    ids, mask = pad_rows(rests, pad_id, left=True)
    positions = prefix_len + (mask.cumsum(-1) - 1).clamp(min=0)
    attention = torch.cat([torch.ones((len(rests), prefix_len), dtype=torch.long), mask], -1)
    if cache is not None:
        cache = select_cache_rows(cache, torch.zeros(len(rests), dtype=torch.long), copy=True)
    out = model(
        input_ids=ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return torch.log_softmax(out.logits[:, -1].float(), -1), attention, out.past_key_values


def _answer_pass(model: Any, rows: list[int], answers: list[tuple], attention, cache, pad_id):
    """Sum of the log-probs of tokens 2.. of each answer, each after its prompt (row ``rows[i]``
    of the prompts' cache, which is left as it was); answers have at least two tokens."""
    import torch

    device = next(model.parameters()).device
    ids, mask = pad_rows([a[:-1] for a in answers], pad_id, left=False)
    targets, _ = pad_rows([a[1:] for a in answers], 0, left=False)
    index = torch.tensor(rows, dtype=torch.long)
    past = attention[index]
    positions = past.sum(-1, keepdim=True) + torch.arange(ids.shape[1])
    out = model(
        input_ids=ids.to(device),
        attention_mask=torch.cat([past, mask], -1).to(device),
        position_ids=positions.to(device),
        past_key_values=select_cache_rows(cache, index.to(device), copy=True),
        use_cache=True,
    )
    logps = torch.log_softmax(out.logits.float(), -1)
    token_logps = logps.gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask.to(device)).sum(-1).tolist()


def _score_batch(model: Any, batch: list[tuple], groups: dict, prefix_len: int, cache, pad_id):
    """Scores of every answer to the prompts of one batch, keyed by (prompt, answer)."""
    first, attention, cache = _prompt_pass(
        model, [p[prefix_len:] for p in batch], prefix_len, cache, pad_id
    )
    rows = [(g, a) for g, prompt in enumerate(batch) for a in groups[prompt]]
    heads = first[[g for g, _ in rows], [a[0] for _, a in rows]].tolist()
    sums = dict.fromkeys(range(len(rows)), 0.0)
    longer = [i for i, (_, a) in enumerate(rows) if len(a) > 1]
    for chunk in _chunks([len(rows[i][1]) - 1 for i in longer]):
        picked = [longer[k] for k in chunk]
        tails = _answer_pass(
            model, [rows[i][0] for i in picked], [rows[i][1] for i in picked], attention,
            cache, pad_id,
        )
        sums.update(zip(picked, tails, strict=True))
    return {
        (batch[g], a): AnswerScore(heads[i] + sums[i], len(a)) for i, (g, a) in enumerate(rows)
    }


def score_encoded(
    model: Any,
    encoded: Sequence[Encoded],
    *,
    batch_size: int = DEFAULT_SCORE_BATCH,
    pad_id: int = 0,
) -> list[AnswerScore]:
    """Log-probability of each answer's ids after its prompt's ids under ``model``; each
    distinct prompt and each distinct (prompt, answer) is run once. An empty answer scores 0
    over 0 tokens."""
    import torch

    groups: dict[tuple, dict[tuple, None]] = {}
    for prompt, answer in encoded:
        if answer:
            groups.setdefault(prompt, {})[answer] = None
    answers = {prompt: list(found) for prompt, found in groups.items()}
    scores: dict[Encoded, AnswerScore] = {}
    if answers:
        prefix_len = shared_prefix_length(list(answers))
        prefix = next(iter(answers))[:prefix_len]
        cache = prefix_cache(model, prefix) if prefix else None
        with torch.inference_mode():
            for batch in _plan(answers, batch_size):
                scores.update(_score_batch(model, batch, answers, prefix_len, cache, pad_id))
    return [scores.get(pair, AnswerScore(0.0, 0)) for pair in encoded]


def score_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = DEFAULT_SCORE_BATCH,
    max_length: int | None = None,
) -> list[AnswerScore]:
    """Log-probability of each ``answers[i]`` after ``prompts[i]`` under ``model``, tokenised
    and truncated as TRL does (:func:`encode_answers`); ``batch_size`` answers per batch."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = encode_answers(tokenizer, prompts, answers, max_length)
    return score_encoded(model, encoded, batch_size=batch_size, pad_id=pad)
