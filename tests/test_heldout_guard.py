"""The collapse guard's pieces: the held-out slice, the rise check, the metrics file."""

import json
import math

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from axolotl_ipo.auto_tau import LossSettings
from axolotl_ipo.callbacks import METRICS_FILE, IPOMetricsCallback
from axolotl_ipo.heldout_guard import GuardState, guard_size, split_heldout


@pytest.mark.parametrize(("rows", "setting", "size"), [
    (256, None, 12), (10_000, None, 64), (19, None, 0), (20, None, 1),  # min(5%, 64)
    (256, 0, 0), (256, 30, 30), (5, 30, 4),  # explicit; never every row
])
def test_guard_size(rows, setting, size):
    assert guard_size(rows, setting) == size


def test_the_slice_is_seeded_disjoint_and_in_order():
    rows = list(range(100))
    held, kept = split_heldout(rows, 5, seed=42)
    assert len(held) == 5 and sorted(held + kept) == rows and not set(held) & set(kept)
    assert held == sorted(held) and kept == sorted(kept)
    assert split_heldout(rows, 5, seed=42) == (held, kept)  # every rank, every run
    assert split_heldout(rows, 5, seed=7)[0] != held
    assert split_heldout(rows, 0, seed=42) == ([], rows)


def test_the_check_compares_with_the_start():
    state = GuardState(max_rise=0.10)
    assert not state.record(0, 2.0).over
    assert not state.record(1, 1.0).over  # falling is what SFT does
    assert not state.record(2, 1.9).over  # a bump back up, still below the start
    assert not state.record(3, 2.18).over  # +9%: under the limit
    verdict = state.record(4, 2.3)  # +15% over the start
    assert verdict.over and verdict.start == 2.0 and verdict.start_step == 0
    assert verdict.rise == pytest.approx(0.15)
    message = verdict.message(rows=12)
    assert "\n" not in message and "step 4" in message and "+15%" in message
    assert "ipo_sft_weight" in message and "ipo_guard_stop" in message
    assert state.summary() == {"heldout_gold_nll_start": 2.0, "heldout_gold_nll_end": 2.3,
                               "heldout_gold_nll_lowest": 1.0,
                               "heldout_gold_nll_change": pytest.approx(0.15)}
    assert not GuardState().record(0, math.nan).over


def _log_run(callback, args, state, losses):
    control = TrainerControl()
    callback.on_train_begin(args, state, control)
    for loss in losses:
        state.global_step += 1
        callback.on_log(args, state, control, logs={"loss": loss})


def test_a_resumed_run_appends_to_the_metrics_file(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    callback = IPOMetricsCallback(str(tmp_path), LossSettings(0.1, 20.0))
    _log_run(callback, args, TrainerState(), [25.0, 24.0])
    _log_run(callback, args, TrainerState(global_step=2), [23.0])  # resumed at step 2
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["loss"] for r in records if "loss" in r] == [25.0, 24.0, 23.0]
    assert [r["step"] for r in records if r.get("event") == "train_begin"] == [0, 2]
    _log_run(callback, args, TrainerState(), [25.0])  # a new run starts the file again
    records = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert len(records) == 2


def test_the_guard_scores_gold_answers_as_the_evaluation_does(tiny_model_dir):
    """One plain forward per batch (it must run under 4-bit layers and DeepSpeed too) gives the
    evaluation scorer's NLL per token (KV-cache reuse there), and leaves the model's mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_ipo.evaluation.metrics import gold_nll
    from axolotl_ipo.evaluation.scoring import score_answers
    from axolotl_ipo.heldout_guard import GuardRows

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    prompts = [f"<|im_start|>user\nWhat is {a} + {b}?<|im_end|>\n<|im_start|>assistant\n"
               for a, b in [(3, 4), (12, 7), (25, 30), (8, 9), (41, 2)]]
    golds = ["7", "19", "55 is the sum", "17", "43"]
    rows = GuardRows(prompts, golds)
    expected = gold_nll(score_answers(model, tokenizer, prompts, golds, max_length=64))
    assert rows.gold_nll(model, tokenizer, 64, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert model.training


def test_a_model_the_guard_cannot_score_turns_it_off_in_one_line(caplog):
    """E.g. bitsandbytes' 4-bit layers on a CPU in eval mode: the run goes on, the guard says
    once that it is off and logs nothing more."""
    from axolotl_ipo.callbacks import HELDOUT_NLL, HeldoutGuardCallback
    from axolotl_ipo.heldout_guard import GuardRows

    class Unscorable(GuardRows):
        def gold_nll(self, *args, **kwargs):
            raise RuntimeError("shape '[32, 0]' is invalid for input of size 16\nmore")

    guard = HeldoutGuardCallback(Unscorable(["p"], ["g"]), 0.1, stop=True, max_length=None)
    args, state, control = TrainingArguments(output_dir="x", report_to=[]), TrainerState(), \
        TrainerControl()
    guard.on_train_begin(args, state, control, model=None, processing_class=None)
    logs = {"loss": 1.0}
    state.global_step = 1
    guard.on_log(args, state, control, logs=logs, model=None, processing_class=None)
    warnings = [r.getMessage() for r in caplog.records if "collapse guard" in r.getMessage()]
    assert warnings == ["IPO collapse guard: off for this run, scoring the held-out rows failed "
                        "on this model (RuntimeError: shape '[32, 0]' is invalid for input of "
                        "size 16); training goes on. `ipo_guard_rows: 0` turns it off."]
    assert HELDOUT_NLL not in logs and not control.should_training_stop


class _Trainer:
    """What AutoTauCallback touches of TRL's DPOTrainer (upstream.trl.set_ipo_loss)."""

    def __init__(self, loss_types, loss_weights):
        from types import SimpleNamespace

        self.beta = 0.1
        self.loss_types, self.loss_weights = loss_types, loss_weights
        self.args = SimpleNamespace(beta=0.1, loss_weights=list(loss_weights))


