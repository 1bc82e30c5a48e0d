"""`axolotl-ipo inspect`: reads every pairs file the plugin writes, takes the end token from it."""

import json

import pytest

from axolotl_ipo.errors import UserError
from axolotl_ipo.pairs.report import read_pairs, report
from axolotl_ipo.pairs.store import dumps_row

# Characters that str.splitlines() splits on but JSON strings may hold raw (ensure_ascii=False).
SEPARATORS = "\u2028\u2029\u0085\x1c\x1d\x1e\x0b\x0c"


def test_unicode_line_separators_inside_answers_are_read(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": f"a{c}b", "rejected": "c", "end_token": "</s>"}
            for i, c in enumerate(SEPARATORS)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(dumps_row(row) + "\n" for row in rows), encoding="utf-8")
    assert read_pairs(path) == rows
    assert f"{len(rows)} pairs" in report(path)


def test_a_broken_line_is_named_by_its_real_number(tmp_path):
    path = tmp_path / "pairs.jsonl"
    good = dumps_row({"prompt": "p\u2028q", "chosen": "a", "rejected": "b"})
    path.write_text(f"{good}\n{good}\n{{not json\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"pairs.jsonl, line 3: not JSON"):
        read_pairs(path)


def test_the_end_token_comes_from_the_pairs(tmp_path):
    """Llama 3 pairs end with <|eot_id|>: the lengths must not count it, whatever ChatML says."""
    rows = [{"prompt": "p", "chosen": "yes<|eot_id|>", "rejected": "no!<|eot_id|>",
             "end_token": "<|eot_id|>"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    text = report(path)
    assert "chosen chars    mean     3.0" in text and "rejected chars  mean     3.0" in text
    assert "'yes'" in text
    # an explicit end token still wins (pairs written before the key existed)
    assert "chosen chars    mean    13.0" in report(path, end_token="<|im_end|>")
