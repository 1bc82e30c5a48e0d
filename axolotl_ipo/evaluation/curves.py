"""Training curves from `<output_dir>/ipo_metrics.jsonl` (written by the plugin's callback)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from axolotl_ipo.callbacks import METRICS_FILE

__all__ = ["TrainingCurves", "read_curves"]


@dataclass
class TrainingCurves:
    """Per logged step: the loss; for IPO, ``sqrt(loss)``, which is exactly the RMS distance of
    the batch's token-averaged log-ratio margins from IPO's target 1/(2*tau) (TRL's IPO loss is
    their mean squared distance); and TRL's ``rewards/margins`` / beta, the *summed* (not
    token-averaged) log-ratio margin, the quantity DPO's loss acts on."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    summed_margin: list[float] = field(default_factory=list)
    chosen_logps: list[float] = field(default_factory=list)
    rejected_logps: list[float] = field(default_factory=list)
    tau: float | None = None
    loss_type: list[str] = field(default_factory=list)

    @property
    def target_margin(self) -> float | None:
        return None if not self.tau else 1.0 / (2.0 * self.tau)

    @property
    def rms_from_target(self) -> list[float] | None:
        if list(self.loss_type or []) != ["ipo"]:
            return None
        return [math.sqrt(max(loss, 0.0)) for loss in self.loss]

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "loss": self.loss,
            "rms_margin_from_target": self.rms_from_target,
            "summed_logratio_margin": self.summed_margin,
            "chosen_logps": self.chosen_logps,
            "rejected_logps": self.rejected_logps,
            "ipo_tau": self.tau,
            "target_margin": self.target_margin,
            "loss_type": self.loss_type,
        }


def read_curves(output_dir: str | Path) -> TrainingCurves | None:
    """The curves of the run in ``output_dir``; None when it logged nothing."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return None
    curves = TrainingCurves()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("event") == "train_begin":
            curves = TrainingCurves(tau=record.get("ipo_tau"), loss_type=record.get("loss_type"))
            continue
        if "loss" not in record or "rewards/margins" not in record:
            continue  # the final train summary, eval logs
        tau = record.get("ipo_tau") or curves.tau
        curves.tau = tau
        curves.steps.append(int(record["step"]))
        curves.loss.append(float(record["loss"]))
        curves.summed_margin.append(float(record["rewards/margins"]) / float(tau))
        curves.chosen_logps.append(float(record.get("logps/chosen", float("nan"))))
        curves.rejected_logps.append(float(record.get("logps/rejected", float("nan"))))
    return curves if curves.steps else None
