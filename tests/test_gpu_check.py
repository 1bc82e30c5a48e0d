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
                          text=True, timeout=1800)


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
    for step in gpu_check_tier2.DEEPSPEED_STEPS:  # the real launch, refused on CPU in one line
        assert results[step]["reason"].startswith(
            "self-test on CPU: DeepSpeed needs CUDA; the launch was refused in one line"), (
            step, results[step])
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
        # 48 SFT rows, of which the collapse guard holds out min(5%, 64) = 2: 46 pairs
        assert numbers["backend"] == "transformers" and numbers["pairs"] == 46
        # the engine probe ran inside the real `axolotl.cli.train`: no DeepSpeed here
        assert numbers["engine"]["is_deepspeed_enabled"] is False
        assert numbers["engine"]["zero_stage"] is None and numbers["engine"]["world_size"] == 1


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
    assert validated.rl == "dpo" and validated.bf16 is True
    assert validated.dpo_loss_type == ["ipo", "sft"]  # the defaults: the NLL term at 2/tau
    backend = "vllm" if step == "axolotl-vllm" else "transformers"
    assert validated.rejection_sampling["backend"] == backend
    assert (validated.adapter == "qlora") == (step in ("axolotl-qlora", "axolotl-vllm"))
    assert validated.plugins == ["axolotl_ipo.IPOPlugin", "gpu_check_probe.EngineProbe"]
    if step in gpu_check_tier2.DEEPSPEED_STEPS:
        stage, finetune = gpu_check_tier2.DEEPSPEED_STEPS[step]
        ds = validated.deepspeed  # Axolotl reads the file into the config
        ds = ds if isinstance(ds, dict) else json.loads(Path(ds).read_text())
        zero = ds["zero_optimization"]
        assert zero["stage"] == stage and "optimizer" not in ds  # torch AdamW: nothing compiles
        assert "offload_optimizer" not in zero and "offload_param" not in zero  # no CPU Adam
        assert validated.optimizer == "adamw_torch"
        assert (validated.adapter == "lora") == (finetune == "lora")
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


def deepspeed_run(tmp_path: Path, step: str, engine: dict | None) -> Path:
    cfg_path = gpu_check_tier2.write_config(step, tmp_path, tmp_path, self_test=False)
    cfg = yaml.safe_load(cfg_path.read_text())
    store = Path(cfg["dataset_prepared_path"]) / "ipo_pairs" / "abc"
    store.mkdir(parents=True)
    (store / "pairs.jsonl").write_text(json.dumps({"generator": "transformers:m"}) + "\n")
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True)
    (out / "ipo_metrics.jsonl").write_text(json.dumps({"loss": 25.0}) + "\n")
    if engine is not None:
        (out / gpu_check_tier2.PROBE_FILE).write_text(json.dumps(engine) + "\n")
    return cfg_path


DS_ENGINE = {"engine": "deepspeed.runtime.engine.DeepSpeedEngine", "is_deepspeed_enabled": True,
             "world_size": 1}


@pytest.mark.parametrize("step", list(gpu_check_tier2.DEEPSPEED_STEPS))
def test_a_deepspeed_step_passes_with_deepspeeds_engine_at_its_stage(tmp_path, step):
    stage = gpu_check_tier2.DEEPSPEED_STEPS[step][0]
    engine = {**DS_ENGINE, "zero_stage": stage}
    assert gpu_check_tier2.verify(deepspeed_run(tmp_path, step, engine))["engine"] == engine


@pytest.mark.parametrize(("engine", "message"), [
    (None, "the engine probe plugin did not run"),
    ({"engine": "torch.nn.parallel.distributed.DistributedDataParallel",
      "is_deepspeed_enabled": False, "zero_stage": None}, r"not DeepSpeed's engine .*dropped"),
    ({**DS_ENGINE, "zero_stage": 2}, "ZeRO stage 2, the config says 3"),
])
def test_a_deepspeed_step_fails_without_deepspeeds_engine(tmp_path, engine, message):
    with pytest.raises(RuntimeError, match=message):
        gpu_check_tier2.verify(deepspeed_run(tmp_path, "axolotl-zero3-lora", engine))


def test_the_probe_reads_the_engine_from_the_trainer(tmp_path):
    probe = load_script("scripts/gpu_check_probe.py")

    class Engine:  # what DeepSpeed's engine answers
        def zero_optimization_stage(self):
            return 3

    trainer = types.SimpleNamespace(model_wrapped=Engine(), is_deepspeed_enabled=True,
                                    args=types.SimpleNamespace(world_size=1))
    facts = probe.engine_facts(trainer)
    assert facts["zero_stage"] == 3 and facts["is_deepspeed_enabled"] is True
    assert facts["engine"].endswith("Engine") and facts["world_size"] == 1
    callback = probe.EngineProbe().add_callbacks_post_trainer(
        types.SimpleNamespace(output_dir=str(tmp_path)), trainer)[0]
    state = types.SimpleNamespace(global_step=1, is_world_process_zero=True)
    callback.on_step_end(None, state, None)
    assert json.loads((tmp_path / gpu_check_tier2.PROBE_FILE).read_text()) == facts


def test_gpu_check_and_tier2_do_not_import_each_other():
    """Issue #30 item 7: they used to, through a sys.modules alias of `__main__`."""
    import ast

    def imports(path: str) -> set[str]:
        tree = ast.parse((REPO / path).read_text())
        found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        return found | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}

    assert "gpu_check" not in imports("scripts/gpu_check_tier2.py")
    assert "gpu_check_tier2" not in imports("scripts/gpu_check_common.py")
    assert "sys.modules.setdefault" not in (REPO / "scripts" / "gpu_check.py").read_text()
    assert gpu_check.Skip is gpu_check_tier2.Skip
