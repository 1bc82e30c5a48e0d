"""Two trained runs compared on the same held-out prompts, as pure functions: each greedy
answer judged by an answer check, each run's accuracy, gold NLL and answer length, the paired
difference with its bootstrap interval, and what it says."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from axolotl_ipo.pairs.checks import AnswerCheck

from .metrics import answer_words, gold_nll, paired_bootstrap
from .scoring import AnswerScore

__all__ = ["accuracy", "compare", "judge", "reading", "run_metrics"]

LOG = logging.getLogger("axolotl_ipo.evaluation")


def judge(
    check: AnswerCheck,
    messages: Sequence[list[dict]],
    answers: Sequence[Sequence[str]],
    predictions: Sequence[str],
) -> list[bool | None]:
    """Per prompt: is the answer right by ``check``? None where the check raised (logged once
    per call, with the first row it raised on)."""
    verdicts: list[bool | None] = []
    for row, (prompt, gold, prediction) in enumerate(
        zip(messages, answers, predictions, strict=True)
    ):
        try:
            verdicts.append(bool(check(prompt, list(gold), prediction)))
        except Exception as err:  # noqa: BLE001 - a check failing on a row is counted
            if None not in verdicts:
                LOG.warning("the answer check raised on held-out prompt %d: %s", row, err)
            verdicts.append(None)
    return verdicts


def accuracy(verdicts: Sequence[bool | None]) -> float:
    """Share of judged prompts answered right (NaN when none was judged)."""
    judged = [v for v in verdicts if v is not None]
    return sum(judged) / len(judged) if judged else float("nan")


def run_metrics(
    gold: Sequence[AnswerScore], predictions: Sequence[str], verdicts: Sequence[bool | None]
) -> dict[str, Any]:
    return {
        "accuracy": accuracy(verdicts),
        "gold_nll": gold_nll(gold),
        "answer_words": answer_words(predictions),
        "right": sum(v is True for v in verdicts),
        "check_errors": sum(v is None for v in verdicts),
    }


def compare(
    run: dict[str, Any],
    baseline: dict[str, Any],
    run_verdicts: Sequence[bool | None],
    baseline_verdicts: Sequence[bool | None],
) -> dict[str, Any]:
    """Run minus baseline: the accuracy on the prompts both runs' answers were judged on, with
    its paired bootstrap 95% interval; the gold NLL and answer length differences."""
    both = [
        (float(b), float(r))
        for r, b in zip(run_verdicts, baseline_verdicts, strict=True)
        if r is not None and b is not None
    ]
    change = paired_bootstrap([b for b, _ in both], [r for _, r in both])
    return {
        "accuracy": {**change, "prompts": len(both)},
        "gold_nll": run["gold_nll"] - baseline["gold_nll"],
        "answer_words": run["answer_words"] - baseline["answer_words"],
    }


def reading(change: dict[str, float]) -> str:
    """One line on the accuracy difference's 95% interval."""
    if math.isnan(change["low"]):  # nothing judged
        return "no reading: no prompt was judged for both runs"
    if change["low"] > 0:
        return "the run is better than the baseline (the 95% interval is above 0)"
    if change["high"] < 0:
        return "the run is worse than the baseline (the 95% interval is below 0)"
    return "no measurable difference (the 95% interval contains 0)"
