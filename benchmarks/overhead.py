"""What the plugin costs over plain Axolotl, and what IPO costs over SFT, measured in one run.

    python benchmarks/overhead.py [--model .cache/models/SmolLM2-135M-Instruct] [--runs 5]
        [--steps 5] [--json FILE]

(a) plain Axolotl, `rl: dpo` + `dpo_loss_type: ["ipo"]`, no plugin;  (b) this plugin, `rl: ipo`.
Same preference pairs, model, LoRA, steps; runs alternate a b a b ... in fresh processes through
`python -m axolotl.cli.train`. Time per step is the trainer's own `train_runtime / steps` (start-up
excluded); peak memory is the process's max RSS. Prints the median ratios b/a (targets: time
<= 1.03, memory <= 1.02) and the peak memory of IPO+LoRA over SFT+LoRA (target <= 1.15: the
reference is the base model with adapters disabled, not a second copy).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from offline_env import OFFLINE_ENV

RUNNER = """
import resource, runpy, sys
sys.argv = ["axolotl.cli.train", sys.argv[1]]
try:
    runpy.run_module("axolotl.cli.train", run_name="__main__")
except SystemExit as stop:
    if stop.code not in (None, 0):
        raise
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
"""
ENV = OFFLINE_ENV
PROMPTS = ["What is the capital of France?", "Add 2 and 3.", "Who wrote Hamlet?",
           "Name a primary colour.", "What is the boiling point of water at sea level?"]


def write_data(work: Path) -> tuple[Path, Path]:
    prefs, sft = work / "prefs.jsonl", work / "sft.jsonl"
    rows = [
        (f"{prompt} (variant {i})", f"A short correct answer {i}.", f"A wrong answer {i}, longer.")
        for i in range(8)
        for prompt in PROMPTS
    ]
    prefs.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n"
                             for p, c, r in rows))
    sft.write_text("".join(json.dumps({"instruction": p, "input": "", "output": c}) + "\n"
                           for p, c, _ in rows))
    return prefs, sft


def config(model: str, work: Path, name: str, steps: int, data: Path, **keys) -> Path:
    cfg = {
        "base_model": model, "datasets": [{"path": str(data), "split": "train", "type": "chatml"}],
        "dataset_prepared_path": str(work / f"prepared-{name}"),
        "output_dir": str(work / f"out-{name}"), "val_set_size": 0, "sequence_len": 256,
        "adapter": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
        "lora_target_linear": True, "micro_batch_size": 4, "gradient_accumulation_steps": 1,
        "max_steps": steps, "num_epochs": 1, "learning_rate": 1e-4, "optimizer": "adamw_torch",
        "lr_scheduler": "constant", "logging_steps": 1, "save_strategy": "no", "seed": 42,
        "bf16": False, "fp16": False, "tf32": False,
        # Axolotl turns its Triton LoRA kernels on for SFT by default; they need CUDA.
        "lora_mlp_kernel": False, "lora_qkv_kernel": False, "lora_o_kernel": False, **keys,
    }
    path = work / f"{name}.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(path: Path, steps: int) -> tuple[float, float]:
    """(seconds per training step, peak RSS in MiB) of one fresh training process."""
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(path)], capture_output=True,
                          text=True, env={**os.environ, **ENV}, timeout=900)
    log = proc.stdout + proc.stderr
    runtime = re.search(r"'train_runtime': '?([0-9.]+)", log)
    rss = re.search(r"MAXRSS_KB (\d+)", log)
    if proc.returncode != 0 or not runtime or not rss:
        raise SystemExit(f"training {path} failed (exit {proc.returncode}):\n{log[-3000:]}")
    return float(runtime.group(1)) / steps, int(rss.group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=".cache/models/SmolLM2-135M-Instruct")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ipo-overhead-"))
    prefs, sft = write_data(work)
    model = str(Path(args.model).resolve())
    plain = config(model, work, "plain", args.steps, prefs, rl="dpo", dpo_loss_type=["ipo"],
                   rl_beta=0.1)
    plugin = config(model, work, "plugin", args.steps, prefs, rl="ipo", ipo_tau=0.1,
                    plugins=["axolotl_ipo.IPOPlugin"])
    sft_cfg = config(model, work, "sft", args.steps, sft)
    sft_cfg.write_text(sft_cfg.read_text().replace("type: chatml", "type: alpaca"))

    results: dict[str, list[tuple[float, float]]] = {"plain": [], "plugin": [], "sft": []}
    for i in range(args.runs):
        for name, path in (("plain", plain), ("plugin", plugin)):
            results[name].append(run(path, args.steps))
            step, rss = results[name][-1]
            print(f"run {i + 1} {name:6s}: {step:.3f} s/step, peak {rss:.0f} MiB", flush=True)
    for i in range(2):
        results["sft"].append(run(sft_cfg, args.steps))
        print(f"run {i + 1} sft   : {results['sft'][-1][0]:.3f} s/step, "
              f"peak {results['sft'][-1][1]:.0f} MiB", flush=True)

    time_ratios = [b[0] / a[0] for a, b in zip(results["plain"], results["plugin"], strict=True)]
    mem_ratios = [b[1] / a[1] for a, b in zip(results["plain"], results["plugin"], strict=True)]
    ipo_vs_sft = (statistics.median(r[1] for r in results["plugin"])
                  / statistics.median(r[1] for r in results["sft"]))
    summary = {
        "model": model, "runs": args.runs, "steps": args.steps,
        "median_s_per_step": {k: statistics.median(r[0] for r in v) for k, v in results.items()},
        "median_peak_mib": {k: statistics.median(r[1] for r in v) for k, v in results.items()},
        "plugin_over_plain_time": statistics.median(time_ratios),
        "plugin_over_plain_memory": statistics.median(mem_ratios),
        "ipo_lora_over_sft_lora_memory": ipo_vs_sft,
        "time_ratios": time_ratios, "memory_ratios": mem_ratios,  # per alternating pair
    }
    print("\n| measure | median ratio | target |\n|---|---|---|")
    print(f"| time per step, plugin `rl: ipo` / plain Axolotl | "
          f"{summary['plugin_over_plain_time']:.3f} | <= 1.03 |")
    print(f"| peak memory, plugin / plain | {summary['plugin_over_plain_memory']:.3f} | <= 1.02 |")
    print(f"| peak memory, IPO+LoRA / SFT+LoRA | {ipo_vs_sft:.3f} | <= 1.15 |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
