"""Tier 2 of scripts/gpu_check.sh: `python3 -m axolotl.cli.train` with `rl: ipo` and the plugin
on the random ~1.2B Llama (the tiny model in the self-test), each run checked afterwards.

    axolotl-lora        LoRA, rejected answers sampled with backend transformers
    axolotl-qlora       the same with QLoRA (bitsandbytes 4-bit)
    axolotl-zero2-lora  LoRA + DeepSpeed ZeRO-2 (no CPU offload), `accelerate launch`, 1 GPU
    axolotl-zero2-full  full fine-tune of the SmolLM2-135M shape + ZeRO-2, the same way
    axolotl-zero3-lora  LoRA + DeepSpeed ZeRO-3 (1.2B)
    axolotl-zero3-full  full fine-tune (SmolLM2 shape) + ZeRO-3
    axolotl-vllm        QLoRA, rejected answers sampled with backend vllm

Every run also loads `gpu_check_probe.EngineProbe`, which records the class of the engine the
trainer trained with and its ZeRO stage; a DeepSpeed step passes only if that engine is
DeepSpeed's, at the config's stage (accelerate can silently drop DeepSpeed). The optimizer is
torch's AdamW and no config offloads to CPU, so nothing of DeepSpeed needs compiling.

A step whose packages are missing is a SKIP that names them. In the self-test (CPU) the
DeepSpeed steps run the same launch and must be refused in one line (DeepSpeed cannot train on
CPU ranks); they are SKIP then, FAIL if the launch was not refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from gpu_check_common import Skip

REPO = Path(__file__).resolve().parents[1]
DEEPSPEED_CONFIGS = {
    2: REPO / "example_configs" / "deepspeed" / "zero2-no-offload.json",
    3: REPO / "example_configs" / "deepspeed" / "zero3_bf16.json",
}
# step -> (ZeRO stage, fine-tuning); the full fine-tunes train the SmolLM2-135M shape
DEEPSPEED_STEPS = {
    "axolotl-zero2-lora": (2, "lora"),
    "axolotl-zero2-full": (2, "full"),
    "axolotl-zero3-lora": (3, "lora"),
    "axolotl-zero3-full": (3, "full"),
}
NEEDS = {
    "axolotl-lora": ("axolotl",),
    "axolotl-qlora": ("axolotl", "bitsandbytes"),
    **{step: ("axolotl", "deepspeed") for step in DEEPSPEED_STEPS},
    "axolotl-vllm": ("axolotl", "bitsandbytes", "vllm"),
}
GPU_ONLY = {"axolotl-vllm": "vLLM needs a CUDA GPU"}
DEEPSPEED_ENGINE = "deepspeed.runtime.engine.DeepSpeedEngine"
PROBE_PLUGIN = "gpu_check_probe.EngineProbe"
PROBE_FILE = "engine_probe.json"
CPU_REFUSAL = "DeepSpeed cannot train on CPU ranks"


def sft_rows(n: int = 48) -> list[dict[str, str]]:
    """Arithmetic questions with their answers: deterministic alpaca SFT rows, no download."""
    return [
        {"instruction": f"What is {a} plus {b}? Answer with the number only.", "output": str(a + b)}
        for a, b in ((3 + i, 7 + 2 * i) for i in range(n))
    ]


def config(step: str, work: Path, model: Path, data: Path, self_test: bool) -> dict:
    """The run's Axolotl config: the example configs' keys at a few steps' scale."""
    run_dir = work / step
    cfg = {
        "base_model": str(model),
        "plugins": ["axolotl_ipo.IPOPlugin", PROBE_PLUGIN],
        "rl": "ipo",
        "ipo_tau": 0.1,
        "datasets": [{"path": str(data), "type": "alpaca"}],
        "rejection_sampling": {"backend": "vllm" if step == "axolotl-vllm" else "transformers",
                               "batch_size": 16, "max_new_tokens": 8 if self_test else 32,
                               "temperature": 0.7, "seed": 42},
        "dataset_prepared_path": str(run_dir / "prepared"),
        "output_dir": str(run_dir / "out"),
        "val_set_size": 0,
        "sequence_len": 128 if self_test else 256,
        "adapter": "lora",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_target_linear": True,
        "micro_batch_size": 2 if self_test else 4,
        "gradient_accumulation_steps": 1,
        "max_steps": 2 if self_test else 5,
        "num_epochs": 1,
        "learning_rate": 0.0001,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 42,
        "bf16": not self_test,
        "fp16": False,
        "tf32": not self_test,
        "gradient_checkpointing": not self_test,
        "attn_implementation": "sdpa",
    }
    if step in ("axolotl-qlora", "axolotl-vllm"):
        cfg.update({"adapter": "qlora", "load_in_4bit": True})
    if step == "axolotl-vllm":  # leave room for the CUDA context and a fast start on any GPU
        cfg["rejection_sampling"]["gpu_memory_utilization"] = 0.3
    if step in DEEPSPEED_STEPS:
        stage, finetune = DEEPSPEED_STEPS[step]
        cfg["deepspeed"] = str(DEEPSPEED_CONFIGS[stage])
        if finetune == "full":
            for key in ("adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_linear"):
                del cfg[key]
            cfg["learning_rate"] = 1e-5
    return cfg


def model_for(step: str, models: dict[str, Path]) -> Path:
    """The 1.2B Llama, or the SmolLM2 shape for the full fine-tunes (policy + reference)."""
    full = step in DEEPSPEED_STEPS and DEEPSPEED_STEPS[step][1] == "full"
    return models["smollm2" if full else "llama1b"]


