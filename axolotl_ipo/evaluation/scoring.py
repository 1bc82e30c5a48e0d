"""Log-probabilities of answers given prompts, token by token, batched.

Tokenisation follows TRL's DPOTrainer (see :func:`tokenize_pair`), so the numbers are the
ones IPO trains on. Nothing here
knows about Axolotl.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["AnswerScore", "score_answers", "tokenize_pair"]


@dataclass(frozen=True)
class AnswerScore:
    """Sum of the answer tokens' log-probabilities and how many tokens there were."""

    logp_sum: float
    n_tokens: int

    @property
    def mean(self) -> float:
        """Token-averaged log-probability (what TRL's IPO loss uses)."""
        return self.logp_sum / max(self.n_tokens, 1)


def tokenize_pair(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) as TRL's DPOTrainer builds them for text pairs: EOS appended to
    the answer text unless it already ends with it, then ``tok(prompt)`` and
    ``tok(prompt + answer)[len(prompt ids):]``."""
    eos = tokenizer.eos_token
    if eos and not answer.endswith(eos):
        answer = answer + eos
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + answer)["input_ids"]
    return prompt_ids, full_ids[len(prompt_ids) :]


def _batches(order: Sequence[int], size: int):
    for start in range(0, len(order), size):
        yield order[start : start + size]


def score_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[AnswerScore]:
    """Log-probability of each ``answers[i]`` after ``prompts[i]`` under ``model``.

    Sequences are right-padded and sorted by length; a sequence longer than
    ``max_length`` keeps its prompt's tail and its answer's head (TRL's ``keep_start``
    truncation of the completion after the prompt)."""
    import torch

    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    encoded = []
    for prompt, answer in zip(prompts, answers, strict=True):
        p_ids, a_ids = tokenize_pair(tokenizer, prompt, answer)
        if max_length is not None and len(p_ids) + len(a_ids) > max_length:
            a_ids = a_ids[: max(1, max_length - len(p_ids))]
            p_ids = p_ids[-(max_length - len(a_ids)) :]
        encoded.append((p_ids, a_ids))
    order = sorted(range(len(encoded)), key=lambda i: -sum(map(len, encoded[i])))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    scores: list[AnswerScore | None] = [None] * len(encoded)
    with torch.inference_mode():
        for batch in _batches(order, batch_size):
            width = max(sum(map(len, encoded[i])) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            answer_mask = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, i in enumerate(batch):
                p_ids, a_ids = encoded[i]
                n = len(p_ids) + len(a_ids)
                ids[row, :n] = torch.tensor(p_ids + a_ids)
                attention[row, :n] = 1
                answer_mask[row, len(p_ids) : n] = True
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
            logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            targets = ids[:, 1:].to(device)
            token_logps = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            mask = answer_mask[:, 1:].to(device)
            sums = (token_logps * mask).sum(-1).tolist()
            counts = mask.sum(-1).tolist()
            for row, i in enumerate(batch):
                scores[i] = AnswerScore(float(sums[row]), int(counts[row]))
    return [s for s in scores if s is not None]
