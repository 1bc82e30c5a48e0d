"""An Axolotl plugin for scripts/gpu_check_tier2.py: which engine trained, read from the trainer.

`plugins: [axolotl_ipo.IPOPlugin, gpu_check_probe.EngineProbe]` (scripts/ on PYTHONPATH) writes
OUTPUT_DIR/engine_probe.json after the first optimiser step: the class of the model the trainer
trains (`trainer.model_wrapped`; DeepSpeed's `DeepSpeedEngine` under a `deepspeed:` config),
whether the trainer says DeepSpeed is on, and the engine's ZeRO stage. A DeepSpeed config that
accelerate dropped (plain DDP or one process) shows here as another class and no stage.
"""

from __future__ import annotations

import json
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

PROBE_FILE = "engine_probe.json"


def engine_facts(trainer) -> dict:
    wrapped = getattr(trainer, "model_wrapped", None)
    stage = getattr(wrapped, "zero_optimization_stage", None)
    return {
        "engine": f"{type(wrapped).__module__}.{type(wrapped).__qualname__}",
        "is_deepspeed_enabled": bool(getattr(trainer, "is_deepspeed_enabled", False)),
        "zero_stage": stage() if callable(stage) else None,
        "world_size": int(trainer.args.world_size),
    }


class _Probe(TrainerCallback):
    def __init__(self, trainer, output_dir: str) -> None:
        self.trainer, self.path = trainer, Path(output_dir) / PROBE_FILE

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1 and state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(engine_facts(self.trainer)) + "\n")


class EngineProbe(BasePlugin):
    def add_callbacks_post_trainer(self, cfg, trainer):
        return [_Probe(trainer, cfg.output_dir)]
