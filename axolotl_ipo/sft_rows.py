"""SFT rows -> prompts with a gold answer.

Reads the row formats people already feed Axolotl for SFT and turns each row into a
:class:`PromptExample` (the conversation up to the answer, plus the gold answer).
Rows that cannot be used become :class:`InvalidRow` records whose message names the
dataset, the row and the field, and says what to do. Nothing here knows about models,
tokenizers or Axolotl.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from axolotl_ipo.errors import UserError

__all__ = [
    "CUSTOM",
    "FORMATS",
    "InvalidRow",
    "PromptExample",
    "extract_examples",
    "fingerprint_examples",
]


@dataclass(frozen=True)
class PromptExample:
    """One prompt (chat messages before the answer) and its gold answer; ``answers`` are the
    row's acceptable answers when it lists several (e.g. NQ-open's ``answers`` column).
    ``prompt_text`` is set for Axolotl's custom instruct format, which SFT renders as plain
    text, not with the chat template (its one message then holds that text)."""

    prompt_messages: list[dict]
    gold: str
    source: str
    row: int
    answers: tuple[str, ...] = ()
    prompt_text: str | None = None  # the prompt as text, for formats without a chat template
    turns_after: int = 0  # a conversation's turns after its gold answer, left out of the pair


@dataclass(frozen=True)
class InvalidRow:
    """A row that was not used, with the reason (``kind`` is a short code for counting)."""

    source: str
    row: int
    field: str
    reason: str
    kind: str = "invalid"

    @property
    def message(self) -> str:
        return f"dataset {self.source!r}, row {self.row}, field {self.field!r}: {self.reason}"

    def __str__(self) -> str:
        return self.message


# The SFT `type:`s both supported Axolotl releases accept with `rl:` set, each with the dataset
# keys that shape its rows. `chat_template` covers OpenAI-style `messages` and ShareGPT-style
# `conversations` (`field_messages` + `message_property_mappings`); `sharegpt` itself is
# rejected by Axolotl >= 0.19 ("deprecated, use chat_template"). `prompt_completion` is this
# plugin's own (Axolotl's `completion` and `input_output` have no prompt/answer split: refused
# in one line by `sft_datasets.split_sources`).
FORMATS: tuple[str, ...] = ("alpaca", "chat_template", "prompt_completion")
# Axolotl's custom instruct format: `type:` is a mapping, not a name (`sft_datasets.split_sources`).
CUSTOM = "custom"

ALLOWED_KEYS: dict[str, set[str]] = {
    "alpaca": {"field_instruction", "field_input", "field_output", "field_system"},
    "chat_template": {
        "field_messages",
        "message_property_mappings",
        "message_field_role",
        "message_field_content",
        "roles",
        "drop_system_message",
    },
    "prompt_completion": {"field_prompt", "field_completion", "field_system"},
    CUSTOM: {"field_instruction", "field_input", "field_output", "field_system", "format",
             "no_input_format", "system_format", "system_prompt"},
}

# Axolotl's chat_template role mapping (ChatTemplatePrompter): used unless the dataset sets
# `roles: {target: [source, ...]}`, which replaces it; unlisted roles pass through unchanged.
AXOLOTL_DEFAULT_ROLES = {
    "human": "user",
    "user": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
    "tool": "tool",
}


# An extractor's result: (prompt messages, gold answer, other PromptExample fields).
Extracted = tuple[list[dict], str, dict[str, Any]]


class _Bad(Exception):
    """Internal: a row problem, turned into an InvalidRow by the caller."""

    def __init__(self, field: str, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.field, self.reason, self.kind = field, reason, kind


@dataclass
class _Spec:
    fmt: str
    fields: dict[str, Any] = field(default_factory=dict)
    render: Callable[[Mapping[str, Any]], str] | None = None

    def get(self, key: str, default: Any) -> Any:
        value = self.fields.get(key)
        return default if value is None else value


def _canonical(fmt: str) -> str:
    if fmt not in ALLOWED_KEYS:
        raise ValueError(
            f"unknown SFT format {fmt!r}; use one of {list(FORMATS)} "
            "(ShareGPT data: chat_template with field_messages and message_property_mappings)"
        )
    return fmt


def _check_field_map(fmt: str, field_map: Mapping[str, Any] | None) -> dict[str, Any]:
    fields = dict(field_map or {})
    unknown = sorted(set(fields) - ALLOWED_KEYS[fmt])
    if unknown:
        raise ValueError(
            f"field mapping keys {unknown} do not apply to format {fmt!r}; "
            f"allowed: {sorted(ALLOWED_KEYS[fmt])}"
        )
    return fields


def _text(row: Mapping[str, Any], key: str, *, required: bool, what: str) -> str | None:
    """A string field: missing/None/empty -> error when required, else None."""
    if key not in row or row[key] is None:
        if required:
            raise _Bad(
                key,
                f"missing; every row needs {what} in column {key!r}. Fix or remove the row, "
                f"or map the right column in the dataset config.",
                "missing_field",
            )
        return None
    value = row[key]
    if not isinstance(value, str):
        raise _Bad(
            key,
            f"expected a string, got {type(value).__name__}; fix the row or map another column.",
            "wrong_type",
        )
    if not value.strip():
        if required:
            raise _Bad(
                key,
                f"is empty; {what} must be non-empty text. Fix or remove the row.",
                "empty_field",
            )
        return None
    return value


def _alpaca(row: Mapping[str, Any], spec: _Spec) -> Extracted:
    instruction = _text(
        row, spec.get("field_instruction", "instruction"), required=True, what="an instruction"
    )
    extra = _text(row, spec.get("field_input", "input"), required=False, what="input")
    gold = _text(row, spec.get("field_output", "output"), required=True, what="the gold answer")
    system = _text(row, spec.get("field_system", "system"), required=False, what="system")
    user = f"{instruction}\n\n{extra}" if extra else instruction
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    return messages, gold, {}  # type: ignore[return-value]


def _custom(row: Mapping[str, Any], spec: _Spec) -> Extracted:
    """Axolotl's custom instruct format: the fields checked as for alpaca, the prompt rendered
    by ``spec.render`` (Axolotl's own prompter) as SFT renders it."""
    _text(row, spec.get("field_instruction", "instruction"), required=True, what="an instruction")
    _text(row, spec.get("field_input", "input"), required=False, what="input")
    gold = _text(row, spec.get("field_output", "output"), required=True, what="the gold answer")
    _text(row, spec.get("field_system", "system"), required=False, what="system")
    text = spec.render(row)  # type: ignore[misc]
    return [{"role": "user", "content": text}], gold, {"prompt_text": text}  # type: ignore


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    # OpenAI content parts: [{"type": "text", "text": ...}, ...]
    if isinstance(value, list) and all(
        isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in value
    ):
        return "".join(p["text"] for p in value)
    raise _Bad(
        where,
        f"expected text content, got {type(value).__name__}; only text (or text parts) "
        "can be used. Fix or remove the row.",
        "wrong_type",
    )


def _message_keys(spec: _Spec) -> tuple[str, str, str]:
    """(field_messages, role key, content key) as Axolotl resolves them, legacy keys included."""
    props = dict(spec.get("message_property_mappings", {}))
    role_key = props.get("role") or spec.get("message_field_role", "role")
    content_key = props.get("content") or spec.get("message_field_content", "content")
    return spec.get("field_messages", "messages"), role_key, content_key


def _role_map(spec: _Spec) -> dict[str, str]:
    """Axolotl's default mapping, or exactly the dataset's `roles: {target: [source, ...]}`."""
    roles = spec.fields.get("roles")
    if not roles:
        return dict(AXOLOTL_DEFAULT_ROLES)
    return {source: target for target, sources in roles.items() for source in sources}


def _turns(row: Mapping[str, Any], spec: _Spec) -> list[dict]:
    """The row's messages with roles mapped as Axolotl maps them (unmapped roles unchanged)."""
    key, role_key, content_key = _message_keys(spec)
    if key not in row or row[key] is None:
        raise _Bad(
            key,
            f"missing; every row needs a list of messages in column {key!r} "
            "(set field_messages if they live elsewhere).",
            "missing_field",
        )
    turns = row[key]
    if not isinstance(turns, list) or not turns:
        raise _Bad(
            key, "expected a non-empty list of messages; fix or remove the row.", "wrong_type"
        )
    roles = _role_map(spec)
    messages: list[dict] = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, Mapping):
            raise _Bad(
                where, f"expected a message object, got {type(turn).__name__}.", "wrong_type"
            )
        if role_key not in turn or content_key not in turn:
            raise _Bad(
                where,
                f"message lacks {role_key!r} or {content_key!r}; set message_property_mappings "
                f"(role/content) to the keys your messages use (found {sorted(turn)}).",
                "missing_field",
            )
        role = roles.get(turn[role_key], turn[role_key])
        content = _content(turn[content_key], f"{where}.{content_key}")
        messages.append({"role": role, "content": content})
    return messages