def write_config(step: str, work: Path, model: Path, self_test: bool) -> Path:
    data = work / "sft.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in sft_rows()), encoding="utf-8")
    path = work / f"{step}.yml"
    path.write_text(yaml.safe_dump(config(step, work, model, data, self_test), sort_keys=False))
    return path


def command(step: str, cfg_path: Path) -> list[str]:
    if step in DEEPSPEED_STEPS:  # one process on the one visible GPU
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                "-m", "axolotl.cli.train", str(cfg_path)]
    return [sys.executable, "-m", "axolotl.cli.train", str(cfg_path)]


def verify(cfg_path: Path) -> dict:
    """What the run left: pairs from the configured backend and logged IPO losses."""
    cfg = yaml.safe_load(cfg_path.read_text())
    backend = cfg["rejection_sampling"]["backend"]
    pairs = sorted(Path(cfg["dataset_prepared_path"]).glob("ipo_pairs/**/pairs.jsonl"))
    if not pairs:
        raise RuntimeError(f"no pairs.jsonl under {cfg['dataset_prepared_path']}")
    rows = [json.loads(line) for line in pairs[-1].read_text().splitlines()]
    generators = {row["generator"].split(":")[0] for row in rows}
    if not rows or generators != {backend}:
        raise RuntimeError(f"{len(rows)} pairs from {sorted(generators)}, not {backend}")
    metrics = Path(cfg["output_dir"]) / "ipo_metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()
               ] if metrics.is_file() else []
    losses = [r["loss"] for r in records if r.get("loss") is not None]
    if not losses:
        raise RuntimeError(f"no training loss in {metrics}")
    numbers = {"pairs": len(rows), "backend": backend, "steps_logged": len(losses),
               "losses": losses}
    probe = Path(cfg["output_dir"]) / PROBE_FILE
    if probe.is_file():
        numbers["engine"] = json.loads(probe.read_text())
    if cfg.get("deepspeed"):
        numbers["engine"] = verify_deepspeed_engine(cfg, numbers.get("engine"), probe)
    return numbers


def verify_deepspeed_engine(cfg: dict, engine: dict | None, probe: Path) -> dict:
    """The trainer trained with DeepSpeed's engine at the config's ZeRO stage."""
    stage = json.loads(Path(cfg["deepspeed"]).read_text())["zero_optimization"]["stage"]
    if engine is None:
        raise RuntimeError(f"no {probe}: the engine probe plugin did not run")
    if engine.get("engine") != DEEPSPEED_ENGINE or not engine.get("is_deepspeed_enabled"):
        raise RuntimeError(f"trained with {engine.get('engine')}, not DeepSpeed's engine "
                           f"(deepspeed: {cfg['deepspeed']} was dropped)")
    if engine.get("zero_stage") != stage:
        raise RuntimeError(f"DeepSpeed engine at ZeRO stage {engine.get('zero_stage')}, the "
                           f"config says {stage}")
    return engine


def missing(step: str) -> list[str]:
    return [name for name in NEEDS[step] if importlib.util.find_spec(name) is None]


def launch(step: str, cfg_path: Path, work: Path) -> tuple[int, Path, float]:
    """(exit status, log, seconds) of the step's training command."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), str(REPO / "scripts"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = work / f"{step}.log"
    started = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.run(command(step, cfg_path), cwd=work, env=env, stdout=handle,
                              stderr=subprocess.STDOUT)
    return proc.returncode, log, round(time.perf_counter() - started, 1)


def expect_cpu_refusal(step: str, cfg_path: Path, work: Path) -> None:
    """Self-test of a DeepSpeed step: the same launch on CPU ends in the plugin's one-line
    refusal (a Skip), never in training."""
    code, log, seconds = launch(step, cfg_path, work)
    text = log.read_text(errors="replace")
    refusal = next((line for line in text.splitlines() if CPU_REFUSAL in line), None)
    if code == 0 or refusal is None:
        print("\n".join(text.strip().splitlines()[-25:]))
        raise RuntimeError(f"the DeepSpeed launch on CPU was not refused (exit {code}, {log})")
    raise Skip(f"self-test on CPU: DeepSpeed needs CUDA; the launch was refused in one line "
               f"as it must be ({seconds} s)")


def run_step(step: str, mode, work: Path, models: dict[str, Path]) -> tuple[str, dict]:
    if mode.self_test and step in GPU_ONLY:
        raise Skip(f"self-test on CPU: {GPU_ONLY[step]}")
    if mode.self_test and step in DEEPSPEED_STEPS:
        absent = missing("axolotl-lora")  # the refusal needs Axolotl, not DeepSpeed
        if absent:
            raise Skip(f"not installed here: {', '.join(absent)} (docs/gpu.md: tier 2 wheels)")
        expect_cpu_refusal(step, write_config(step, work, model_for(step, models), True), work)
    absent = missing(step)
    if absent:
        raise Skip(f"not installed here: {', '.join(absent)} (docs/gpu.md: tier 2 wheels)")
    cfg_path = write_config(step, work, model_for(step, models), mode.self_test)
    code, log, seconds = launch(step, cfg_path, work)
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-25:]
        print("\n".join(tail))
        last = next((line for line in reversed(tail) if line.strip()), "")
        raise RuntimeError(f"axolotl.cli.train exited {code} ({log}): {last}")
    numbers = {"train_wall_s": seconds, **verify(cfg_path)}
    losses = numbers["losses"]
    engine = numbers.get("engine") or {}
    on = (f", DeepSpeedEngine ZeRO-{engine['zero_stage']}"
          if engine.get("zero_stage") is not None else "")
    return (f"{numbers['pairs']} pairs ({numbers['backend']}), {len(losses)} steps, loss "
            f"{losses[0]:.2f} -> {losses[-1]:.2f}{on}, {seconds} s wall"), numbers
