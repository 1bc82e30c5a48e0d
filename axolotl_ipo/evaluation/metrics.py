"""The held-out metrics, as pure functions of per-answer scores and predictions."""

from __future__ import annotations

from collections.abc import Sequence

from axolotl_ipo.pairs.checks import contains_answer, exact_match, normalise_text

from .scoring import AnswerScore

__all__ = [
    "answer_words",
    "contains_answer",
    "exact_match",
    "gold_nll",
    "implicit_margins",
    "length_matched_contains",
    "logprob_preference_accuracy",
    "normalise_text",
    "paired_bootstrap",
    "per_prompt_task",
    "preference_accuracy",
    "task_changes",
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


def answer_words(predictions: Sequence[str]) -> float:
    """Mean length of the greedy answers in whitespace-separated words."""
    return sum(len(p.split()) for p in predictions) / max(len(predictions), 1)


def length_matched_contains(
    reference: Sequence[str], policy: Sequence[str], answers: Sequence[Sequence[str]]
) -> float:
    """Contains-answer of the *reference* answers cut to the policy's answer length (in words,
    at least one), prompt by prompt: the score the reference would get at the policy's
    verbosity. Contains-answer rewards long answers (more words, more chances to hit a gold
    phrase), so a policy that learned to answer briefly is compared with this, not only with
    the reference's full-length score."""
    hits = [
        contains_answer(" ".join(ref.split()[: max(1, len(pol.split()))]), gold)
        for ref, pol, gold in zip(reference, policy, answers, strict=True)
    ]
    return sum(hits) / max(len(hits), 1)


def paired_bootstrap(
    before: Sequence[float], after: Sequence[float], resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Mean change ``after - before`` over paired per-prompt values, with a 95% percentile
    bootstrap interval (prompts resampled with replacement, seeded)."""
    import random

    diffs = [a - b for b, a in zip(before, after, strict=True)]
    n = len(diffs)
    if not n:
        return {"change": float("nan"), "low": float("nan"), "high": float("nan")}
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return {
        "change": sum(diffs) / n,
        "low": means[int(0.025 * resamples)],
        "high": means[int(0.975 * resamples) - 1],
    }


def per_prompt_task(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict:
    """Per-prompt contains / exact / F1 values (for paired comparisons)."""
    pairs = list(zip(predictions, answers, strict=True))
    return {
        "task_contains": [float(contains_answer(p, a)) for p, a in pairs],
        "task_exact": [float(exact_match(p, a)) for p, a in pairs],
        "task_f1": [token_f1(p, a) for p, a in pairs],
    }


def task_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean contains-answer, exact-match and token-F1 of greedy answers."""
    values = per_prompt_task(predictions, answers)
    return {key: sum(v) / max(len(v), 1) for key, v in values.items()}


def task_changes(
    before: Sequence[str], after: Sequence[str], answers: Sequence[Sequence[str]]
) -> dict[str, dict[str, float]]:
    """Per task metric: the change from the ``before`` to the ``after`` answers, with its
    paired bootstrap 95% interval."""
    old, new = per_prompt_task(before, answers), per_prompt_task(after, answers)
    return {key: paired_bootstrap(old[key], new[key]) for key in old}
