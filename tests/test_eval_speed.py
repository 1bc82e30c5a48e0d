"""benchmarks/eval_speed.py on the tiny model: same pairs for both scorers, equal sums, one
JSON line with the ratio of the rates."""

import json

from helpers import load_script

eval_speed = load_script("benchmarks/eval_speed.py")

ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris"},
    {"instruction": "Who wrote Hamlet?", "input": "", "output": "William Shakespeare"},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
]


def test_built_pairs_take_a_wrong_answer_from_the_next_row(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    pairs = eval_speed.built_pairs(data, AutoTokenizer.from_pretrained(tiny_model_dir), 2)
    assert [p["chosen"] for p in pairs] == ["Paris", "William Shakespeare"]
    assert pairs[0]["rejected"] == "I think it is William Shakespeare. Who wrote Hamlet?"
    assert pairs[1]["rejected"] == "I think it is 5. Add 2 and 3."
    assert pairs[0]["prompt"].endswith("What is the capital of France?<|im_end|>\n"
                                       "<|im_start|>assistant\n")


def test_benchmark_ends_with_one_json_line_holding_the_ratio(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    eval_speed.main(["--model", str(tiny_model_dir), "--data", str(data), "--n", "3",
                     "--batch-size", "2", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["sequences"] == 6 and result["pairs"] == 3
    assert result["ratio"] == result["loop_seconds"] / result["ours_seconds"] > 0
    assert result["ours_sequences_per_s"] == 6 / result["ours_seconds"]
    assert result["max_abs_diff"] < 1e-4  # both scorers saw the same ids
    assert any("per-sequence loop" in line for line in out)
    assert any(line.startswith("| axolotl-ipo scorer, batch 2 |") for line in out)
    assert "torch threads" in out[0]


def test_benchmark_reads_a_pairs_file(tiny_model_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
             "chosen": "Hello", "rejected": "The sea rolls in."}] * 2
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = eval_speed.main(["--model", str(tiny_model_dir), "--pairs", str(pairs), "--n", "1"])
    assert result["pairs"] == 1 and result["sequences"] == 2
    assert not capsys.readouterr().out.strip().splitlines()[-1].startswith("{")  # no --json
