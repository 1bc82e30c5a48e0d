"""research/overfitting/overfitting.py without a model: the IPO and DPO configs (through Axolotl's
own validation), checkpoint discovery, TRL's logs, the metrics and the table."""

import json
import math
from pathlib import Path

import pytest
import yaml

from axolotl_ipo.evaluation.scoring import AnswerScore

import axolotl_config
from helpers import REPO, load_script

MAIN = yaml.safe_load((REPO / "example_configs" / "smollm2-ipo-cpu.yml").read_text())
overfitting = load_script("research/overfitting/overfitting.py")


def configs(tmp_path: Path) -> dict[str, dict]:
    return {
        loss: overfitting.train_config(
            MAIN, loss, tmp_path / "pairs.jsonl", tmp_path / loss, steps=64, epochs=8,
            save_steps=8, learning_rate=5e-4, beta=0.1,
        )
        for loss in ("ipo", "dpo")
    }


def test_ipo_and_dpo_configs_differ_only_in_the_loss(tmp_path):
    ipo, dpo = configs(tmp_path).values()
    differing = {key for key in ipo.keys() | dpo.keys() if ipo.get(key) != dpo.get(key)}
    assert differing == {"rl", "ipo_tau", "ipo_sft_weight", "rl_beta", "dataset_prepared_path",
                         "output_dir"}
    assert ipo["ipo_sft_weight"] == 0.0  # pure IPO against DPO
    assert (ipo["rl"], ipo["ipo_tau"], dpo["rl"], dpo["rl_beta"]) == ("ipo", 0.1, "dpo", 0.1)
    assert "rejection_sampling" not in ipo and "max_steps" in ipo
    assert ipo["datasets"] == [{"path": str(tmp_path / "pairs.jsonl"), "split": "train",
                                "type": "axolotl_ipo.sampled_pairs"}]
    assert (ipo["max_steps"], ipo["save_steps"], ipo["learning_rate"]) == (64, 8, 5e-4)
    assert ipo["save_total_limit"] == 8  # every checkpoint kept (Axolotl's default is 4)
    for key in ("base_model", "lora_r", "micro_batch_size", "seed", "sequence_len"):
        assert ipo[key] == MAIN[key]
    with pytest.raises(ValueError, match="loss must be one of"):
        overfitting.train_config(MAIN, "kto", tmp_path, tmp_path, steps=1, epochs=1,
                                 save_steps=1, learning_rate=1e-4, beta=0.1)


def test_configs_pass_axolotl_validation_as_ipo_and_plain_sigmoid_dpo(tmp_path, monkeypatch):
    from axolotl.integrations.base import PluginManager

    for loss, raw in configs(tmp_path).items():
        monkeypatch.setattr(PluginManager, "_instance", None)
        validated, schema = axolotl_config.validate(raw)
        assert axolotl_config.unknown_or_deprecated_keys(raw, schema) == {}
        assert validated.rl == "dpo" and validated.rl_beta == 0.1
        assert validated.save_strategy == "steps" and validated.save_steps == 8
        assert validated.save_total_limit == 8
        assert validated.bf16 is False and validated.fp16 is False
        # IPO through the plugin; DPO left to TRL's default loss (sigmoid), plugin inert
        assert validated.dpo_loss_type == (["ipo"] if loss == "ipo" else None)


def test_steps_and_first_losses():
    assert overfitting.steps_for(32, 8, 4) == 64
    assert overfitting.steps_for(10, 2, 4) == 6  # a short last batch is still a step
    assert overfitting.expected_first_loss("ipo", 0.1) == pytest.approx(25.0)
    assert overfitting.expected_first_loss("dpo", 0.1) == pytest.approx(math.log(2))


def test_checkpoints_are_found_by_numeric_step_and_need_an_adapter(tmp_path):
    for name in ("checkpoint-16", "checkpoint-8", "checkpoint-24", "checkpoint-x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
    (tmp_path / "checkpoint-32").mkdir()  # interrupted save: no adapter
    found = overfitting.find_checkpoints(tmp_path)
    assert [step for step, _ in found] == [8, 16, 24]
    assert found[0][1] == tmp_path / "checkpoint-8"


def test_trl_logs_keep_training_steps_and_unscale_the_margin(tmp_path):
    state = tmp_path / "trainer_state.json"
    history = [
        {"step": 1, "loss": 25.0, "rewards/margins": 0.0, "logps/chosen": -10.0,
         "logps/rejected": -40.0},
        {"step": 2, "loss": 20.0, "rewards/margins": 0.3, "logps/chosen": -9.0,
         "logps/rejected": -45.0},
        {"step": 2, "train_runtime": 12.0, "train_loss": 22.5},  # the end-of-training summary
    ]
    state.write_text(json.dumps({"log_history": history}))
    logs = overfitting.trl_logs(state, beta=0.1)
    assert [r["step"] for r in logs] == [1, 2]
    assert logs[1]["summed_margin"] == pytest.approx(3.0)
    assert logs[1]["logps_rejected_summed"] == -45.0


def S(mean: float, n: int) -> AnswerScore:
    return AnswerScore(mean * n, n)


def test_checkpoint_metrics_token_averaged_vs_summed():
    # one pair: chosen 2 tokens, rejected 10 tokens
    ref = {"train_chosen": [S(-3.0, 2)], "train_rejected": [S(-1.0, 10)],
           "heldout_chosen": [S(-2.0, 4), S(-2.0, 4)],
           "heldout_rejected": [S(-1.0, 5), S(-1.0, 5)]}
    policy = {"train_chosen": [S(-2.0, 2)], "train_rejected": [S(-1.5, 10)],
              "heldout_chosen": [S(-1.0, 4), S(-3.0, 4)],
              "heldout_rejected": [S(-1.0, 5), S(-1.0, 5)]}
    m = overfitting.checkpoint_metrics(policy, ref)
    assert m["train_margin_avg"] == pytest.approx(1.0 + 0.5)
    assert m["train_margin_sum"] == pytest.approx(2.0 + 5.0)
    assert (m["train_chosen_logp"], m["train_rejected_logp"]) == (-2.0, -1.5)
    assert m["train_chosen_logp_summed"] == pytest.approx(-4.0)
    assert m["heldout_accuracy"] == 0.5  # one margin +1, one -1
    assert m["heldout_gold_nll"] == pytest.approx(2.0)
    base = overfitting.checkpoint_metrics(ref, ref)
    assert base["train_margin_avg"] == base["train_margin_sum"] == 0.0
    assert base["heldout_accuracy"] == 0.5


def test_table_has_one_row_per_run_and_checkpoint():
    row = {key: 0.0 for key, _ in overfitting.COLUMNS}
    results = {
        "ipo": {"checkpoints": [{**row, "step": 0, "epoch": 0.0},
                                {**row, "step": 8, "epoch": 1.0, "train_margin_avg": 4.98765}]},
        "dpo": {"checkpoints": [{**row, "step": 0, "epoch": 0.0}]},
    }
    lines = overfitting.format_table(results, target=5.0).splitlines()
    assert "IPO target 5" in lines[0]
    assert len(lines) == 2 + 3
    assert lines[3].startswith("| IPO | 8 | 1 | 4.988 |")
    assert lines[4].startswith("| DPO | 0 | 0 |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)

