"""`axolotl-ipo eval` finds its pairs in the pair store: the training pairs are read from the
store training wrote (nothing sampled or built), the held-out rows are read once."""

import hashlib
import json
import logging
from pathlib import Path

import pytest

from axolotl_ipo import sft_datasets
from axolotl_ipo.evaluation import run as evaluation
from axolotl_ipo.evaluation.heldout import load_heldout
from axolotl_ipo.pairs import from_config
from axolotl_ipo.pairs.sampler import Completion

ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris",
     "answers": ["Paris", "paris, france"]},
    {"instruction": "Who wrote Hamlet?", "input": "", "output": "Shakespeare"},
    {"instruction": "A row without its gold answer", "input": ""},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Name the sea.", "input": "", "output": "The sea"},
]


class FakeGenerator:
    name = "fake:v1"

    def generate(self, prompts, settings, seed):
        return [Completion(hashlib.sha256(f"{p}|{seed}".encode()).hexdigest()[:8], 4, "stop")
                for p in prompts]

    def close(self):
        pass


def refuse(*args, **kwargs):
    raise AssertionError("evaluation sampled or built pairs")


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def setup(tiny_model_dir, tmp_path, monkeypatch):
    from axolotl.utils.dict import DictDefault
    from transformers import AutoTokenizer

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = DictDefault({
        "base_model": str(tiny_model_dir), "tokenizer_config": str(tiny_model_dir),
        "sequence_len": 128, "dataset_prepared_path": str(tmp_path / "prepared"),
        "datasets": [{"path": str(data), "type": "alpaca"}],
        "rejection_sampling": {"max_new_tokens": 4, "batch_size": 2},
    })
    monkeypatch.setattr(from_config, "load_generator", lambda *a, **k: FakeGenerator())
    return cfg, AutoTokenizer.from_pretrained(tiny_model_dir), data


def test_training_pairs_are_read_from_the_store_training_wrote(setup, monkeypatch):
    cfg, tokenizer, _ = setup
    trained = from_config.build_pairs_for_config(cfg, progress=False)
    before = files(trained.store.root)
    monkeypatch.setattr(from_config, "load_generator", refuse)
    monkeypatch.setattr(from_config, "build_pairs", refuse)
    pairs = evaluation._training_pairs(cfg, tokenizer)
    assert pairs == trained.store.read_pairs() and len(pairs) == 4
    assert evaluation._training_pairs(cfg, tokenizer, limit=2) == pairs[:2]
    assert files(trained.store.root) == before


def test_pairs_never_sampled_are_left_out_with_a_warning(setup, monkeypatch, caplog):
    cfg, tokenizer, _ = setup
    monkeypatch.setattr(from_config, "load_generator", refuse)
    monkeypatch.setattr(from_config, "build_pairs", refuse)
    with caplog.at_level(logging.WARNING, logger="axolotl_ipo"):
        assert evaluation._training_pairs(cfg, tokenizer) == []
    assert "`axolotl-ipo sample CONFIG` builds them" in caplog.text
    assert not (Path(cfg["dataset_prepared_path"]) / "ipo_pairs").exists()  # nothing created
    preference = {**cfg, "datasets": [{"path": "p.jsonl", "type": "chatml.intel"}]}
    assert evaluation._training_pairs(preference, tokenizer) == []


def test_heldout_rows_are_read_once_and_pairs_match_their_prompts(setup, tmp_path, monkeypatch):
    cfg, tokenizer, data = setup
    reads = []
    load_rows = sft_datasets.load_rows
    monkeypatch.setattr(sft_datasets, "load_rows",
                        lambda *a: reads.append(a) or load_rows(*a))
    entry = {"path": str(data), "type": "alpaca"}
    held = load_heldout(cfg, entry, tokenizer, tmp_path / "heldout_pairs")
    assert len(reads) == 1
    assert len(held.prompts) == 4 and held.invalid_rows == 1
    rows = [json.loads(line) for line in held.pairs_path.read_text().splitlines()]
    assert [(held.prompts[i].text, text) for i, text in held.pairs] == [
        (row["prompt"], row["rejected"]) for row in rows]
    assert held.answers[0] == ["Paris", "paris, france"]
    monkeypatch.setattr(from_config, "load_generator", refuse)
    assert load_heldout(cfg, entry, tokenizer, tmp_path / "heldout_pairs") == held
