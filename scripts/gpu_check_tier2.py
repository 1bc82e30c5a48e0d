"""Tier 2 of scripts/gpu_check.sh: `python3 -m axolotl.cli.train` with `rl: ipo` and the plugin
on the random ~1.2B Llama (the tiny model in the self-test), each run checked afterwards.

    axolotl-lora   LoRA, rejected answers sampled with backend transformers
    axolotl-qlora  the same with QLoRA (bitsandbytes 4-bit)
    axolotl-zero2  LoRA + DeepSpeed ZeRO-2 without CPU offload, one process (accelerate)
    axolotl-vllm   QLoRA, rejected answers sampled with backend vllm

A step whose packages are missing is a SKIP that names them.
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

REPO = Path(__file__).resolve().parents[1]
ZERO2 = REPO / "example_configs" / "deepspeed" / "zero2-no-offload.json"
NEEDS = {
    "axolotl-lora": ("axolotl",),
    "axolotl-qlora": ("axolotl", "bitsandbytes"),
    "axolotl-zero2": ("axolotl", "deepspeed"),
    "axolotl-vllm": ("axolotl", "bitsandbytes", "vllm"),
}
GPU_ONLY = {"axolotl-zero2": "DeepSpeed through Axolotl needs CUDA (nccl)",
            "axolotl-vllm": "vLLM needs a CUDA GPU"}


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
        "plugins": ["axolotl_ipo.IPOPlugin"],
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
    if step == "axolotl-zero2":
        cfg["deepspeed"] = str(ZERO2)
    return cfg


def write_config(step: str, work: Path, model: Path, self_test: bool) -> Path:
    data = work / "sft.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in sft_rows()), encoding="utf-8")
    path = work / f"{step}.yml"
    path.write_text(yaml.safe_dump(config(step, work, model, data, self_test), sort_keys=False))
    return path


def command(step: str, cfg_path: Path) -> list[str]:
    if step == "axolotl-zero2":
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
    return {"pairs": len(rows), "backend": backend, "steps_logged": len(losses),
            "losses": losses}


def missing(step: str) -> list[str]:
    return [name for name in NEEDS[step] if importlib.util.find_spec(name) is None]


def run_step(step: str, mode, work: Path, models: dict[str, Path]) -> tuple[str, dict]:
    from gpu_check import Skip

    if mode.self_test and step in GPU_ONLY:
        raise Skip(f"self-test on CPU: {GPU_ONLY[step]}")
    absent = missing(step)
    if absent:
        raise Skip(f"not installed here: {', '.join(absent)} (docs/gpu.md: tier 2 wheels)")
    cfg_path = write_config(step, work, models["llama1b"], mode.self_test)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = work / f"{step}.log"
    started = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.run(command(step, cfg_path), cwd=work, env=env, stdout=handle,
                              stderr=subprocess.STDOUT)
    seconds = round(time.perf_counter() - started, 1)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-25:]
        print("\n".join(tail))
        last = next((line for line in reversed(tail) if line.strip()), "")
        raise RuntimeError(f"axolotl.cli.train exited {proc.returncode} ({log}): {last}")
    numbers = {"train_wall_s": seconds, **verify(cfg_path)}
    losses = numbers["losses"]
    return (f"{numbers['pairs']} pairs ({numbers['backend']}), {len(losses)} steps, loss "
            f"{losses[0]:.2f} -> {losses[-1]:.2f}, {seconds} s wall"), numbers
