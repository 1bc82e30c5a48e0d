"""`axolotl-ipo check` on every example config as a user runs it: it ends (bounded by a timeout;
Axolotl's telemetry is switched off by check itself), with no traceback, with or without
DeepSpeed installed, and says what it could not check here (the DeepSpeed engine, a hub model
or dataset); and what it catches cheaply: a missing or empty dataset file, an answer check that
cannot be called as fn(prompt_messages, gold, sample)."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from axolotl_ipo import cli

from helpers import REPO, axolotl_ipo, base_config, run, sft_config, write_config

CONFIGS = sorted((REPO / "example_configs").glob("*.yml"))
DEEPSPEED_CONFIGS = [p for p in CONFIGS if yaml.safe_load(p.read_text()).get("deepspeed")]
TIMEOUT_S = 240  # one check takes 15-25 s on the shared 2-core machine


def check_as_a_user(config: Path, pythonpath: str | None = None) -> tuple[int, str]:
    """`axolotl-ipo check CONFIG` from the repository root, offline (no network here), WITHOUT
    the telemetry opt-outs the other tests set."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("AXOLOTL_DO_NOT_TRACK", "DO_NOT_TRACK", "PYTHONPATH")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), pythonpath])))
    proc = subprocess.run(axolotl_ipo("check", str(config.relative_to(REPO))), cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    return proc.returncode, proc.stdout + proc.stderr


def assert_ends_cleanly(code: int, log: str) -> None:
    assert "Traceback" not in log, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("axolotl-ipo: error:")]
    # 0, or 1 with one line (the CPU examples' model is built by scripts/prepare_smollm2.py)
    assert (code, errors) == (0, []) or (code == 1 and len(errors) == 1), log[-3000:]


@pytest.mark.e2e
@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_check_every_example_config_ends_without_traceback(config):
    code, log = check_as_a_user(config)
    assert_ends_cleanly(code, log)
    if code == 0:
        raw = yaml.safe_load(config.read_text())
        notes = log.partition("not checked here:")[2]
        if raw.get("deepspeed"):
            assert f"deepspeed {raw['deepspeed']} (ZeRO stage" in notes
            assert "DeepSpeed itself was not started" in notes
        if not config.stem.endswith("-cpu") and not torch_cuda():
            assert "the GPUs (bf16" in notes and "this machine has no CUDA GPU" in notes
        if not str(raw["base_model"]).startswith("."):  # a hub model, not cached here
            assert f"base_model {raw['base_model']}: its config is not in the local" in notes


DEEPSPEED_WHEELS = ("deepspeed", "hjson", "py_cpuinfo", "msgpack", "ninja", "einops")


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def deepspeed_site(tmp_path_factory) -> str:
    """DeepSpeed and the packages it imports, unpacked from the wheels
    scripts/gpu_check_wheels.sh puts in .whl/ (never installed into the test environment)."""
    wheels = [sorted((REPO / ".whl").glob(f"{name}-*.whl")) for name in DEEPSPEED_WHEELS]
    if not all(wheels):
        pytest.skip("no DeepSpeed wheels in .whl/ (bash scripts/gpu_check_wheels.sh builds them)")
    site = tmp_path_factory.mktemp("deepspeed_site")
    for found in wheels:
        with zipfile.ZipFile(found[-1]) as wheel:
            wheel.extractall(site)
    return str(site)


@pytest.mark.e2e
@pytest.mark.parametrize("config", DEEPSPEED_CONFIGS, ids=[p.stem for p in DEEPSPEED_CONFIGS])
def test_check_deepspeed_configs_with_deepspeed_installed(config, tmp_path_factory):
    site = deepspeed_site(tmp_path_factory)
    probe = subprocess.run([sys.executable, "-c", "import deepspeed"], capture_output=True,
                           env={**os.environ, "PYTHONPATH": site})
    if probe.returncode != 0:
        pytest.skip(f"DeepSpeed does not import here: {probe.stderr.decode()[-300:]}")
    code, log = check_as_a_user(config, pythonpath=site)
    assert_ends_cleanly(code, log)
    assert code == 0 and "installed here" in log and "MASTER_ADDR" not in log, log[-3000:]


def test_check_switches_axolotl_telemetry_off_for_itself(monkeypatch):
    seen = {}

    def load_config(path, not_checked=None):
        seen["track"] = os.environ.get("AXOLOTL_DO_NOT_TRACK")
        raise cli.UserError("stop here")

    # main() sets the quiet log levels in os.environ: a copy keeps them out of this process's
    # later tests (their subprocesses would inherit LOG_LEVEL=ERROR and lose every warning)
    monkeypatch.setattr(os, "environ", os.environ.copy())
    monkeypatch.delenv("AXOLOTL_DO_NOT_TRACK", raising=False)
    monkeypatch.setattr(cli, "load_config", load_config)
    assert cli.main(["check", "cfg.yml"]) == 1
    assert seen == {"track": "1"}


@pytest.mark.parametrize("case", ["missing", "empty", "blank"])
def test_check_refuses_a_missing_or_empty_dataset_file(tiny_model_dir, tmp_path, case):
    data = tmp_path / "sft.jsonl"
    cfg = sft_config(tiny_model_dir, tmp_path)
    {"missing": data.unlink, "empty": lambda: data.write_text(""),
     "blank": lambda: data.write_text("\n  \n")}[case]()
    code, log = run(axolotl_ipo("check", str(write_config(tmp_path, cfg))), tmp_path)
    assert code == 1 and "Traceback" not in log, log[-2000:]
    (line,) = [line for line in log.splitlines() if line.startswith("axolotl-ipo: error:")]
    what = "no such file or directory" if case == "missing" else "the file is empty"
    assert f"datasets[0] {data}: {what}" in line and "valid" not in log.replace(line, "")


def test_check_refuses_an_answer_check_with_the_wrong_signature(tiny_model_dir, tmp_path):
    cfg = sft_config(tiny_model_dir, tmp_path)
    cfg["rejection_sampling"]["answer_check"] = "os:getcwd"
    code, log = run(axolotl_ipo("check", str(write_config(tmp_path, cfg))), tmp_path)
    assert code == 1 and "Traceback" not in log, log[-2000:]
    (line,) = [line for line in log.splitlines() if line.startswith("axolotl-ipo: error:")]
    assert "rejection_sampling.answer_check: os:getcwd cannot be called as getcwd(" in line
    assert "(prompt_messages, gold, sample)" in line


def test_check_accepts_a_user_check_with_three_arguments(tiny_model_dir, tmp_path):
    (tmp_path / "my_checks.py").write_text(
        "def judge(prompt_messages, gold, sample, *, strict=False):\n    return sample in gold\n")
    cfg = sft_config(tiny_model_dir, tmp_path)
    cfg["rejection_sampling"]["answer_check"] = "my_checks:judge"
    code, log = run(axolotl_ipo("check", str(write_config(tmp_path, cfg))), tmp_path,
                    extra_env={"PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)])})
    assert code == 0 and "not checked here" not in log, log[-2000:]


def test_check_names_a_missing_deepspeed_file(tiny_model_dir, tmp_path):
    cfg = base_config(tiny_model_dir, tmp_path, rl="ipo", deepspeed="ds/zero9.json")
    code, log = run(axolotl_ipo("check", str(write_config(tmp_path, cfg))), tmp_path)
    assert code == 1 and "Traceback" not in log
    assert "axolotl-ipo: error: deepspeed: ds/zero9.json is not a file" in log, log[-2000:]
