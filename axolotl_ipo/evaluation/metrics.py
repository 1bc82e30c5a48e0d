"""The held-out metrics, as pure functions of per-answer scores and predictions."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from .scoring import AnswerScore

__all__ = [
    "contains_answer",
    "exact_match",
    "gold_nll",
    "implicit_margins",
    "logprob_preference_accuracy",
    "normalise_text",
    "preference_accuracy",
    "task_scores",
    "token_f1",
]

TIE = 1e-9


def implicit_margins(
    policy_chosen: Sequence[AnswerScore],
    policy_rejected: Sequence[AnswerScore],
    ref_chosen: Sequence[AnswerScore],
    ref_rejected: Sequence[AnswerScore],
) -> list[float]:
    """IPO's implicit reward margin per pair: the token-averaged log-ratio to the reference
    of the chosen answer minus that of the rejected one (0 for the reference itself)."""
    return [
        (pc.mean - rc.mean) - (pr.mean - rr.mean)
        for pc, pr, rc, rr in zip(
            policy_chosen, policy_rejected, ref_chosen, ref_rejected, strict=True
        )
    ]


def preference_accuracy(margins: Sequence[float]) -> float:
    """Share of pairs whose margin is positive; a tie counts one half (so the reference
    model, whose margins are all 0, scores exactly 0.5)."""
    if not margins:
        return float("nan")
    return sum(1.0 if m > TIE else 0.5 if m >= -TIE else 0.0 for m in margins) / len(margins)


def logprob_preference_accuracy(
    chosen: Sequence[AnswerScore], rejected: Sequence[AnswerScore]
) -> float:
    """Share of pairs where the model's own token-averaged log-probability ranks the gold
    answer above the sampled one (no reference involved)."""
    margins = [c.mean - r.mean for c, r in zip(chosen, rejected, strict=True)]
    return preference_accuracy(margins)


def gold_nll(scores: Sequence[AnswerScore]) -> float:
    """Mean negative log-likelihood per gold-answer token (all tokens pooled)."""
    tokens = sum(s.n_tokens for s in scores)
    if not tokens:
        return float("nan")
    return -sum(s.logp_sum for s in scores) / tokens


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalise_text(text: str) -> str:
    """SQuAD-style answer normalisation: lower case, no punctuation, no articles."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def contains_answer(prediction: str, answers: Sequence[str]) -> bool:
    """Some gold answer appears in the prediction as whole words (after normalisation)."""
    pred = f" {normalise_text(prediction)} "
    return any(norm and f" {norm} " in pred for norm in map(normalise_text, answers))


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    pred = normalise_text(prediction)
    return any(pred == normalise_text(answer) for answer in answers)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD token F1 against the best-matching gold answer (penalises padding an answer
    with extra words, which ``contains_answer`` rewards)."""
    from collections import Counter

    pred = normalise_text(prediction).split()
    best = 0.0
    for answer in answers:
        gold = normalise_text(answer).split()
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            precision, recall = common / len(pred), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def task_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean contains-answer, exact-match and token-F1 of greedy answers."""
    pairs = list(zip(predictions, answers, strict=True))
    n = max(len(pairs), 1)
    return {
        "task_contains": sum(contains_answer(p, a) for p, a in pairs) / n,
        "task_exact": sum(exact_match(p, a) for p, a in pairs) / n,
        "task_f1": sum(token_f1(p, a) for p, a in pairs) / n,
    }
