"""The usage guide's (docs/usage.md) ShareGPT- and OpenAI-shaped `chat_template` datasets,
multi-turn, through Axolotl's own config loader and `axolotl-ipo sample` on the installed
release."""

import re
from pathlib import Path

import pytest
import yaml

from helpers import REPO, axolotl_ipo, base_config, read_jsonl, run, write_config, write_jsonl

pytestmark = pytest.mark.e2e
README = REPO / "docs" / "usage.md"  # the README links to it

SHAREGPT_ROW = {"conversations": [
    {"from": "system", "value": "Answer briefly."},
    {"from": "human", "value": "What is the capital of France?"},
    {"from": "gpt", "value": "Paris."},
    {"from": "human", "value": "And of Italy?"},
    {"from": "gpt", "value": "Rome."},
]}
OPENAI_ROW = {"messages": [
    {"role": "user", "content": "Add 2 and 3."},
    {"role": "assistant", "content": "5"},
    {"role": "user", "content": "Times 4?"},
    {"role": "assistant", "content": "20"},
]}


def readme_conversation_datasets() -> list[dict]:
    """The YAML block of docs/usage.md that shows `field_messages: conversations`."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if "field_messages: conversations" in b]
    return yaml.safe_load(block)["datasets"]


def test_readme_sharegpt_and_openai_examples_sample_multi_turn_pairs(tiny_model_dir, tmp_path):
    datasets = readme_conversation_datasets()
    rows = {"sharegpt.jsonl": SHAREGPT_ROW, "openai.jsonl": OPENAI_ROW}
    for entry in datasets:
        path = tmp_path / Path(entry["path"]).name
        entry["path"] = str(write_jsonl(path, [rows[path.name]]))
    cfg = base_config(tiny_model_dir, tmp_path, rl="ipo", datasets=datasets,
                      rejection_sampling={"max_new_tokens": 4, "batch_size": 2})
    code, log = run(axolotl_ipo("sample", str(write_config(tmp_path, cfg)), "--output",
                                str(tmp_path / "pairs")), tmp_path)
    assert code == 0, log[-3000:]
    assert "invalid" not in log.split("IPO pairs")[-1], log[-2000:]
    pairs = read_jsonl(tmp_path / "pairs" / "pairs.jsonl")
    assert [p["chosen"] for p in pairs] == ["Rome.<|im_end|>", "20<|im_end|>"]
    assert pairs[0]["prompt"] == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert pairs[1]["prompt"].startswith("<|im_start|>user\nAdd 2 and 3.<|im_end|>\n")
    assert "<|im_start|>assistant\n5<|im_end|>" in pairs[1]["prompt"]
