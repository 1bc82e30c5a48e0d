"""IPO diagnostics (`ipo/...` metrics, the falling-chosen warning) on fake training logs."""

import logging
import math
from types import SimpleNamespace

import pytest
from transformers import TrainerCallback
from transformers.trainer_callback import CallbackHandler, TrainerControl, TrainerState

from axolotl_ipo.callbacks import IPODiagnosticsCallback
from axolotl_ipo.upstream.transformers import add_callback_first

WARNING = "rewards/chosen has been below 0 for 3 logging steps"


def log(callback, logs, step=1):
    state = TrainerState(global_step=step, is_world_process_zero=True)
    callback.on_log(None, state, TrainerControl(), logs=logs)
    return logs


def test_target_distance_is_sqrt_of_the_ipo_loss():
    logs = log(IPODiagnosticsCallback(pure_ipo=True), {"loss": 6.25, "rewards/chosen": 0.1})
    assert logs["ipo/target_distance"] == pytest.approx(2.5)


def test_no_target_distance_when_an_sft_term_is_mixed_in():
    logs = log(IPODiagnosticsCallback(pure_ipo=False), {"loss": 6.25, "rewards/chosen": 0.1})
    assert "ipo/target_distance" not in logs


def test_eval_logs_and_train_summary_are_left_alone():
    callback = IPODiagnosticsCallback(pure_ipo=True)
    for logs in ({"eval_loss": 4.0}, {"train_loss": 4.0, "train_runtime": 1.0}):
        assert log(callback, dict(logs)) == logs


def test_warns_once_after_three_consecutive_logs_with_chosen_below_zero(caplog):
    callback = IPODiagnosticsCallback(pure_ipo=True)
    rewards = [-0.1, -0.2, 0.05, -0.1, -0.3]  # a streak of 2, reset, then 2 again: no warning
    with caplog.at_level(logging.WARNING, logger="axolotl_ipo"):
        for step, reward in enumerate(rewards, 1):
            log(callback, {"loss": 1.0, "rewards/chosen": reward}, step)
        assert WARNING not in caplog.text
        for step in (6, 7, 8):
            log(callback, {"loss": 1.0, "rewards/chosen": -0.4}, step)
    assert caplog.text.count(WARNING) == 1
    assert "(step 6: -0.4)" in caplog.text and "ipo_sft_weight" in caplog.text


def test_no_warning_while_chosen_stays_at_or_above_zero(caplog):
    callback = IPODiagnosticsCallback(pure_ipo=True)
    with caplog.at_level(logging.WARNING, logger="axolotl_ipo"):
        for step in range(1, 10):
            log(callback, {"loss": 1.0, "rewards/chosen": 0.0 if step % 2 else 0.2}, step)
    assert WARNING not in caplog.text


class Recorder(TrainerCallback):
    """Stands in for a reporting integration (W&B, MLflow, TensorBoard): keeps what it saw."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


def test_integrations_see_the_ipo_metrics_when_the_callback_goes_first():
    recorder = Recorder()
    handler = CallbackHandler([recorder], None, None, None, None)
    trainer = SimpleNamespace(callback_handler=handler)
    add_callback_first(trainer, IPODiagnosticsCallback(pure_ipo=True))
    state = TrainerState(global_step=1, is_world_process_zero=True)
    handler.on_log(None, state, TrainerControl(), {"loss": 25.0, "rewards/chosen": 0.0})
    assert recorder.seen[0]["ipo/target_distance"] == pytest.approx(math.sqrt(25.0))
