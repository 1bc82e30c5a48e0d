"""scripts/gpu_check.sh: its self-test runs every step's logic on CPU with the tiny model (so the
GPU check cannot rot unseen), the table and JSON it leaves, and the pieces it is built from."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

import axolotl_config
from helpers import REPO, load_script

gpu_check = load_script("scripts/gpu_check.py")
gpu_check_tier2 = load_script("scripts/gpu_check_tier2.py")

SCRIPT = REPO / "scripts" / "gpu_check.sh"
TIER2 = list(gpu_check_tier2.NEEDS)


OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "WANDB_MODE")


def run_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The script as on the GPU machine: none of the offline variables set by the caller."""
    inherited = {k: v for k, v in os.environ.items() if k not in OFFLINE}
    full_env = {**inherited, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
                "GPU_CHECK_WORK": str(tmp_path / "work"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], env=full_env, capture_output=True,
                          text=True, timeout=1500)


@pytest.fixture(scope="module")
def self_test(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    proc = run_script(tmp, "--self-test")
    results = json.loads((tmp / "out" / "gpu_check.json").read_text())
    return proc, results, tmp


@pytest.mark.e2e
def test_self_test_passes_every_step_it_can_run(self_test):
    proc, results, tmp = self_test
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert list(results) == list(gpu_check.STEPS), "every step, in order"
    for step in gpu_check.TIER1:
        assert results[step]["status"] == "PASS", (step, results[step])
    for step in TIER2:
        expected = "SKIP" if step in gpu_check_tier2.GPU_ONLY or gpu_check_tier2.missing(step) \
            else "PASS"
        assert results[step]["status"] == expected, (step, results[step])
    assert results["axolotl-vllm"]["reason"] == "self-test on CPU: vLLM needs a CUDA GPU"
    table = (tmp / "out" / "gpu_check.md").read_text()
    assert table.startswith("| step | result | details | seconds |")
    assert "| ranks | PASS | 10 pairs in 4 batches, byte-identical pairs.jsonl |" in table
    assert (tmp / "out" / "gpu_check.log").read_text() == log  # the whole log, through tee


@pytest.mark.e2e
def test_self_test_numbers(self_test):
    _, results, _ = self_test
    offline = results["env"]["numbers"]["offline"]
    assert offline == {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}, "set by the script"
    sampler = results["sampler-smollm2"]["numbers"]
    assert sampler["tokens"] > 0 and sampler["naive_tokens"] > 0 and sampler["batch_size"] == 4
    # the script divides the unrounded rates; the JSON holds them rounded to 0.1 token/s
    ratio = sampler["tokens_per_s"] / sampler["naive_tokens_per_s"]
    assert sampler["speedup"] == pytest.approx(ratio, rel=1e-3, abs=0.02)
    assert results["ranks"]["numbers"]["identical"] is True
    assert results["ranks"]["numbers"]["generator_loads"] == 3
    for step in ("trl-ipo-smollm2", "trl-ipo-llama1b-lora"):
        numbers = results[step]["numbers"]
        assert numbers["steps"] == 2 and numbers["losses"][0] == pytest.approx(25.0, abs=0.01)
    if results["axolotl-lora"]["status"] == "PASS":
        numbers = results["axolotl-lora"]["numbers"]
        assert numbers["backend"] == "transformers" and numbers["pairs"] == 48


def test_a_failing_step_is_fail_with_its_reason_and_the_script_exits_1(tmp_path):
    # the models were never built, so sampling fails: FAIL with the error, exit status 1
    proc = run_script(tmp_path, "--self-test", GPU_CHECK_STEPS="sampler-smollm2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert list(results) == ["sampler-smollm2"]
    assert results["sampler-smollm2"]["status"] == "FAIL"
    assert "models/smollm2" in results["sampler-smollm2"]["reason"]


def test_steps_past_the_time_budget_are_skipped(tmp_path):
    proc = run_script(tmp_path, "--self-test", GPU_CHECK_STEPS="env models",
                      GPU_CHECK_BUDGET="20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| env | SKIP | time budget of 20s spent | 0 |" in table
    assert "| models | SKIP | time budget of 20s spent | 0 |" in table


def test_unknown_argument_is_refused(tmp_path):
    proc = run_script(tmp_path, "--gpu")
    assert proc.returncode == 2 and "usage:" in proc.stderr


def test_report_marks_failures_and_keeps_the_step_reason(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "steps.tsv").write_text("env\tPASS\t\t3\nranks\tFAIL\ttimed out after 9s\t9\n")
    saved = {"status": "PASS", "reason": "H200, 140 GiB", "numbers": {"gpu": "H200"}}
    (tmp_path / "results" / "env.json").write_text(json.dumps(saved))
    stale = {"status": "PASS", "reason": "from an earlier try", "numbers": {}}
    (tmp_path / "results" / "ranks.json").write_text(json.dumps(stale))
    assert gpu_check.report(tmp_path, tmp_path / "out") == gpu_check.REPORT_FAILED
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| env | PASS | H200, 140 GiB | 3 |" in table
    assert "| ranks | FAIL | timed out after 9s | 9 |" in table  # not the stale PASS reason
    numbers = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert numbers["env"]["numbers"] == {"gpu": "H200"} and numbers["ranks"]["numbers"] == {}


def test_tier1_steps_fail_when_they_import_axolotl(tmp_path, monkeypatch):
    def clean(mode, work):
        return "ok", {}

    def leaky(mode, work):
        monkeypatch.setitem(sys.modules, "axolotl", types.ModuleType("axolotl"))  # an import
        return "ok", {}

    monkeypatch.delitem(sys.modules, "axolotl", raising=False)
    monkeypatch.setitem(gpu_check.STEPS, "env", clean)
    assert gpu_check.run_step("env", gpu_check.Mode(True), tmp_path) == 0
    monkeypatch.setitem(gpu_check.STEPS, "env", leaky)
    assert gpu_check.run_step("env", gpu_check.Mode(True), tmp_path) == 1
    result = json.loads((tmp_path / "results" / "env.json").read_text())
    assert result["reason"] == "tier 1 imported axolotl (it must run without it)"


def test_missing_packages_are_a_skip_that_names_them(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check_tier2, "missing", lambda step: ["bitsandbytes"])
    assert gpu_check.run_step("axolotl-qlora", gpu_check.Mode(False), tmp_path) == 3
    result = json.loads((tmp_path / "results" / "axolotl-qlora.json").read_text())
    assert result["status"] == "SKIP" and result["reason"].startswith(
        "not installed here: bitsandbytes")


@pytest.mark.parametrize("step", TIER2)
def test_tier2_configs_validate_as_on_one_gpu(step, tiny_model_dir, tmp_path, monkeypatch):
    from axolotl.integrations.base import PluginManager

    path = gpu_check_tier2.write_config(step, tmp_path, tiny_model_dir, self_test=False)
    raw = yaml.safe_load(path.read_text())
    monkeypatch.setattr(PluginManager, "_instance", None)
    validated, schema = axolotl_config.validate(raw, n_gpu=1)
    assert axolotl_config.unknown_or_deprecated_keys(raw, schema) == {}
    assert validated.rl == "dpo" and validated.dpo_loss_type == ["ipo"] and validated.bf16 is True
    backend = "vllm" if step == "axolotl-vllm" else "transformers"
    assert validated.rejection_sampling["backend"] == backend
    assert (validated.adapter == "qlora") == (step in ("axolotl-qlora", "axolotl-vllm"))
    if step == "axolotl-zero2":
        zero = json.loads(Path(validated.deepspeed).read_text())["zero_optimization"]
        assert zero["stage"] == 2 and "offload_optimizer" not in zero  # no CPU Adam to compile
    rows = (tmp_path / "sft.jsonl").read_text().splitlines()
    assert len(rows) == 48 and json.loads(rows[0]) == {
        "instruction": "What is 3 plus 7? Answer with the number only.", "output": "10"}


def fake_run(tmp_path: Path, generator: str, losses: list) -> Path:
    cfg_path = gpu_check_tier2.write_config("axolotl-vllm", tmp_path, tmp_path, self_test=False)
    cfg = yaml.safe_load(cfg_path.read_text())
    store = Path(cfg["dataset_prepared_path"]) / "ipo_pairs" / "abc"
    store.mkdir(parents=True)
    (store / "pairs.jsonl").write_text(json.dumps({"generator": f"{generator}:m"}) + "\n")
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True)
    (out / "ipo_metrics.jsonl").write_text("".join(json.dumps({"loss": x}) + "\n" for x in losses))
    return cfg_path


def test_verify_reports_pairs_and_loss(tmp_path):
    numbers = gpu_check_tier2.verify(fake_run(tmp_path, "vllm", [25.0, 24.5]))
    assert numbers == {"pairs": 1, "backend": "vllm", "steps_logged": 2, "losses": [25.0, 24.5]}


@pytest.mark.parametrize(("generator", "losses", "message"), [
    ("transformers", [25.0], r"from \['transformers'\], not vllm"),
    ("vllm", [], "no training loss"),
])
def test_verify_fails_without_evidence(tmp_path, generator, losses, message):
    with pytest.raises(RuntimeError, match=message):
        gpu_check_tier2.verify(fake_run(tmp_path, generator, losses))
