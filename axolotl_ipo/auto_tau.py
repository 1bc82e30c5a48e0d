"""`ipo_tau: auto` (the default): IPO's target margin set at step 0 from the user's own rows.

The collapse guard scores its held-out gold answers' NLL per token under the starting model
before the first step; the target margin 1/(2*tau) becomes that NLL + AUTO_MARGIN_OVER_NLL, and
the NLL term's default weight follows (2/tau). A resumed run keeps the tau measured at its
step 0 (read back from ipo_metrics.jsonl), so its loss does not change at the resume.
args.py says why the target sits above the start NLL.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from axolotl_ipo.args import AUTO_MARGIN_OVER_NLL, DEFAULT_TAU, auto_tau, default_sft_weight
from axolotl_ipo.jsonl import read_lines
from axolotl_ipo.upstream.trl import set_ipo_loss

LOG = logging.getLogger("axolotl_ipo")

START_NLL_KEY = "ipo_tau_auto_start_nll"  # in ipo_metrics.jsonl's train_begin record


@dataclass
class LossSettings:
    """The tau and NLL weight the trainer uses; `auto` ones change at step 0."""

    tau: float
    sft_weight: float
    auto: bool = False
    start_nll: float | None = None  # what `auto` measured (None: not measured)

    def record(self) -> dict[str, Any]:
        out = {"ipo_tau": self.tau, "ipo_sft_weight": self.sft_weight}
        if self.auto:
            out["ipo_tau_auto"] = True
            out[START_NLL_KEY] = self.start_nll
        return out


def first_train_begin(metrics_file: Path) -> dict[str, Any]:
    """The first `train_begin` record of a run's ipo_metrics.jsonl ({} when there is none)."""
    try:
        lines = list(read_lines(metrics_file))
    except OSError:
        return {}
    for _, line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "train_begin":
            return record
    return {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def trained_tau(cfg: Any) -> float | None:
    """The tau a config's run trained with: `ipo_tau` as written, or with `auto` the value its
    ipo_metrics.jsonl recorded at the start (None before it trained)."""
    from axolotl_ipo.callbacks import METRICS_FILE

    tau = _number(cfg.get("ipo_tau"))
    if tau is not None:
        return tau
    begin = first_train_begin(Path(str(cfg.get("output_dir"))) / METRICS_FILE)
    return _number(begin.get("ipo_tau"))


class AutoTauCallback(TrainerCallback):
    """Sets the trainer's tau (and the default NLL weight) from the guard's step-0 score. It
    runs after the guard's `on_train_begin` and before the metrics callback's (plugin order).
    Every rank computes the same value from the same rows and weights; rank 0's is kept."""

    def __init__(self, trainer: Any, settings: LossSettings, guard: Any,
                 sft_weight: float | None, metrics_file: Path):
        self.trainer = trainer
        self.settings = settings
        self.guard = guard
        self.sft_weight = sft_weight  # as the user set it; None: follows tau
        self.metrics_file = metrics_file

    def _start_nll(self, state) -> tuple[float | None, str]:
        if state.global_step:
            earlier = _number(first_train_begin(self.metrics_file).get(START_NLL_KEY))
            if earlier is not None:
                return earlier, "measured at step 0 of this run"
        curve = self.guard.state.curve if self.guard is not None else []
        if not curve or not math.isfinite(curve[0][1]):
            return None, ""
        where = "step 0" if not state.global_step else f"step {state.global_step} (resumed)"
        return curve[0][1], f"measured at {where} on {len(self.guard.rows.prompts)} held-out rows"

    def on_train_begin(self, args, state, control, **kwargs):
        from axolotl_ipo.distributed import broadcast_from_main

        nll, how = self._start_nll(state)
        nll = broadcast_from_main(nll)
        if nll is None:
            tau = DEFAULT_TAU
            if state.is_world_process_zero:
                LOG.warning(
                    "ipo_tau: auto could not measure the held-out gold NLL (no held-out SFT rows:"
                    " `ipo_guard_rows: 0`, no SFT dataset, or a model the guard cannot score); "
                    "training with tau %g. Set `ipo_tau` to choose it.", tau,
                )
        else:
            tau = auto_tau(nll)
        weight = default_sft_weight(tau) if self.sft_weight is None else self.sft_weight
        set_ipo_loss(self.trainer, tau, weight)
        self.settings.tau, self.settings.sft_weight, self.settings.start_nll = tau, weight, nll
        if nll is not None and state.is_world_process_zero:  # printed, as the guard's summary
            print(
                f"ipo_tau: auto: held-out gold NLL/token {nll:.4g} ({how}) + "
                f"{AUTO_MARGIN_OVER_NLL:g} = target margin {1.0 / (2.0 * tau):.4g} nats/token: "
                f"tau {tau:.4g}, ipo_sft_weight {weight:.4g}",
                flush=True,
            )
