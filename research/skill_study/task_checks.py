"""Answer checks for the skill study's tasks that the plugin does not build in, in the form any
user check takes (`rejection_sampling.answer_check: task_checks:first_word`, with this folder on
PYTHONPATH): ``fn(prompt_messages, gold, sample) -> bool``, True when the sample is right;
``gold`` is the list of acceptable answers, the dataset's gold answer first."""

from __future__ import annotations

import re


def _first_word(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return words[0] if words else ""


def first_word(prompt_messages: list[dict], gold: list[str], sample: str) -> bool:
    """The sample's first word equals a gold answer's first word, case and punctuation
    ignored: 'Yes, because...' answers 'Yes'; 'B. make friends' answers 'B'."""
    word = _first_word(sample)
    return bool(word) and any(word == _first_word(g) for g in gold)
