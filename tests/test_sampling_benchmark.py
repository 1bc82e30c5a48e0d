"""benchmarks/sampling.py: batch-size parsing, the optional llama.cpp column, the JSON line."""

import json
import sys
import types

import pytest

from axolotl_ipo.args import RejectionSamplingArgs
from axolotl_ipo.sampling import SamplingSettings

from helpers import load_script

bench = load_script("benchmarks/sampling.py")


def test_batch_sizes_parse_default_and_integers():
    assert bench.parse_batch_sizes("default") == [None]
    assert bench.parse_batch_sizes("default, 64,128") == [None, 64, 128]
    with pytest.raises(SystemExit, match="'0' is neither 'default' nor a positive integer"):
        bench.parse_batch_sizes("16,0")


def test_llama_cpp_column_is_skipped_with_a_note_without_the_package(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import raises ImportError
    assert bench.run_llama_cpp(None, ["x"], "<|im_end|>", SamplingSettings(), 2) is None
    assert "llama.cpp column skipped: llama_cpp is not importable" in capsys.readouterr().out


class FakeLlama:
    """llama_cpp.Llama's surface the benchmark uses; token 2 is <|im_end|>."""

    calls: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def token_eos(self):
        return 0

    def tokenize(self, text, add_bos, special):
        assert add_bos is False and special is True
        return [2] if text == b"<|im_end|>" else list(range(10, 10 + len(text)))

    def generate(self, tokens, **kwargs):
        FakeLlama.calls.append((tokens, kwargs))
        stream = [7, 7, 2] if len(tokens) == 1 else [7] * 100  # 1-char prompt: ends at 3 tokens
        yield from stream


def test_llama_cpp_counts_tokens_like_ours(monkeypatch, tmp_path):
    """Up to and including the end token, at most max_new_tokens, one prompt per call."""
    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=FakeLlama))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    FakeLlama.calls = []
    settings = SamplingSettings(max_new_tokens=5, temperature=0.7)
    tokens, seconds = bench.run_llama_cpp(gguf, ["a", "long"], "<|im_end|>", settings, 2)
    assert tokens == 3 + 5 and seconds >= 0
    assert [c[0] for c in FakeLlama.calls] == [[10], [10, 11, 12, 13]]
    kwargs = FakeLlama.calls[0][1]
    assert kwargs["temp"] == 0.7 and kwargs["top_k"] == 0 and kwargs["min_p"] == 0.0
    assert kwargs["top_p"] == 1.0 and kwargs["repeat_penalty"] == 1.0 and kwargs["reset"]


def test_smoke_run_ends_with_default_ratio(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    data = tmp_path / "q.jsonl"
    rows = [{"instruction": f"Question {i}?", "input": "", "output": "A"} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench.main(["--model", str(tiny_model_dir), "--data", str(data), "--n", "4",
                "--naive-n", "2", "--batch-sizes", "default,2", "--max-new-tokens", "3", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    naive, default, two = result["rows"]
    shipped = RejectionSamplingArgs().batch_size
    assert default[0].endswith(f"default (batch {shipped})") and two[0].endswith("batch 2")
    assert result["default_ratio"] == pytest.approx(default[4] / naive[4])
    assert result["best_ratio"] == pytest.approx(max(default[4], two[4]) / naive[4])
    assert result["llama_cpp_tokens_per_s"] is None and result["default_vs_llama_cpp"] is None
    assert any("llama.cpp column skipped" in line for line in out)
