"""Which of a prompt's sampled answers make its pair: chosen, rejected, or a drop reason.

Each sample is judged by the answer check (:mod:`axolotl_ipo.pairs.checks`). The rejected answer is
the first sample judged wrong that is usable (not empty, not the chosen text, and not cut at
``max_new_tokens`` when ``truncated: drop``); a prompt with none is dropped, or with
``solved: nll`` an already solved one keeps its chosen answer on both sides. The chosen answer
is the gold one, or with ``chosen: correct_sample`` the first sample judged right that ended
on its own. A prompt is settled once neither can change, so sampling it again is not needed.
Nothing here knows about models or Axolotl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .checks import AnswerCheck, gold_answers, load_check
from .sampler.base import Completion

__all__ = ["PairPolicy", "PromptSamples", "normalise_answer", "strip_end"]


def strip_end(text: str, end: str) -> str:
    text = text.strip()
    while end and text.endswith(end):
        text = text[: -len(end)].rstrip()
    return text


def normalise_answer(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class PairPolicy:
    """How samples become pairs (every field changes the pairs: all belong in the cache key)."""

    answer_check: str = "none"
    num_samples: int = 1
    chosen: Literal["gold", "correct_sample"] = "gold"
    truncated: Literal["keep", "drop"] = "keep"
    solved: Literal["drop", "nll"] = "drop"
    check: AnswerCheck = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        object.__setattr__(self, "check", load_check(self.answer_check))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "answer_check": self.answer_check,
            "num_samples": self.num_samples,
            "chosen": self.chosen,
            "truncated": self.truncated,
        }
        if self.solved != "drop":  # stores made before the key existed keep their cache key
            data["solved"] = self.solved
        return data


@dataclass(frozen=True)
class Sample:
    completion: Completion
    text: str  # without surrounding whitespace and end token
    right: bool | None  # None: the check raised


@dataclass
class PromptSamples:
    """The samples of one prompt judged so far."""

    prompt_messages: list[dict]
    gold: list[str]  # acceptable answers, the row's gold answer first
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None  # the check's exception, when it raised

    @classmethod
    def start(
        cls, prompt_messages: list[dict], gold: str, answers: tuple[str, ...], end: str
    ) -> PromptSamples:
        return cls(prompt_messages, gold_answers(strip_end(gold, end), answers))

    def judge(self, completion: Completion, policy: PairPolicy, end: str) -> None:
        """Judge one more sample (only while the prompt is not settled)."""
        text = strip_end(completion.text, end)
        try:
            right: bool | None = bool(policy.check(self.prompt_messages, list(self.gold), text))
        except Exception as err:  # noqa: BLE001 - a user's check failing on a row is counted
            right, self.error = None, f"{type(err).__name__}: {err}"
        self.samples.append(Sample(completion, text, right))

    def chosen(self, policy: PairPolicy) -> tuple[str, str]:
        """(chosen text, ``gold`` or ``sample``)."""
        if policy.chosen == "correct_sample":
            for sample in self.samples:
                if sample.right and sample.text and sample.completion.finish_reason != "length":
                    return sample.text, "sample"
        return self.gold[0], "gold"

    def _unusable(self, sample: Sample, chosen: str, policy: PairPolicy) -> str | None:
        if not sample.text:
            return "empty_rejected"
        if normalise_answer(sample.text) == normalise_answer(chosen):
            return "rejected_equals_chosen"
        if policy.truncated == "drop" and sample.completion.finish_reason == "length":
            return "truncated"
        return None

    def rejected(self, chosen: str, policy: PairPolicy) -> tuple[int | None, str | None]:
        """(position of the rejected sample, None) or (None, the reason the prompt is dropped)."""
        if self.error is not None:
            return None, "check_error"
        reasons = []
        for position, sample in enumerate(self.samples):
            if sample.right:
                continue
            reason = self._unusable(sample, chosen, policy)
            if reason is None:
                return position, None
            reasons.append(reason)
        return None, reasons[0] if reasons else "already_solved"

    def settled(self, policy: PairPolicy) -> bool:
        """True when more samples cannot change the pair (or the check raised)."""
        if self.error is not None or len(self.samples) >= policy.num_samples:
            return True
        chosen, source = self.chosen(policy)
        if policy.chosen == "correct_sample" and source == "gold":
            return False
        return self.rejected(chosen, policy)[0] is not None
