import hashlib

import pytest

from axolotl_ipo.sft_rows import (
    PromptExample,
    extract_examples,
)


def one(rows, fmt, field_map=None, source="ds.jsonl"):
    examples, invalid = extract_examples(rows, fmt, source, field_map)
    assert invalid == []
    assert len(examples) == 1
    return examples[0]


def bad(rows, fmt, field_map=None, source="ds.jsonl"):
    examples, invalid = extract_examples(rows, fmt, source, field_map)
    assert len(examples) == len(rows) - 1
    assert len(invalid) == 1
    return invalid[0]


# -- formats ---------------------------------------------------------------------------------


def test_alpaca_with_input_and_system():
    ex = one(
        [{"instruction": "Sum", "input": "1 2", "output": "3", "system": "Be brief."}], "alpaca"
    )
    assert ex == PromptExample(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sum\n\n1 2"}],
        "3",
        "ds.jsonl",
        0,
    )


def test_alpaca_input_optional_and_empty():
    ex = one([{"instruction": "Hi", "output": "Hello"}], "alpaca")
    assert ex.prompt_messages == [{"role": "user", "content": "Hi"}]
    ex = one([{"instruction": "Hi", "input": "", "output": "Hello"}], "alpaca")
    assert ex.prompt_messages == [{"role": "user", "content": "Hi"}]


def test_alpaca_field_map():
    ex = one(
        [{"q": "Hi", "ctx": "x", "a": "Hello"}],
        "alpaca",
        {"field_instruction": "q", "field_input": "ctx", "field_output": "a"},
    )
    assert ex.prompt_messages == [{"role": "user", "content": "Hi\n\nx"}]
    assert ex.gold == "Hello"


def test_messages_last_assistant_is_gold_system_kept():
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2"},
    ]
    ex = one([{"messages": msgs}], "chat_template")
    assert ex.gold == "a2"
    assert ex.prompt_messages == msgs[:4]


def test_messages_trailing_user_turn_is_left_out_and_counted():
    """Axolotl's SFT trains on the assistant turns and nothing after the last one (it warns
    "Last turn is not trainable"): the pair answers that last assistant turn, and the turns
    after it are counted, so the summary can report them."""
    msgs = [
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
    ]
    ex = one([{"messages": msgs}], "chat_template")
    assert ex.gold == "a1" and ex.prompt_messages == msgs[:1]
    assert ex.turns_after == 1
    assert one([{"messages": msgs[:2]}], "chat_template").turns_after == 0


def test_messages_content_parts():
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "c"},
    ]
    assert one([{"messages": msgs}], "chat_template").prompt_messages[0]["content"] == "ab"


def test_chat_template_field_mapping_and_roles():
    row = {
        "dialog": [
            {"speaker": "human", "text": "hi"},
            {"speaker": "bot", "text": "hello"},
        ]
    }
    ex = one(
        [row],
        "chat_template",
        {
            "field_messages": "dialog",
            "message_property_mappings": {"role": "speaker", "content": "text"},
            "roles": {"user": ["human"], "assistant": ["bot"]},
        },
    )
    assert ex.prompt_messages == [{"role": "user", "content": "hi"}]
    assert ex.gold == "hello"


def test_system_column_is_prepended_as_axolotl_does():
    msgs = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    ex = one([{"messages": msgs, "system": "S"}], "chat_template")
    assert ex.prompt_messages == [{"role": "system", "content": "S"}, msgs[0]]
    with_system = [{"role": "system", "content": "own"}, *msgs]
    ex = one([{"messages": with_system, "system": "S"}], "chat_template")
    assert ex.prompt_messages == with_system[:2]
    ex = one([{"messages": with_system}], "chat_template", {"drop_system_message": True})
    assert ex.prompt_messages == msgs[:1]