def _guard_with_start(nll):
    from types import SimpleNamespace

    return SimpleNamespace(state=SimpleNamespace(curve=[(0, nll)]),
                           rows=SimpleNamespace(prompts=["p"] * 12))


@pytest.mark.parametrize(("weight", "expected"), [(None, 40.0), (3.0, 3.0)])
def test_auto_tau_sets_the_trainers_tau_and_weight_at_step_0(tmp_path, weight, expected):
    from axolotl_ipo.auto_tau import AutoTauCallback, LossSettings

    trainer, settings = _Trainer(["ipo", "sft"], [1.0, 20.0]), LossSettings(0.1, 20.0, auto=True)
    callback = AutoTauCallback(trainer, settings, _guard_with_start(9.0), weight,
                               tmp_path / METRICS_FILE)
    callback.on_train_begin(None, TrainerState(), TrainerControl())
    assert trainer.beta == trainer.args.beta == pytest.approx(0.05)  # 1/(2 * (9 + 1))
    assert trainer.loss_weights == trainer.args.loss_weights == pytest.approx([1.0, expected])
    assert (settings.tau, settings.sft_weight, settings.start_nll) == (
        pytest.approx(0.05), pytest.approx(expected), 9.0)


def test_a_resumed_auto_run_keeps_the_tau_of_its_step_0(tmp_path):
    """The resumed model scores lower than the start did; the loss must not change at the
    resume, so the start NLL comes back from ipo_metrics.jsonl."""
    from axolotl_ipo.auto_tau import AutoTauCallback, LossSettings

    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    settings = LossSettings(0.1, 20.0, auto=True)
    first = AutoTauCallback(_Trainer(["ipo", "sft"], [1.0, 20.0]), settings,
                            _guard_with_start(4.0), None, tmp_path / METRICS_FILE)
    first.on_train_begin(args, TrainerState(), TrainerControl())
    _log_run(IPOMetricsCallback(str(tmp_path), settings), args, TrainerState(), [25.0])
    trainer = _Trainer(["ipo", "sft"], [1.0, 20.0])
    resumed = AutoTauCallback(trainer, LossSettings(0.1, 20.0, auto=True),
                              _guard_with_start(0.5), None, tmp_path / METRICS_FILE)
    resumed.on_train_begin(args, TrainerState(global_step=1), TrainerControl())
    assert trainer.beta == pytest.approx(0.1) and trainer.loss_weights == [1.0, 20.0]


def test_auto_tau_without_heldout_rows_says_so_and_trains_at_0_1(tmp_path, caplog):
    from axolotl_ipo.auto_tau import AutoTauCallback, LossSettings

    trainer = _Trainer(["ipo"], [1.0])
    callback = AutoTauCallback(trainer, LossSettings(0.1, 0.0, auto=True), None, 0.0,
                               tmp_path / METRICS_FILE)
    with caplog.at_level("WARNING", logger="axolotl_ipo"):
        callback.on_train_begin(None, TrainerState(), TrainerControl())
    assert trainer.beta == 0.1 and trainer.loss_weights == [1.0]
    assert len(caplog.records) == 1 and "ipo_tau: auto could not measure" in caplog.text
