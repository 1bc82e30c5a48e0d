"""benchmarks/static_cache.py on the tiny model: the variants do the same work (every row to
the limit), greedy answers are compared with the first variant's, ratios are against it, and
an unknown variant fails before any model loads."""

import json

import pytest

from helpers import load_script

static_cache = load_script("benchmarks/static_cache.py")


def test_variants_ask_transformers_for_their_cache_and_compilation():
    dynamic = static_cache.generate_kwargs("dynamic", 4)
    static = static_cache.generate_kwargs("static", 4)
    compiled = static_cache.generate_kwargs("compiled", 4)
    assert dynamic["min_new_tokens"] == dynamic["max_new_tokens"] == 4  # no early stops
    assert "cache_implementation" not in dynamic and dynamic["disable_compile"]
    assert static["cache_implementation"] == "static" and static["disable_compile"]
    assert compiled["cache_implementation"] == "static" and "disable_compile" not in compiled
    assert compiled["compile_config"]._compile_all_devices  # compiles on a CPU too
    with pytest.raises(ValueError, match="unknown variant 'cuda_graphs'"):
        static_cache.main(["--model", "/nonexistent", "--variants", "dynamic,cuda_graphs"])


def test_dynamic_and_static_give_the_same_greedy_answers(tiny_model_dir, capsys):
    result = static_cache.main(["--model", str(tiny_model_dir), "--n", "3",
                                "--max-new-tokens", "5", "--variants", "dynamic,static",
                                "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == result
    assert result["tokens"] == 15
    rows = result["variants"]
    assert rows["dynamic"]["ratio"] == 1.0
    static, dynamic = rows["static"], rows["dynamic"]
    assert static["ratio"] == static["tokens_per_s"] / dynamic["tokens_per_s"]
    assert static["answers_equal_to_first_variant"] == 3
    assert any(line.startswith("| static |") for line in out)
