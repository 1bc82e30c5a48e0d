"""Training-time evidence: every logged IPO metric, with the target margin, as JSON lines; and
IPO diagnostics (`ipo/...`) added to the trainer's own logs, so W&B, MLflow and TensorBoard get
them too."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

METRICS_FILE = "ipo_metrics.jsonl"
CHOSEN_BELOW_ZERO_LOGS = 3  # consecutive training logs with rewards/chosen < 0 before warning

LOG = logging.getLogger("axolotl_ipo")


class IPOMetricsCallback(TrainerCallback):
    """Appends each log (loss, rewards, log-probs) to `<output_dir>/ipo_metrics.jsonl`.

    `ipo_target_margin` is 1/(2*tau), the token-averaged log-ratio margin that IPO's loss
    pulls every pair towards; at step 0 (policy == reference) the loss is its square.
    """

    def __init__(self, output_dir: str, tau: float):
        self.path = Path(output_dir) / METRICS_FILE
        self.tau = tau

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        begin = {
            "event": "train_begin",
            "ipo_tau": self.tau,
            "world_size": args.world_size,
            "global_batch_size": args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * args.world_size,
            "loss_type": list(getattr(args, "loss_type", []) or []),
            "loss_weights": list(getattr(args, "loss_weights", []) or []),
            "beta": getattr(args, "beta", None),
        }
        self.path.write_text(json.dumps(begin) + "\n", encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {
            "step": state.global_step,
            "ipo_tau": self.tau,
            "ipo_target_margin": 1.0 / (2.0 * self.tau),
            **logs,
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def ipo_diagnostics(logs: dict[str, Any], pure_ipo: bool) -> dict[str, float]:
    """The `ipo/...` metrics of one training log. `ipo/target_distance` = sqrt(loss), the RMS
    distance of the batch's token-averaged log-ratio margins from 1/(2*tau): only when the loss
    is IPO's alone (an added SFT term is not logged apart by TRL)."""
    if not pure_ipo or "loss" not in logs:
        return {}
    return {"ipo/target_distance": math.sqrt(max(float(logs["loss"]), 0.0))}


class IPODiagnosticsCallback(TrainerCallback):
    """Adds `ipo/...` metrics to every training log, and warns once when TRL's `rewards/chosen`
    (tau x the policy's summed log-ratio to the reference on the chosen answers) stays below 0
    for `patience` consecutive logs: the gold answers are becoming less likely.

    It must run before the reporting integrations' `on_log` (they read the same `logs` dict):
    the plugin puts it first in the trainer's callback list
    (`upstream.transformers.add_callback_first`)."""

    def __init__(self, pure_ipo: bool, patience: int = CHOSEN_BELOW_ZERO_LOGS):
        self.pure_ipo = pure_ipo
        self.patience = patience
        self.below_zero = 0
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return  # eval logs and the final train summary
        logs.update(ipo_diagnostics(logs, self.pure_ipo))
        chosen = logs.get("rewards/chosen")
        if chosen is None:
            return
        self.below_zero = self.below_zero + 1 if float(chosen) < 0 else 0
        if self.below_zero >= self.patience and not self.warned and state.is_world_process_zero:
            self.warned = True
            LOG.warning(
                "IPO: rewards/chosen has been below 0 for %d logging steps (step %d: %.4g): the "
                "chosen (gold) answers are becoming less likely than under the reference model. "
                "Consider `ipo_sft_weight: 1` (an SFT term on them) with `ipo_tau` 0.3 to 1.0: "
                "the recipes that kept up with plain SFT in docs/skill_study.md.",
                self.below_zero,
                state.global_step,
                float(chosen),
            )