SHAREGPT = {
    "conversations": [
        {"from": "system", "value": "S"},
        {"from": "human", "value": "q1"},
        {"from": "gpt", "value": "a1"},
        {"from": "human", "value": "q2"},
        {"from": "gpt", "value": "a2"},
    ]
}
SHAREGPT_KEYS = {
    "field_messages": "conversations",
    "message_property_mappings": {"role": "from", "content": "value"},
}


def test_sharegpt_rows_through_chat_template_map_human_and_gpt_by_default():
    ex = one([SHAREGPT], "chat_template", SHAREGPT_KEYS)
    assert ex.prompt_messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert ex.gold == "a2"


def test_legacy_message_field_keys_work_like_property_mappings():
    legacy = {"field_messages": "conversations", "message_field_role": "from",
              "message_field_content": "value"}
    assert one([SHAREGPT], "chat_template", legacy) == one([SHAREGPT], "chat_template",
                                                          SHAREGPT_KEYS)


def test_roles_key_replaces_axolotls_default_mapping():
    """As Axolotl: `roles:` is the whole mapping; a role it does not list passes unchanged."""
    row = {"messages": [
        {"role": "human", "content": "q1"},
        {"role": "gpt", "content": "a1"},
        {"role": "human", "content": "q2"},
        {"role": "bot", "content": "a2"},
    ]}
    ex = one([row], "chat_template", {"roles": {"user": ["human"], "assistant": ["bot"]}})
    assert [m["role"] for m in ex.prompt_messages] == ["user", "gpt", "user"]
    assert ex.gold == "a2"


def test_prompt_completion_with_mapping():
    ex = one([{"prompt": "p", "completion": "c"}], "prompt_completion")
    assert ex.prompt_messages == [{"role": "user", "content": "p"}] and ex.gold == "c"
    ex = one(
        [{"question": "p", "answer": "c"}],
        "prompt_completion",
        {"field_prompt": "question", "field_completion": "answer"},
    )
    assert ex.gold == "c"


def test_rows_are_numbered_in_input_order():
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(3)]
    examples, _ = extract_examples(iter(rows), "prompt_completion", "src")
    assert [(e.source, e.row, e.gold) for e in examples] == [
        ("src", 0, "c0"),
        ("src", 1, "c1"),
        ("src", 2, "c2"),
    ]


def test_config_errors_raise():
    with pytest.raises(ValueError, match="unknown SFT format 'dpo'"):
        extract_examples([{}], "dpo", "x")
    with pytest.raises(ValueError, match=r"\['field_prompt'\] do not apply to format 'alpaca'"):
        extract_examples([{}], "alpaca", "x", {"field_prompt": "q"})


# -- bad rows --------------------------------------------------------------------------------

GOOD = {"instruction": "i", "output": "o"}


@pytest.mark.parametrize(
    ("row", "field", "kind", "words"),
    [
        ({"instruction": "i"}, "output", "missing_field", "missing"),
        ({"instruction": "i", "output": None}, "output", "missing_field", "missing"),
        ({"instruction": "i", "output": "  "}, "output", "empty_field", "is empty"),
        ({"instruction": "i", "output": 3}, "output", "wrong_type", "expected a string, got int"),
        ({"instruction": "", "output": "o"}, "instruction", "empty_field", "is empty"),
        ({"instruction": "i", "input": [1], "output": "o"}, "input", "wrong_type", "got list"),
    ],
)
def test_alpaca_bad_rows(row, field, kind, words):
    examples, invalid = extract_examples([GOOD, row, GOOD], "alpaca", "my_data.jsonl")
    assert [e.row for e in examples] == [0, 2]
    assert len(invalid) == 1
    problem = invalid[0]
    assert (problem.source, problem.row, problem.field, problem.kind) == (
        "my_data.jsonl",
        1,
        field,
        kind,
    )
    assert problem.message.startswith(f"dataset 'my_data.jsonl', row 1, field '{field}': ")
    assert words in problem.message
    assert "remove the row" in problem.message or "map" in problem.message


