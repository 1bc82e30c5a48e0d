"""Axolotl's custom instruct format (`type: {field_instruction: ..., format: ...}`): the pairs'
prompts are exactly the text Axolotl's SFT puts before the answer, compared with Axolotl's own
`user_defined` prompt strategy on the installed release."""

import pytest

from axolotl_ipo.errors import UserError
from axolotl_ipo.pairs.build import render_prompts
from axolotl_ipo.sft_datasets import config_examples, load_rows, split_sources

from helpers import write_jsonl

ROWS = [
    {"q": "question 0", "ctx": "ctx 0", "a": "answer 0"},
    {"q": "question 1", "ctx": "", "a": "answer 1"},
    {"q": "question 2", "a": "answer 2", "sys": "Be brief."},
    {"q": "question 3", "ctx": "ctx 3", "a": "answer 3", "sys": ""},
    {"q": "question 4", "ctx": "ctx 4", "a": "answer 4", "sys": "Answer in French."},
]
FIELDS = {"field_instruction": "q", "field_input": "ctx", "field_output": "a"}
TYPES = {
    "format_strings": {**FIELDS, "format": "{instruction} [{input}]",
                       "no_input_format": "{instruction}"},
    "system": {**FIELDS, "field_system": "sys", "format": "Q: {instruction}\nC: {input}\nA: ",
               "no_input_format": "Q: {instruction}\nA: ", "system_format": "<<{system}>>\n"},
    "system_prompt": {**FIELDS, "system_prompt": "You are terse.",
                      "system_format": "S: {system}\n", "format": "{instruction} | {input} ->",
                      "no_input_format": "{instruction} ->"},
    "axolotl_defaults": dict(FIELDS),
}


def axolotl_sft_prompts(rows, type_cfg, tokenizer) -> list[str]:
    """What Axolotl's SFT tokenises before the answer (labels -100), decoded."""
    from axolotl.prompt_strategies import load
    from axolotl.utils.dict import DictDefault

    strategy = load("user_defined", tokenizer, DictDefault(train_on_inputs=False,
                                                           sequence_len=2048), type_cfg)
    prompts = []
    for row in rows:
        tokens = strategy.tokenize_prompt(row)
        ids = [i for i, label in zip(tokens["input_ids"], tokens["labels"], strict=True)
               if label == -100]
        prompts.append(tokenizer.decode(ids))
    return prompts


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("name", list(TYPES))
def test_prompts_are_what_axolotls_sft_renders(tmp_path, tokenizer, name):
    data = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    sources, _ = split_sources([{"path": str(data), "type": TYPES[name]}])
    examples, invalid = config_examples({}, sources, strict=False)
    assert invalid == []
    rendered, too_long = render_prompts(examples, tokenizer)
    assert too_long == []
    rows = list(load_rows(sources[0]))  # as Axolotl's loader reads them (missing keys: None)
    assert [p.text for p in rendered] == axolotl_sft_prompts(rows, TYPES[name], tokenizer)
    assert [p.example.gold for p in rendered] == [row["a"] for row in ROWS]
    if name == "format_strings":
        assert rendered[0].text == "question 0 [ctx 0]" and rendered[1].text == "question 1"


def test_a_format_string_with_an_unknown_field_is_one_line(tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    sources, _ = split_sources([{"path": str(data), "type": {**FIELDS, "format": "{question}"}}])
    with pytest.raises(UserError) as err:
        config_examples({}, sources, strict=False)
    message = str(err.value)
    assert message.startswith(f"datasets[0] {data}: type.format")
    assert "'question'" in message and "{instruction}" in message and "\n" not in message
