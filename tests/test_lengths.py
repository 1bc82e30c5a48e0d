"""Pairs longer than sequence_len are counted exactly as Axolotl's RL loader drops them."""

import pytest
from axolotl.utils.data.rl import _drop_long_sequences
from axolotl.utils.schemas.enums import RLType

from axolotl_ipo.pairs.build import build_pairs
from axolotl_ipo.pairs.sampler import Completion, SamplingSettings
from axolotl_ipo.pairs.store import PairStore
from axolotl_ipo.sft_rows import extract_examples
from axolotl_ipo.upstream.axolotl import count_too_long


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def rows_of_growing_length(n: int) -> list[dict]:
    return [
        {"prompt": "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n",
         "chosen": "The answer is 5." * (1 + i % 3) + "<|im_end|>",
         "rejected": "Waves roll in and out under the moon. " * i + "<|im_end|>"}
        for i in range(n)
    ]


@pytest.mark.parametrize("sequence_len", [40, 80, 160])
def test_count_matches_axolotls_own_filter(tokenizer, sequence_len):
    rows = rows_of_growing_length(12)
    dropped = sum(
        not _drop_long_sequences(row, RLType.DPO, tokenizer, sequence_len) for row in rows
    )
    assert 0 < dropped < len(rows)  # the limit falls inside the data
    assert count_too_long(rows, tokenizer, sequence_len) == dropped
    assert count_too_long(rows, tokenizer, None) == 0


class LongAnswers:
    name = "fake:long"

    def generate(self, prompts, settings, seed):
        return [Completion("Waves roll in and out under the moon. " * 6, 60, "length")
                for _ in prompts]


def test_the_summary_reports_pairs_over_sequence_len(tokenizer, tmp_path):
    rows = [{"instruction": f"Add {i} and 3.", "output": str(i + 3)} for i in range(4)]
    examples, _ = extract_examples(rows, "alpaca", "data.jsonl")
    result = build_pairs(examples, tokenizer, LongAnswers, SamplingSettings(batch_size=2),
                         PairStore.open(tmp_path, {"t": "long"}), sequence_len=40,
                         progress=False)
    pairs = result.store.read_pairs()
    assert result.summary.too_long == count_too_long(pairs, tokenizer, 40) == 4
    assert "pairs over sequence_len         4 (Axolotl drops these by default" in (
        result.summary.format()
    )
