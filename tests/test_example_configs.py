"""Every example config passes the installed Axolotl's own validation with the plugin, the GPU
ones with the capabilities of the GPUs their headers name (no model is downloaded). A key that
Axolotl does not know (it would silently drop it) or has deprecated, a missing DeepSpeed file,
or a header without hardware, memory and launch lines fails."""

import json
import re
from pathlib import Path

import pytest
import yaml

from axolotl_ipo.config import is_active
from axolotl_ipo.sft_datasets import split_sources

import axolotl_config

REPO = Path(__file__).parents[1]
CONFIGS = sorted((REPO / "example_configs").glob("*.yml"))
GPU_CONFIGS = [path for path in CONFIGS if not path.stem.endswith("-cpu")]
DEEPSPEED_CONFIGS = [path for path in CONFIGS if "deepspeed" in yaml.safe_load(path.read_text())]


def ids(paths):
    return [path.stem for path in paths]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def validate(path: Path, monkeypatch) -> tuple[dict, dict, type]:
    """(raw YAML, validated config, merged schema); GPU configs as on 1 or 4 H100s."""
    from axolotl.integrations.base import PluginManager

    monkeypatch.setattr(PluginManager, "_instance", None)
    raw = load(path)
    n_gpu = (4 if raw.get("deepspeed") else 1) if path in GPU_CONFIGS else None
    return (raw, *axolotl_config.validate(raw, n_gpu))


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_example_config_validates(path, monkeypatch):
    raw, validated, _ = validate(path, monkeypatch)
    assert is_active(validated)
    assert validated.rl == "dpo"
    # no tau key: `ipo_tau: auto`, measured at step 0 (no rl_beta for Axolotl to hold on to);
    # the trainer starts from tau 0.1 and its default weight until then
    auto = validated.ipo_tau == "auto"
    tau = 0.1 if auto else validated.ipo_tau
    assert validated.rl_beta == (None if auto else validated.ipo_tau)
    if raw.get("ipo_sft_weight") == 0:  # pure IPO, as the example says
        assert validated.dpo_loss_type == ["ipo"]
    else:  # the default NLL term: weight 2/tau
        assert validated.dpo_loss_type == ["ipo", "sft"]
        assert validated.dpo_loss_weights == [1.0, pytest.approx(2 / tau)]
    if path in GPU_CONFIGS:
        assert validated.bf16 is True
    else:  # bf16 "auto" silently resolves to fp16 on CPU
        assert validated.bf16 is False and validated.fp16 is False


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_example_config_keys_are_known_and_current(path, monkeypatch):
    raw, _, schema = validate(path, monkeypatch)
    assert axolotl_config.unknown_or_deprecated_keys(raw, schema) == {}


def header(path: Path) -> str:
    lines = path.read_text().splitlines()
    end = next(index for index, line in enumerate(lines) if not line.startswith("#"))
    return "\n".join(lines[:end])


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=ids(GPU_CONFIGS))
def test_gpu_example_header_says_hardware_memory_and_launch(path):
    text = header(path)
    assert re.search(r"^# Hardware: .*\d+ .*GB", text, re.M), "a Hardware: line with GPU memory"
    memory = re.findall(r"^# Memory.*(?:\n#  .*)*", text, re.M)
    assert memory and all("=>" in block and " x " in block for block in memory), (
        "Memory lines show the arithmetic (a x b ... => total)"
    )
    launch = re.search(r"^# Launch.*(?:\n#  .*)*", text, re.M)
    assert launch, "a Launch line"
    commands = re.findall(r"(?:accelerate launch|axolotl train|torchrun) [^\n]*", launch.group())
    assert any(f"example_configs/{path.name}" in command for command in commands)
    if load(path).get("rejection_sampling"):
        assert "sampling" in " ".join(memory), "the sampler's own copy is counted"


@pytest.mark.parametrize("path", DEEPSPEED_CONFIGS, ids=ids(DEEPSPEED_CONFIGS))
def test_deepspeed_file_exists_with_trainer_driven_values(path):
    ds_path = REPO / load(path)["deepspeed"]
    assert ds_path.is_file(), f"{path.name}: deepspeed: {ds_path} does not exist"
    ds = json.loads(ds_path.read_text())
    stage = ds["zero_optimization"]["stage"]
    assert f"zero{stage}" in ds_path.name
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "train_batch_size"):
        assert ds[key] == "auto", f"{ds_path.name}: {key} must stay 'auto' (Axolotl fills it)"


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_sampling_examples_have_sft_data_and_pair_examples_have_none(path):
    raw = load(path)
    sft, preference = split_sources(raw["datasets"])
    if raw.get("rejection_sampling") is not None:
        assert sft and not preference, "rejection_sampling set but no SFT dataset to sample"
    elif "pairs" in path.stem:
        assert preference and not sft
