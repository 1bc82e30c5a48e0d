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

from axolotl_ipo.auto_tau import LossSettings
from axolotl_ipo.heldout_guard import GuardRows, GuardState

METRICS_FILE = "ipo_metrics.jsonl"
CHOSEN_BELOW_ZERO_LOGS = 3  # consecutive training logs with rewards/chosen < 0 before warning
HELDOUT_NLL = "ipo/heldout_gold_nll"  # the collapse guard's metric in the trainer's logs

LOG = logging.getLogger("axolotl_ipo")


class IPOMetricsCallback(TrainerCallback):
    """Appends each log (loss, rewards, log-probs) to `<output_dir>/ipo_metrics.jsonl`.

    `ipo_target_margin` is 1/(2*tau), the token-averaged log-ratio margin that IPO's loss
    pulls every pair towards; at step 0 (policy == reference) the loss is its square.
    """

    def __init__(self, output_dir: str, settings: LossSettings,
                 guard: HeldoutGuardCallback | None = None):
        self.path = Path(output_dir) / METRICS_FILE
        self.settings = settings  # `ipo_tau: auto` sets its values at step 0
        self.guard = guard

    def _append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_train_begin(self, args, state, control, **kwargs):
        """A new run starts the file; a run resumed from a checkpoint appends to it, so the
        curve before the resume is kept."""
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not state.global_step:
            self.path.write_text("", encoding="utf-8")
        begin = {
            "event": "train_begin",
            "step": state.global_step,
            **self.settings.record(),
            "world_size": args.world_size,
            "global_batch_size": args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * args.world_size,
            "loss_type": list(getattr(args, "loss_type", []) or []),
            "loss_weights": list(getattr(args, "loss_weights", []) or []),
            "beta": getattr(args, "beta", None),
        }
        if self.guard is not None and self.guard.state.curve:
            begin[HELDOUT_NLL] = self.guard.state.curve[-1][1]
            begin["heldout_rows"] = len(self.guard.rows.prompts)
        self._append(begin)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self._append({
            "step": state.global_step,
            "ipo_tau": self.settings.tau,
            "ipo_target_margin": 1.0 / (2.0 * self.settings.tau),
            **logs,
        })

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        end = {"event": "train_end", "step": state.global_step}
        if self.guard is not None:
            end.update(self.guard.state.summary())
            end["guard_triggered_at"] = self.guard.triggered_at
        self._append(end)


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
                "Raise `ipo_sft_weight` (the NLL term on them), or leave `ipo_tau` and "
                "`ipo_sft_weight` at their defaults.",
                self.below_zero,
                state.global_step,
                float(chosen),
            )


class HeldoutGuardCallback(TrainerCallback):
    """The collapse guard: scores the held-out SFT rows' gold NLL per token at the start and at
    every training log (`ipo/heldout_gold_nll`, before the reporting integrations see the logs:
    the plugin puts it first), warns in one line, once, when it rises more than ``max_rise``
    over its value at step 0, and with ``stop`` ends training there with the trainable
    weights of the last logging step under the limit put back. Every rank scores (the ranks'
    models are one model; a sharded one needs every rank's forward); rank 0 writes."""

    def __init__(self, rows: GuardRows, max_rise: float, stop: bool, max_length: int | None):
        self.rows = rows
        self.state = GuardState(max_rise)
        self.stop = stop
        self.max_length = max_length
        self.triggered_at: int | None = None
        self.broken = False  # scoring failed once: the guard is off for the rest of the run
        self._good: dict[str, Any] | None = None

    def _check(self, state, model, tokenizer) -> float | None:
        if self.broken:
            return None
        try:
            nll = self.rows.gold_nll(model, tokenizer, self.max_length)
        except Exception as err:  # noqa: BLE001 - a diagnostic must never end the training
            self.broken = True
            if state.is_world_process_zero:
                LOG.warning(
                    "IPO collapse guard: off for this run, scoring the held-out rows failed on "
                    "this model (%s: %s); training goes on. `ipo_guard_rows: 0` turns it off.",
                    type(err).__name__, str(err).splitlines()[0] if str(err) else "",
                )
            return None
        verdict = self.state.record(state.global_step, nll)
        if not verdict.over:
            if self.stop and self.triggered_at is None:
                self._good = {
                    name: param.detach().to("cpu", copy=True)
                    for name, param in model.named_parameters()
                    if param.requires_grad
                }
            return nll
        if self.triggered_at is None:
            self.triggered_at = state.global_step
            if state.is_world_process_zero:
                LOG.warning(verdict.message(len(self.rows.prompts)))
        return nll

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        tokenizer = processing_class or kwargs.get("tokenizer")
        nll = self._check(state, model, tokenizer)
        if nll is not None and state.is_world_process_zero:
            LOG.info(
                "IPO collapse guard: held-out gold NLL/token %.4g at step %d on %d rows "
                "(warns above +%.0f%% of it)",
                nll, state.global_step, len(self.rows.prompts), 100 * self.state.max_rise,
            )

    def on_log(self, args, state, control, logs=None, model=None, processing_class=None,
               **kwargs):
        if not logs or "loss" not in logs:
            return
        tokenizer = processing_class or kwargs.get("tokenizer")
        was_over = self.triggered_at is not None
        nll = self._check(state, model, tokenizer)
        if nll is None:
            return
        logs[HELDOUT_NLL] = nll
        if self.triggered_at is not None and self.stop and not was_over:
            self._restore(model)
            control.should_training_stop = True

    def _restore(self, model) -> None:
        if self._good is None:
            return
        import torch

        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self._good:
                    param.copy_(self._good[name].to(param.device))
        good_step = self.state.curve[-2][0] if len(self.state.curve) > 1 else 0
        LOG.warning(
            "IPO collapse guard: training stopped at step %d (ipo_guard_stop); the weights of "
            "step %d, the last under the limit, were put back and are what gets saved.",
            self.triggered_at, good_step,
        )

    def on_train_end(self, args, state, control, **kwargs):
        summary = self.state.summary()
        over = "" if self.triggered_at is None else f"; over the limit at step {self.triggered_at}"
        if summary and state.is_world_process_zero:  # printed, as the sampling summary is
            start, end = summary["heldout_gold_nll_start"], summary["heldout_gold_nll_end"]
            print(
                f"IPO collapse guard: held-out gold NLL/token {start:.4g} at the start, "
                f"{end:.4g} at the end, lowest {summary['heldout_gold_nll_lowest']:.4g} "
                f"({len(self.rows.prompts)} rows){over}",
                flush=True,
            )
