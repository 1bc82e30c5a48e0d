"""The main job, shortened, on the real SmolLM2-135M-Instruct: the shipped example config,
pairs sampled from the model itself, IPO through `axolotl train`, then `axolotl-ipo eval`."""

import json
import math
from pathlib import Path

import pytest
import yaml

from helpers import REPO, axolotl, axolotl_ipo, read_jsonl, read_metrics, run, write_config

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ROWS = 12


def head(src: Path, dst: Path, n: int) -> Path:
    dst.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:n]))
    return dst


def test_shortened_main_job_on_smollm2(smollm2, tmp_path):
    model_dir, data_dir = smollm2
    cfg = yaml.safe_load((REPO / "example_configs" / "smollm2-ipo-cpu.yml").read_text())
    train = head(data_dir / "nq_open_train.jsonl", tmp_path / "train.jsonl", ROWS)
    heldout = head(data_dir / "nq_open_heldout.jsonl", tmp_path / "heldout.jsonl", ROWS)
    cfg.update(
        base_model=str(model_dir),
        datasets=[{**cfg["datasets"][0], "path": str(train)}],
        dataset_prepared_path=str(tmp_path / "prepared"),
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        rejection_sampling={**cfg["rejection_sampling"], "max_new_tokens": 16, "batch_size": 6},
    )
    config = write_config(tmp_path, cfg)

    code, log = run(axolotl("train", config), tmp_path, timeout=900)
    assert code == 0, log[-3000:]
    (pairs_file,) = (tmp_path / "prepared" / "ipo_pairs").glob("*/pairs.jsonl")
    pairs = read_jsonl(pairs_file)
    assert len(pairs) >= ROWS - 2  # a sample equal to its gold answer is dropped (counted)
    assert {p["generator"] for p in pairs} == {f"transformers:{model_dir}"}
    assert all(p["chosen"].endswith("<|im_end|>") and p["rejected"] != p["chosen"] for p in pairs)
    begin, steps = read_metrics(tmp_path / "out")
    # the defaults: `ipo_tau: auto`, which with 12 rows has no held-out rows to measure (the guard
    # holds none out below 20) and says so, training at tau 0.1 plus the NLL term at weight
    # 2/tau = 20; at step 0 the loss is IPO's 25 plus 20 x the chosen answers' NLL per token
    assert "ipo_tau: auto could not measure" in log
    assert begin["loss_type"] == ["ipo", "sft"] and begin["beta"] == pytest.approx(0.1)
    assert begin["loss_weights"] == [1.0, pytest.approx(20.0)]
    assert len(steps) == 3 and steps[0]["loss"] > 25.0

    argv = axolotl_ipo("eval", str(config), "--data", str(heldout), "--max-new-tokens", "16")
    code, log = run(argv, tmp_path, timeout=900)
    assert code == 0, log[-3000:]
    report = json.loads((tmp_path / "out" / "ipo_eval" / "metrics.json").read_text())
    assert report["heldout"]["prompts"] == ROWS and report["heldout"]["pairs"] >= ROWS - 2
    base, trained = report["models"]["base"], report["models"]["trained"]
    assert base["preference_accuracy"] == 0.5
    for metrics in (base, trained):
        for key in ("preference_accuracy", "logprob_preference_accuracy", "implicit_margin",
                    "gold_nll", "task_contains", "task_exact", "task_f1"):
            assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert report["training_pairs"]["pairs"] == len(pairs)
    assert report["curves"]["steps"] == [1, 2, 3]
    assert (tmp_path / "out" / "ipo_eval" / "eval.png").stat().st_size > 10_000
