"""`axolotl-ipo selfplay` through the real Axolotl CLI on the tiny model: rounds, resume after a
failed round, LoRA / QLoRA / full fine-tuning, and its one-line errors."""

import json
import sys
from pathlib import Path

import pytest

from helpers import run, sft_config, write_config

pytestmark = pytest.mark.e2e

FAIL_ONCE = """\
import os, sys
from pathlib import Path
marks = Path({marks!r})
round_name = Path(sys.argv[-1]).parent.name
with open(marks / "launches.txt", "a") as log:
    log.write(round_name + "\\n")
if round_name == "round-2" and not (marks / "failed-once").exists():
    (marks / "failed-once").touch()
    print("simulated crash in round 2")
    sys.exit(3)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def selfplay(config: Path, work: Path, *args: str):
    return run([sys.executable, "-m", "axolotl_ipo.cli", "selfplay", str(config), *args], work,
               timeout=900)


def last_line(log: str) -> str:
    return log.strip().splitlines()[-1]


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file()}


def tensors(model_file: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_file))


def test_two_lora_rounds_resume_after_a_failed_round(tiny_model_dir, tmp_path):
    config = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path, max_steps=2))
    wrapper = tmp_path / "fail_once.py"
    wrapper.write_text(FAIL_ONCE.format(marks=str(tmp_path)), encoding="utf-8")
    launcher = ["--launcher", f"{sys.executable} {wrapper}"]
    out = tmp_path / "out"

    code, log = selfplay(config, tmp_path, "--rounds", "2", *launcher)
    assert code == 1, log[-3000:]
    assert last_line(log) == (
        f"axolotl-ipo selfplay: round 2: training failed (exit code 3); see its log "
        f"{out / 'round-2' / 'train.log'}. Fix the cause and rerun the same command: finished "
        "rounds are kept, this one continues.")
    assert "Traceback" not in log
    assert "simulated crash" in (out / "round-2" / "train.log").read_text()
    assert len(json.loads((out / "selfplay.json").read_text())["rounds"]) == 1
    round_1 = snapshot(out / "round-1")

    code, log = selfplay(config, tmp_path, "--rounds", "2", *launcher)
    assert code == 0, log[-3000:]
    assert "self-play rounds" in log
    assert snapshot(out / "round-1") == round_1  # round 1 untouched
    assert (tmp_path / "launches.txt").read_text().split() == ["round-1", "round-2", "round-2"]
    first, second = json.loads((out / "selfplay.json").read_text())["rounds"]
    merged = out / "round-1" / "merged"
    assert first["generator"] == str(tiny_model_dir) and first["model"] == str(merged)
    assert second["generator"] == second["base_model"] == str(merged)
    assert second["model"] == str(out / "round-2" / "merged")
    meta = json.loads((Path(second["pair_store"]) / "meta.json").read_text())
    assert meta["parts"]["generator"]["path"] == str(merged)  # round 2 sampled from round 1's
    base = tensors(tiny_model_dir / "model.safetensors")
    trained = tensors(merged / "model.safetensors")
    assert any(not base[k].equal(trained[k]) for k in base)  # ... which training changed
    for record in (first, second):
        assert record["pairs"] >= 4 and record["heldout"] is None
        # step 0: the policy is the round's base model, which is also its reference
        assert record["loss_first"] == pytest.approx(25.0, abs=1e-3)
        assert record["loss_last"] != record["loss_first"]


def test_qlora_round_merges_full_weights_and_evaluates(tiny_model_dir, tmp_path):
    raw = sft_config(tiny_model_dir, tmp_path, adapter="qlora", load_in_4bit=True, max_steps=1)
    config = write_config(tmp_path, raw)
    code, log = selfplay(config, tmp_path, "--rounds", "1", "--eval-data",
                         raw["datasets"][0]["path"])
    assert code == 0, log[-3000:]
    [record] = json.loads((tmp_path / "out" / "selfplay.json").read_text())["rounds"]
    merged = Path(record["model"])
    assert merged == tmp_path / "out" / "round-1" / "merged"
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())
    assert {str(t.dtype) for t in tensors(merged / "model.safetensors").values()} == {
        "torch.float32"}  # the compute dtype of this fp32 config, never 4-bit
    trained = record["heldout"]["models"]["trained"]
    assert trained["n_prompts"] == 8 and 0.0 <= trained["preference_accuracy"] <= 1.0
    assert "pref. acc." in log


def test_full_finetune_rounds_need_no_merge(tiny_model_dir, tmp_path):
    raw = sft_config(tiny_model_dir, tmp_path, max_steps=1)
    for key in ("adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_linear"):
        raw.pop(key)
    config = write_config(tmp_path, raw)
    code, log = selfplay(config, tmp_path, "--rounds", "2")
    assert code == 0, log[-3000:]
    first, second = json.loads((tmp_path / "out" / "selfplay.json").read_text())["rounds"]
    assert first["model"] == str(tmp_path / "out" / "round-1")
    assert second["generator"] == first["model"]
    assert not (tmp_path / "out" / "round-1" / "merged").exists()


def test_rounds_0_is_one_line(tmp_path):
    code, log = selfplay(tmp_path / "never-read.yml", tmp_path, "--rounds", "0")
    assert code == 2 and "Traceback" not in log
    assert last_line(log) == "axolotl-ipo selfplay: --rounds must be at least 1, got 0"


def test_a_launcher_that_cannot_start_is_one_line(tiny_model_dir, tmp_path):
    config = write_config(tmp_path, sft_config(tiny_model_dir, tmp_path))
    code, log = selfplay(config, tmp_path, "--rounds", "1", "--launcher", "no-such-launcher")
    log_path = tmp_path / "out" / "round-1" / "train.log"
    assert code == 1 and last_line(log) == (
        f"axolotl-ipo selfplay: cannot run 'no-such-launcher' (No such file or directory); "
        f"check --launcher, log: {log_path}")
    assert "Traceback" not in log and not (tmp_path / "out" / "selfplay.json").exists()