def _no_assistant_turn(key: str, messages: list[dict]) -> _Bad:
    found = sorted({str(m["role"]) for m in messages})
    return _Bad(
        key,
        f"no assistant turn, so no gold answer (roles after mapping: {found}). Add one, or "
        "if another role answers, map it with the dataset's `roles:` (it replaces Axolotl's "
        "default human/user -> user, gpt/assistant -> assistant, so list every role), "
        "e.g. roles: {user: [human], assistant: [bot]}.",
        "no_assistant_turn",
    )


def _conversation(row: Mapping[str, Any], spec: _Spec) -> Extracted:
    """Axolotl's chat_template conversation: prompt = turns before the last assistant turn. The
    turns after it are left out and counted: Axolotl's SFT trains nothing on them either."""
    key, _, content_key = _message_keys(spec)
    turns = _turns(row, spec)
    last = max((i for i, m in enumerate(turns) if m["role"] == "assistant"), default=None)
    if last is None:
        raise _no_assistant_turn(key, turns)
    gold = turns[last]["content"]
    if not gold.strip():
        raise _Bad(
            f"{key}[{last}].{content_key}",
            "the last assistant turn (the gold answer) is empty; fix or remove the row.",
            "empty_field",
        )
    prompt = turns[:last]
    if not any(m["role"] == "user" for m in prompt):
        raise _Bad(
            key,
            "no user turn before the last assistant turn, so there is no prompt; "
            "fix or remove the row.",
            "no_user_turn",
        )
    system = row.get("system")  # Axolotl's chat_template reads a `system` column like this
    if prompt[0]["role"] != "system" and isinstance(system, str) and system.strip():
        prompt.insert(0, {"role": "system", "content": system})
    if spec.get("drop_system_message", False) and prompt[0]["role"] == "system":
        prompt = prompt[1:]
    after = len(turns) - last - 1
    return prompt, gold, {"turns_after": after} if after else {}


