"""Answer checks: is a sampled answer right, judged against the gold answers?

A check is called as ``check(prompt_messages, gold, sample) -> bool`` (True = the sample is
right), where ``gold`` is the list of acceptable answers of the row (its gold answer first) and
``sample`` the generated text without its end token. Built in: ``none``, ``normalized``,
``contains`` and ``number``; ``module:function`` loads a user's own check from PYTHONPATH.
Nothing here knows about models or Axolotl.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import string
import sys
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from types import CodeType
from typing import Any

__all__ = [
    "BUILTIN_CHECKS",
    "AnswerCheck",
    "check_fingerprint",
    "contains_answer",
    "exact_match",
    "final_number",
    "gold_answers",
    "load_check",
    "normalise_text",
]

AnswerCheck = Callable[[list[dict], list[str], str], bool]
KEY = "rejection_sampling.answer_check"

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
# An optional sign and dollar sign, digits with optional thousands commas, optional decimals,
# optional "/denominator": "1,000", "3.0", "$5", "-2.5", ".5", "3/4".
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>-)?\$?(?P<sign2>-)?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<frac>\.\d+)?(?:/(?P<den>\d+))?"
)


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


def final_number(text: str) -> Fraction | None:
    """The last number written in ``text`` ("9 apples" -> 9, "$1,000.50" -> 1000.5, "3/4"), or
    None when it has none."""
    found = None
    for match in _NUMBER.finditer(text):
        digits = (match["int"] or "").replace(",", "") + (match["frac"] or "")
        if not digits or (match["den"] is not None and int(match["den"]) == 0):
            continue
        value = Fraction(digits if match["int"] else "0" + digits)
        if match["den"] is not None:
            value /= int(match["den"])
        found = -value if (match["sign"] or match["sign2"]) else value
    return found


def gold_answers(gold: str, answers: Sequence[str] = ()) -> list[str]:
    """The acceptable answers of a row: its gold answer, then the others, without repeats."""
    return list(dict.fromkeys([gold, *answers]))


def _never_right(prompt_messages: list[dict], gold: list[str], sample: str) -> bool:
    return False  # `none`: only an answer identical to the chosen one is left out (judge.py)


def _normalized(prompt_messages: list[dict], gold: list[str], sample: str) -> bool:
    return exact_match(sample, gold)


def _contains(prompt_messages: list[dict], gold: list[str], sample: str) -> bool:
    return contains_answer(sample, gold)


def _number(prompt_messages: list[dict], gold: list[str], sample: str) -> bool:
    wanted = {value for value in map(final_number, gold) if value is not None}
    if not wanted:
        raise ValueError(f"the gold answer {gold[0]!r} has no number for the `number` check")
    return final_number(sample) in wanted


BUILTIN_CHECKS: dict[str, AnswerCheck] = {
    "none": _never_right,
    "normalized": _normalized,
    "contains": _contains,
    "number": _number,
}


def load_check(name: str) -> AnswerCheck:
    """A built-in check by name, or ``module:function`` imported from PYTHONPATH. Raises
    ValueError with a one-line message naming the config key."""
    if name in BUILTIN_CHECKS:
        return BUILTIN_CHECKS[name]
    module_name, sep, function = name.partition(":")
    if not sep or not module_name or not function:
        raise ValueError(
            f"{KEY}: unknown check {name!r}; use one of {', '.join(BUILTIN_CHECKS)} or "
            "`module:function` (a function on your PYTHONPATH)"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the same config mistake
        raise ValueError(
            f"{KEY}: cannot import module {module_name!r} ({type(err).__name__}: {err}); put "
            "it on PYTHONPATH or fix the name"
        ) from None
    check = getattr(module, function, None)
    if not callable(check):
        raise ValueError(
            f"{KEY}: module {module_name!r} has no function {function!r}; it must define "
            f"{function}(prompt_messages, gold, sample) -> bool"
        )
    return check


_CONSTANTS = (str, bytes, int, float, tuple, frozenset, dict)


def _code_objects(code: CodeType) -> Iterator[CodeType]:
    """``code`` and the code nested in it (comprehensions, lambdas, inner functions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_objects(const)


def _source_closure(function: Callable) -> list[str]:
    """The source of ``function`` and of every function and regular expression of its own
    module that it uses, directly or through those functions (what decides its behaviour)."""
    module = sys.modules.get(function.__module__)
    parts, seen, todo = [], set(), [function]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        parts.append(inspect.getsource(current))
        names = sorted({n for code in _code_objects(current.__code__) for n in code.co_names})
        for value in (getattr(module, n, None) for n in names):
            if inspect.isfunction(value) and value.__module__ == function.__module__:
                todo.append(value)
            elif isinstance(value, re.Pattern) and id(value) not in seen:
                seen.add(id(value))
                parts.append(value.pattern)
            elif isinstance(value, _CONSTANTS) and " at 0x" not in repr(value):
                parts.append(repr(value))  # e.g. a str.translate table
    return parts


def check_fingerprint(name: str) -> dict[str, Any]:
    """The check's name and a hash of its source with the helpers of its module it calls (a
    built-in one's or a user's): a change of what the check does changes the pair cache key."""
    try:
        source = "\n".join(_source_closure(load_check(name)))
    except (OSError, TypeError):
        return {"name": name}
    return {"name": name, "source_sha256": hashlib.sha256(source.encode("utf-8")).hexdigest()}
