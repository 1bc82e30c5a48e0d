"""A fuzz of malformed rows, as a new user's data holds them, through the path `axolotl-ipo
sample` and training take (Axolotl's loader, the SFT readers, rendering, sampling with a fake
generator, the store): no traceback, and every row accounted for (pairs + invalid + dropped =
rows). Malformed files (a line that is not JSON or not an object, a byte order mark, Unicode
line separators, an empty file, a folder) end in one line each."""

import json
import random

import pytest

from axolotl_ipo.errors import UserError
from axolotl_ipo.pairs.build import build_pairs
from axolotl_ipo.pairs.judge import PairPolicy
from axolotl_ipo.pairs.sampler import Completion, SamplingSettings
from axolotl_ipo.pairs.store import PairStore
from axolotl_ipo.sft_datasets import config_examples, load_rows, split_sources

ROWS_PER_FORMAT = 100
TEXTS = ["What is 2 + 2?", "4", "x\u2028y\u2029z\x85", "tab\there", "\u00e9\u00e8 \U0001f600",
         "line\nbreak", "a " * 150, "The answer is 7.", "null", "\ufeffbom inside"]
VALUES = ["", "   ", None, 42, 3.5, True, ["a", "b"], {"text": "nested"}, [], {}]


def value(rng):
    """Mostly text (some too long for sequence_len), a third of the time something malformed."""
    return rng.choice(VALUES) if rng.random() < 0.3 else rng.choice(TEXTS)


class Fake:
    """Answers from a small list, some right, some empty, some cut at max_new_tokens."""

    name = "fake:fuzz"

    def generate(self, prompts, settings, seed):
        answers = ["4", "", "7", "I do not know", "The answer is 7.", "4 apples"]
        return [Completion(answers[(len(p) + seed + i) % len(answers)], 3,
                           "length" if i % 4 == 0 else "stop") for i, p in enumerate(prompts)]


def alpaca_row(rng):
    row = {"instruction": value(rng), "output": value(rng)}
    for key in ("input", "system", "answers"):
        if rng.random() < 0.3:
            row[key] = value(rng)
    if rng.random() < 0.1:
        del row[rng.choice(list(row))]
    return row


def message(rng, role):
    if rng.random() < 0.05:
        return rng.choice(VALUES)
    if rng.random() < 0.1:
        role = rng.choice(["system", "human", "gpt", "bot", None])
    content = [{"type": "text", "text": "part"}] if rng.random() < 0.05 else value(rng)
    turn = {"role": role, "content": content}
    if rng.random() < 0.05:
        del turn[rng.choice(list(turn))]
    return turn


def chat_row(rng):
    if rng.random() < 0.05:
        return {"messages": rng.choice(VALUES)}
    turns = [message(rng, ("user", "assistant")[i % 2]) for i in range(rng.randint(0, 5))]
    return {"messages": turns} if rng.random() < 0.95 else {"conversation": turns}


def completion_row(rng):
    return {"prompt": value(rng), "completion": value(rng)}


FORMATS = {
    "alpaca": ("alpaca", alpaca_row),
    "custom": ({"field_instruction": "instruction", "field_output": "output",
                "format": "Q: {instruction}\nC: {input}\nA:",
                "no_input_format": "Q: {instruction}\nA:"},
               alpaca_row),
    "chat_template": ("chat_template", chat_row),
    "prompt_completion": ("prompt_completion", completion_row),
}


def write_rows(path, rows):
    """JSON Lines with raw Unicode (separators left inside strings), every column's values
    kept as JSON text so that Axolotl's loader sees each row as written."""
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_malformed_row_is_accounted_for(tmp_path, tokenizer, name):
    rng = random.Random(name)
    ds_type, make = FORMATS[name]
    rows = [make(rng) for _ in range(ROWS_PER_FORMAT)] + [None]  # `null`: a row of nulls
    path = write_rows(tmp_path / "rows.jsonl", rows)
    sources, _ = split_sources([{"path": str(path), "type": ds_type}])
    examples, invalid = config_examples({}, sources, strict=False, answers_field="answers")
    assert len(examples) + len(invalid) == len(load_rows(sources[0])) == len(rows)
    store = PairStore.open(tmp_path / "pairs", {"fuzz": name})
    policy = PairPolicy(answer_check="contains", num_samples=2, truncated="drop")
    result = build_pairs(examples, tokenizer, Fake, SamplingSettings(batch_size=8), store,
                         sequence_len=96, invalid_rows=invalid, policy=policy, progress=False)
    summary = result.summary
    accounted = (summary.pairs_out + summary.solved_kept + sum(summary.invalid.values())
                 + sum(summary.dropped.values()))
    assert summary.rows_in == len(rows) and accounted == len(rows), summary.format()
    assert summary.pairs_out and summary.invalid and summary.dropped  # every path was taken
    assert summary.invalid.get("prompt_too_long") or name == "chat_template"
    written = store.invalid_path.read_text(encoding="utf-8").split("\n")
    assert len([line for line in written if line]) == sum(summary.invalid.values())


GOOD = '{"instruction": "a", "output": "b"}\n'
BAD_FILES = {
    "not_json.jsonl": (GOOD * 3 + '{"instruction": "c", "output"\n', "line 4 is not valid JSON"),
    "number_line.jsonl": (GOOD + "42\n" + GOOD, "line 2 is a JSON number"),
    "array_line.jsonl": (GOOD + "[1, 2]\n", "line 2 is a JSON array"),
    "string_line.jsonl": (GOOD * 2 + '"text"\n', "line 3 is a JSON string"),
    "bom_then_bad.jsonl": ("\ufeff" + GOOD * 7 + "{oops\n", "line 8 is not valid JSON"),
    "separators_then_bad.jsonl": ('{"instruction": "a\u2028b\u0085", "output": "c"}\n' * 2
                                  + "{oops\n", "line 3 is not valid JSON"),
    "array_item.json": ('[{"instruction": "a", "output": "b"}, 7]', "item 2 of the JSON array"),
    "empty.jsonl": ("", "the file is empty"),
    "blank.jsonl": ("\n \n", "the file is empty"),
    "folder": (None, "a directory with no data files"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_every_malformed_file_is_one_line(tmp_path, name):
    text, expected = BAD_FILES[name]
    path = tmp_path / name
    if text is None:
        path.mkdir()
        (path / "README.md").write_text("no rows here")
    else:
        path.write_text(text, encoding="utf-8")
    sources, _ = split_sources([{"path": str(path), "type": "alpaca"}])
    with pytest.raises(UserError) as err:
        config_examples({}, sources, strict=False)
    message = str(err.value)
    assert message.startswith(f"datasets[0] {path}: ") and expected in message, message
    assert "\n" not in message
