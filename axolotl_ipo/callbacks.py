"""Training-time evidence: every logged IPO metric, with the target margin, as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

METRICS_FILE = "ipo_metrics.jsonl"


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