def _prompt_completion(row: Mapping[str, Any], spec: _Spec) -> Extracted:
    pkey = spec.get("field_prompt", "prompt")
    ckey = spec.get("field_completion", "completion")
    prompt = _text(row, pkey, required=True, what="a prompt")
    gold = _text(row, ckey, required=True, what="the gold completion")
    system = _text(row, spec.get("field_system", "system"), required=False, what="system")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return messages, gold, {}  # type: ignore[return-value]


def _answers(row: Mapping[str, Any], key: str | None) -> tuple[str, ...]:
    """The acceptable answers in column ``key``: a string, a list of strings, or SQuAD's
    ``{"text": [...]}``; () when the row has none."""
    value = row.get(key) if key else None
    if isinstance(value, Mapping):
        value = value.get("text")
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v for v in value if v.strip())
    raise _Bad(
        str(key),
        f"expected the acceptable answers as a string or a list of strings, got "
        f"{type(value).__name__}; fix the row, or set rejection_sampling.answers_field to "
        "another column (null: none).",
        "wrong_type",
    )


_EXTRACTORS = {
    "alpaca": _alpaca,
    "chat_template": _conversation,
    "prompt_completion": _prompt_completion,
    CUSTOM: _custom,
}


def extract_examples(
    rows: Iterable[Mapping[str, Any]],
    fmt: str,
    source: str,
    field_map: Mapping[str, Any] | None = None,
    *,
    strict: bool = False,
    answers_field: str | None = None,
    render: Callable[[Mapping[str, Any]], str] | None = None,
) -> tuple[list[PromptExample], list[InvalidRow]]:
    """Turn SFT rows into prompt examples.

    ``fmt`` is one of :data:`FORMATS` or :data:`CUSTOM`. ``field_map`` holds the dataset
    entry's keys for that format (:data:`ALLOWED_KEYS`, with Axolotl's meaning and defaults).
    Invalid rows are returned as :class:`InvalidRow` records; with ``strict=True`` the first
    one raises :class:`UserError`. ``answers_field`` names a column of acceptable answers (kept
    in ``PromptExample.answers``). ``render`` (required for :data:`CUSTOM`) turns a row into
    its prompt text.
    """
    canonical = _canonical(fmt)
    if canonical == CUSTOM and render is None:
        raise ValueError("the custom format needs `render`, the row -> prompt text function")
    spec = _Spec(canonical, _check_field_map(canonical, field_map), render)
    examples: list[PromptExample] = []
    invalid: list[InvalidRow] = []
    for index, row in enumerate(rows):
        try:
            if not isinstance(row, Mapping):
                raise _Bad("<row>", f"expected an object, got {type(row).__name__}.", "wrong_type")
            messages, gold, extras = _EXTRACTORS[spec.fmt](row, spec)
            answers = _answers(row, answers_field)
        except _Bad as bad:
            problem = InvalidRow(source, index, bad.field, bad.reason, bad.kind)
            if strict:
                raise UserError(problem.message) from None
            invalid.append(problem)
            continue
        examples.append(PromptExample(messages, gold, source, index, answers, **extras))
    return examples, invalid


def fingerprint_examples(examples: Sequence[PromptExample]) -> str:
    """sha256 of the examples (source, row, prompt messages, gold, answers) for cache keys."""
    digest = hashlib.sha256()
    for ex in examples:
        record = [ex.source, ex.row, ex.prompt_messages, ex.gold, list(ex.answers)]
        if ex.prompt_text is not None:  # plain text, not the chat template's rendering
            record.append(ex.prompt_text)
        digest.update(json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
