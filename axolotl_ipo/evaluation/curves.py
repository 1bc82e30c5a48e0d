"""Training curves from `<output_dir>/ipo_metrics.jsonl` (written by the plugin's callback)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from axolotl_ipo.callbacks import METRICS_FILE

__all__ = ["TrainingCurves", "read_curves"]


@dataclass
class TrainingCurves:
    """Per logged step: IPO loss and the token-averaged log-ratio margin (TRL's
    ``rewards/margins`` divided by beta = tau), next to IPO's target 1/(2*tau)."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)
    chosen_logps: list[float] = field(default_factory=list)
    rejected_logps: list[float] = field(default_factory=list)
    tau: float | None = None
    loss_type: list[str] = field(default_factory=list)

    @property
    def target_margin(self) -> float | None:
        return None if not self.tau else 1.0 / (2.0 * self.tau)

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "loss": self.loss,
            "logratio_margin": self.margin,
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
        curves.margin.append(float(record["rewards/margins"]) / float(tau))
        curves.chosen_logps.append(float(record.get("logps/chosen", float("nan"))))
        curves.rejected_logps.append(float(record.get("logps/rejected", float("nan"))))
    return curves if curves.steps else None