@pytest.mark.parametrize(
    ("msgs", "field", "kind", "words"),
    [
        ([{"role": "user", "content": "u"}], "messages", "no_assistant_turn", "no assistant turn"),
        ([], "messages", "wrong_type", "non-empty list"),
        (
            [{"role": "user", "content": "u"}, {"role": "assistant", "content": " "}],
            "messages[1].content",
            "empty_field",
            "gold answer) is empty",
        ),
        (
            [{"role": "user", "content": "u"}, {"role": "bot", "content": "a"}],
            "messages",
            "no_assistant_turn",
            "roles after mapping: ['bot', 'user']",
        ),
        (
            [{"role": "user", "text": "u"}, {"role": "assistant", "content": "a"}],
            "messages[0]",
            "missing_field",
            "message_property_mappings",
        ),
        (
            [{"role": "user", "content": None}, {"role": "assistant", "content": "a"}],
            "messages[0].content",
            "wrong_type",
            "expected text content",
        ),
        (
            [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
            "messages",
            "no_user_turn",
            "no user turn",
        ),
        ("hello", "messages", "wrong_type", "non-empty list"),
    ],
)
def test_messages_bad_rows(msgs, field, kind, words):
    examples, invalid = extract_examples([{"messages": msgs}], "chat_template", "chats")
    assert examples == []
    (problem,) = invalid
    assert (problem.row, problem.field, problem.kind) == (0, field, kind)
    assert problem.message.startswith(f"dataset 'chats', row 0, field '{field}': ")
    assert words in problem.message


def test_missing_messages_column_and_non_dict_row():
    _, invalid = extract_examples(
        [{"conversations": [{"from": "human", "value": "x"}]}, {"other": 1}, "text"],
        "chat_template",
        "sg",
        SHAREGPT_KEYS,
    )
    assert [(p.row, p.field, p.kind) for p in invalid] == [
        (0, "conversations", "no_assistant_turn"),
        (1, "conversations", "missing_field"),
        (2, "<row>", "wrong_type"),
    ]
    assert "set field_messages" in invalid[1].message


def test_prompt_completion_missing_completion():
    problem = bad([{"prompt": "p"}, {"prompt": "q", "completion": "c"}], "prompt_completion",
                  source="pc")
    assert (problem.source, problem.row, problem.field, problem.kind) == (
        "pc", 0, "completion", "missing_field"
    )
    assert problem.reason == (
        "missing; every row needs the gold completion in column 'completion'. Fix or remove "
        "the row, or map the right column in the dataset config."
    )
    assert problem.message == f"dataset 'pc', row 0, field 'completion': {problem.reason}"


def test_strict_raises_same_message():
    rows = [GOOD, {"instruction": "i"}]
    _, invalid = extract_examples(rows, "alpaca", "d")
    with pytest.raises(ValueError) as err:
        extract_examples(rows, "alpaca", "d", strict=True)
    assert str(err.value) == invalid[0].message
    assert str(invalid[0]) == invalid[0].message


def test_fingerprint_examples():
    from axolotl_ipo.sft_rows import fingerprint_examples

    a, _ = extract_examples([GOOD, GOOD], "alpaca", "d")
    same, _ = extract_examples([dict(GOOD), dict(GOOD)], "alpaca", "d")  # built anew
    assert fingerprint_examples(a) == fingerprint_examples(same)
    changed = [
        [a[0], PromptExample(a[1].prompt_messages, "other gold", "d", 1)],
        [a[0], PromptExample(a[1].prompt_messages, a[1].gold, "other source", 1)],
        [a[0], PromptExample(a[1].prompt_messages, a[1].gold, "d", 7)],
        [a[0], PromptExample([{"role": "user", "content": "j"}], a[1].gold, "d", 1)],
        [a[1], a[0]],  # order
        a[:1],
    ]
    prints = {fingerprint_examples(examples) for examples in [a, *changed]}
    assert len(prints) == len(changed) + 1
    assert fingerprint_examples([]) == hashlib.sha256(b"").hexdigest()
