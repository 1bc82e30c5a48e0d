"""GPU-facing settings and claims that can be checked without a GPU: the vLLM extra's range, the
attention backends of the example configs, the 24 GB sampling arithmetic, the docs' statements
about vLLM determinism and the host driver."""

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).parents[1]
CONFIGS = sorted((REPO / "example_configs").glob("*.yml"))
GIB = 2**30


def test_vllm_extra_is_a_range_that_holds_torch_for_each_axolotl_release():
    pyproject = (REPO / "pyproject.toml").read_text()  # tomllib is 3.11+; the package is 3.10+
    (line,) = re.findall(r'^vllm = \["([^"]+)"\]$', pyproject, flags=re.M)
    req = Requirement(line)
    assert req.name == "vllm"
    # 0.24.0 (torch 2.11) for Axolotl 0.19; 0.30.0 (torch 2.13) for both; 0.33.0 (torch 2.14)
    for version in ("0.24.0", "0.30.0", "0.33.0"):
        assert req.specifier.contains(version), version
    for version in ("0.17.1", "0.34.0"):  # transformers < 5; an unread future torch pin
        assert not req.specifier.contains(version), version


def test_no_example_config_needs_flash_attn():
    try:
        from axolotl.utils.schemas.enums import ATTN_IMPLS_USING_FLASH_LIB as needs_flash_attn
    except ImportError:  # Axolotl 0.19 has no such set
        needs_flash_attn = {"flash_attention_2", "flash_attention_3"}
    for path in CONFIGS:
        cfg = yaml.safe_load(path.read_text())
        assert cfg.get("attn_implementation") not in needs_flash_attn, path.name
        assert not cfg.get("flash_attention"), path.name


def sampling_peak_gib(batch: int, tokens: int = 768, prompt_tokens: int = 512) -> float:
    """Llama 3.1 8B with the transformers backend: bf16 weights, KV cache, prefill MLP
    activations (3 tensors of width 14336), CUDA context."""
    weights = 8.03e9 * 2
    kv = batch * tokens * 32 * 8 * 128 * 2 * 2
    prefill = batch * prompt_tokens * 14336 * 2 * 3
    return (weights + kv + prefill) / GIB + 0.5


def test_llama3_header_gives_the_transformers_batch_size_that_fits_24_gb():
    header = (REPO / "example_configs" / "llama3-8b-qlora-ipo.yml").read_text()
    usable = 22.0  # an L4 or A10G reports about 22.5 GiB
    assert sampling_peak_gib(32) < usable < sampling_peak_gib(64)
    assert re.search(r"~20 GiB peak with batch_size: 32", header)
    assert f"{sampling_peak_gib(32):.0f}" == "20"


@pytest.mark.parametrize(("path", "claims"), [
    ("docs/gpu.md", ["VLLM_BATCH_INVARIANT=1", "not batch-invariant by default",
                     "`gpu_memory_utilization` x its total memory"]),
    ("docker/README.md", ["NVIDIA driver 580 or\nnewer"]),
])
def test_docs_state_what_holds_on_gpus(path, claims):
    text = (REPO / path).read_text()
    for claim in claims:
        assert claim in text, (path, claim)
