"""scripts/gpu_check.sh cannot run here (no GPU); what it runs can be checked: the script parses,
the configs it trains validate through Axolotl as on one GPU, and its verifier rejects runs
that left no pairs from the right backend or no loss."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import axolotl_config

REPO = Path(__file__).parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402


def test_gpu_check_sh_parses_and_runs_every_config():
    script = REPO / "scripts" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for check in gpu_check.CHECKS:
        assert f"$out/{check}.yml" in text


@pytest.mark.parametrize("check", gpu_check.CHECKS)
def test_generated_configs_validate_as_on_one_gpu(check, tiny_model_dir, tmp_path, monkeypatch):
    from axolotl.integrations.base import PluginManager

    paths = gpu_check.write(tmp_path, str(tiny_model_dir))
    assert len(paths) == len(gpu_check.CHECKS)
    raw = yaml.safe_load((tmp_path / f"{check}.yml").read_text())
    monkeypatch.setattr(PluginManager, "_instance", None)
    validated, schema = axolotl_config.validate(raw, n_gpu=1)
    assert axolotl_config.unknown_or_deprecated_keys(raw, schema) == {}
    assert validated.rl == "dpo" and validated.dpo_loss_type == ["ipo"] and validated.bf16 is True
    backend = "vllm" if check.endswith("vllm") else "transformers"
    assert validated.rejection_sampling["backend"] == backend
    if check.startswith("qlora"):
        assert validated.adapter == "qlora" and validated.load_in_4bit is True
    else:
        assert Path(validated.deepspeed).is_file()
        assert json.loads(Path(validated.deepspeed).read_text())["zero_optimization"]["stage"] == 2
    rows = (tmp_path / "sft.jsonl").read_text().splitlines()
    assert len(rows) == 48 and json.loads(rows[0]) == {
        "instruction": "What is 3 plus 7? Answer with the number only.", "output": "10"}


def fake_run(tmp_path: Path, generator: str, losses: list) -> Path:
    gpu_check.write(tmp_path, "m")
    cfg_path = tmp_path / "qlora-vllm.yml"
    cfg = yaml.safe_load(cfg_path.read_text())
    store = Path(cfg["dataset_prepared_path"]) / "ipo_pairs" / "abc"
    store.mkdir(parents=True)
    (store / "pairs.jsonl").write_text(json.dumps({"generator": f"{generator}:m"}) + "\n")
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True)
    (out / "ipo_metrics.jsonl").write_text("".join(json.dumps({"loss": x}) + "\n" for x in losses))
    return cfg_path


def test_verify_reports_pairs_and_loss(tmp_path):
    cfg = fake_run(tmp_path, "vllm", [25.0, 24.5])
    assert gpu_check.verify(cfg, "vllm") == "1 pairs (vllm), 2 logged steps, loss 24.500"


@pytest.mark.parametrize(("generator", "losses", "message"), [
    ("transformers", [25.0], "not vllm"),
    ("vllm", [], "no training loss"),
])
def test_verify_fails_without_evidence(tmp_path, generator, losses, message):
    cfg = fake_run(tmp_path, generator, losses)
    with pytest.raises(SystemExit, match=message):
        gpu_check.verify(cfg, "vllm")
