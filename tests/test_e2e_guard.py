"""The collapse guard through the real Axolotl CLI on the tiny model: a recipe built to collapse
is caught within its first logging steps, `ipo_guard_stop` ends the run with the last good
weights saved, a healthy run stays silent."""

import pytest

from axolotl_ipo.args import auto_tau

from helpers import axolotl, read_jsonl, read_metrics, run, sft_config, write_config, write_jsonl

pytestmark = pytest.mark.e2e

WARNING = "IPO collapse guard: held-out gold NLL/token rose"
ROWS = [
    {"instruction": f"What is {a} + {b}?", "input": "", "output": str(a + b)}
    for a, b in [(3, 4), (12, 7), (25, 30), (8, 9), (41, 2), (16, 16), (5, 50), (33, 21),
                 (7, 7), (60, 13), (19, 1), (44, 44), (2, 71), (18, 27), (9, 90), (30, 3),
                 (11, 12), (27, 8), (6, 66), (14, 40), (52, 5), (23, 23), (1, 9), (38, 17)]
]


def guard_config(model_dir, work, **overrides):
    data = write_jsonl(work / "add.jsonl", ROWS)
    cfg = sft_config(model_dir, work, datasets=[{"path": str(data), "type": "alpaca"}],
                     ipo_guard_rows=6, max_steps=8, micro_batch_size=2)
    cfg.update(overrides)
    return cfg


def heldout_curve(out):
    return [(r["step"], r["ipo/heldout_gold_nll"]) for r in read_jsonl(out / "ipo_metrics.jsonl")
            if "ipo/heldout_gold_nll" in r]


def test_a_collapsing_recipe_is_caught_and_stopped_with_the_last_good_weights(
        tiny_model_dir, tmp_path):
    # pure IPO with a large margin target, full fine-tuning at a rate far too high
    cfg = guard_config(tiny_model_dir, tmp_path, ipo_tau=0.05, ipo_sft_weight=0,
                       learning_rate=0.2, ipo_guard_stop=True)
    for key in ("adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_linear"):
        cfg.pop(key)
    code, log = run(axolotl("train", write_config(tmp_path, cfg)), tmp_path)
    assert code == 0, log[-3000:]
    warnings = [line for line in log.splitlines() if WARNING in line]
    assert len(warnings) == 1, log[-3000:]
    out = tmp_path / "out"
    begin, _ = read_metrics(out)
    end = read_jsonl(out / "ipo_metrics.jsonl")[-1]
    assert begin["heldout_rows"] == 6 and begin["ipo/heldout_gold_nll"] > 0
    assert end["event"] == "train_end"
    stopped = end["guard_triggered_at"]
    assert stopped is not None and stopped < 8  # caught within the first logging steps
    assert end["step"] == stopped  # and stopped there
    # the saved adapter is the last good one: its held-out NLL is the curve's before the rise
    curve = heldout_curve(out)
    good = [begin["ipo/heldout_gold_nll"]] + [nll for step, nll in curve if step < stopped]
    good_nll = good[-1]
    assert saved_heldout_nll(tiny_model_dir, cfg, out) == pytest.approx(good_nll, rel=1e-4)


def saved_heldout_nll(model_dir, cfg, out):
    from transformers import AutoTokenizer

    from axolotl_ipo.evaluation.models import load_base, load_trained
    from axolotl_ipo.heldout_guard import GuardRows
    from axolotl_ipo.sft_datasets import training_rows

    rows = training_rows(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_trained(load_base(str(model_dir)), out)
    guard = GuardRows.render(rows.heldout, tokenizer, cfg["sequence_len"])
    return guard.gold_nll(model, tokenizer, cfg["sequence_len"])


def test_a_healthy_run_stays_silent_and_logs_its_curve(tiny_model_dir, tmp_path):
    cfg = guard_config(tiny_model_dir, tmp_path, learning_rate=0.01)
    cfg.pop("ipo_tau"), cfg.pop("ipo_sft_weight")  # the defaults
    code, log = run(axolotl("train", write_config(tmp_path, cfg)), tmp_path)
    assert code == 0, log[-3000:]
    assert WARNING not in log
    out = tmp_path / "out"
    begin, _ = read_metrics(out)  # the defaults: `ipo_tau: auto` + the NLL term at 2/tau
    tau = auto_tau(begin["ipo/heldout_gold_nll"])
    assert begin["ipo_tau"] == pytest.approx(tau) and begin["ipo_tau_auto"] is True
    assert begin["loss_type"] == ["ipo", "sft"]
    assert begin["loss_weights"] == pytest.approx([1.0, 2.0 / tau])
    assert begin["beta"] == pytest.approx(tau)
    curve = heldout_curve(out)
    assert [step for step, _ in curve] == list(range(0, 9))  # step 0: train_begin
    end = read_jsonl(out / "ipo_metrics.jsonl")[-1]
    assert end["guard_triggered_at"] is None and end["heldout_gold_nll_end"] == curve[-1][1]
    summary = f"NLL/token {curve[0][1]:.4g} at the start, {curve[-1][1]:.4g} at the end"
    assert summary in log  # the end-of-run summary


def test_auto_tau_is_the_loss_trl_computes_from_step_0(tiny_model_dir, tmp_path):
    """`ipo_tau: auto` with pure IPO: at step 0 (policy == reference) IPO's loss is the target
    margin squared, so TRL's first logged loss must be (held-out start NLL + 1)^2 exactly: the
    trainer trained with the measured tau, not the 0.1 it was built with."""
    cfg = guard_config(tiny_model_dir, tmp_path, learning_rate=0.01, ipo_sft_weight=0,
                       max_steps=2)
    cfg.pop("ipo_tau")
    code, log = run(axolotl("train", write_config(tmp_path, cfg)), tmp_path)
    assert code == 0, log[-3000:]
    begin, steps = read_metrics(tmp_path / "out")
    nll = begin["ipo/heldout_gold_nll"]
    assert begin["ipo_tau_auto_start_nll"] == pytest.approx(nll)
    assert begin["loss_type"] == ["ipo"] and begin["ipo_tau"] == pytest.approx(auto_tau(nll))
    assert steps[0]["loss"] == pytest.approx((nll + 1.0) ** 2, rel=1e-3)
    assert steps[0]["ipo_target_margin"] == pytest.approx(nll + 1.0)
    assert f"ipo_tau: auto: held-out gold NLL/token {nll:.4g}" in log
