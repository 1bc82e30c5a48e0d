"""What the plugin costs over plain Axolotl, and what IPO costs over SFT, measured in one run.

    python benchmarks/overhead.py [--model .cache/models/SmolLM2-135M-Instruct] [--runs 5]
        [--steps 5] [--json FILE] [--profile DIR]

(a) plain Axolotl, `rl: dpo` + `dpo_loss_type: ["ipo"]`, no plugin;  (b) this plugin, `rl: ipo`.
Same preference pairs, model, LoRA, steps; pairs of runs in the order a b, b a, a b ... (so
neither variant always runs second) in fresh processes through
`python -m axolotl.cli.train`. Time per step is the trainer's own `train_runtime / steps` (start-up
excluded), split at the trainer's own step callbacks into the time inside a step (forward,
backward, optimizer) and between steps (logging, callbacks, the next batch), first two steps
left out; peak memory is the process's max RSS. `--profile DIR` adds one torch.profiler run of
each and prints the ops whose self time or call count differ most. Prints the median ratios
b/a (targets: time <= 1.03, memory <= 1.02) and the peak memory of IPO+LoRA over SFT+LoRA
(target <= 1.15: the reference is the base model with adapters disabled, not a second copy).
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
from dataclasses import dataclass
from pathlib import Path

import yaml
from offline_env import OFFLINE_ENV

RUNNER = """
import json, os, resource, runpy, sys, time
from transformers.trainer_callback import CallbackHandler

MARKS = []  # ("begin" | "end", perf_counter) of every optimizer step, from the trainer's loop
PROFILE = os.environ.get("IPO_OVERHEAD_PROFILE")  # file stem: torch.profiler from step 3 to the end
profiler = None
step_begin, step_end, train_end = (CallbackHandler.on_step_begin, CallbackHandler.on_step_end,
                                   CallbackHandler.on_train_end)

def on_step_begin(self, args, state, control):
    global profiler
    if PROFILE and profiler is None and state.global_step == 2:
        import torch.profiler
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                          with_flops=True)
        profiler.__enter__()
    MARKS.append(("begin", time.perf_counter()))
    return step_begin(self, args, state, control)

def on_step_end(self, args, state, control):
    MARKS.append(("end", time.perf_counter()))
    return step_end(self, args, state, control)

def on_train_end(self, args, state, control):
    if profiler is not None:
        profiler.__exit__(None, None, None)
        events = profiler.key_averages()
        with open(PROFILE + ".txt", "w") as out:
            out.write(events.table(sort_by="self_cpu_time_total", row_limit=40))
        with open(PROFILE + ".json", "w") as out:
            json.dump({e.key: [e.count, e.self_cpu_time_total, e.flops] for e in events}, out)
    return train_end(self, args, state, control)

CallbackHandler.on_step_begin, CallbackHandler.on_step_end = on_step_begin, on_step_end
CallbackHandler.on_train_end = on_train_end
sys.argv = ["axolotl.cli.train", sys.argv[1]]
try:
    runpy.run_module("axolotl.cli.train", run_name="__main__")
except SystemExit as stop:
    if stop.code not in (None, 0):
        raise
print("STEP_MARKS", json.dumps(MARKS), flush=True)
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


SKIP_STEPS = 2  # the first steps allocate and warm up; the step split ignores them


@dataclass
class Run:
    s_per_step: float  # the trainer's train_runtime / steps
    peak_mib: float
    inside_s: float  # median on_step_begin -> on_step_end: forward, backward, optimizer step
    between_s: float  # median on_step_end -> next on_step_begin: logging, callbacks, next batch


def pair_order(i: int) -> tuple[str, str]:
    """Which variant runs first in pair i: alternating, so an order effect (a warmer machine,
    page cache) cancels over the pairs instead of adding to one variant."""
    return ("plain", "plugin") if i % 2 == 0 else ("plugin", "plain")


def step_split(marks: list[tuple[str, float]], skip: int = SKIP_STEPS) -> tuple[float, float]:
    """(median time inside a step, median time between steps) from the loop's step marks."""
    begins = [t for kind, t in marks if kind == "begin"]
    ends = [t for kind, t in marks if kind == "end"]
    if len(begins) != len(ends) or len(begins) < skip + 2:
        raise ValueError(f"need {skip + 2} or more whole steps, got marks {marks!r}")
    inside = [end - begin for begin, end in zip(begins[skip:], ends[skip:], strict=True)]
    between = [begin - end for end, begin in zip(ends[skip:-1], begins[skip + 1:], strict=True)]
    return statistics.median(inside), statistics.median(between)


def run(path: Path, steps: int, profile: Path | None = None) -> Run:
    """One fresh training process: its time per step, step split and peak RSS in MiB."""
    env = {**os.environ, **ENV}
    if profile is not None:
        env["IPO_OVERHEAD_PROFILE"] = str(profile)
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(path)], capture_output=True,
                          text=True, env=env, timeout=900)
    log = proc.stdout + proc.stderr
    runtime = re.search(r"'train_runtime': '?([0-9.]+)", log)
    rss = re.search(r"MAXRSS_KB (\d+)", log)
    marks = re.search(r"STEP_MARKS (.*)", log)
    if proc.returncode != 0 or not runtime or not rss or not marks:
        raise SystemExit(f"training {path} failed (exit {proc.returncode}):\n{log[-3000:]}")
    inside, between = step_split(json.loads(marks.group(1)))
    return Run(float(runtime.group(1)) / steps, int(rss.group(1)) / 1024, inside, between)


def profile_diff(plain: dict[str, list[float]], plugin: dict[str, list[float]],
                 rows: int = 15) -> list[tuple[str, int, int, float, float, bool]]:
    """Ops by |self-time difference|, largest first, then every other op whose call count or
    FLOPs differ: (op, calls plain, calls plugin, self ms plain, self ms plugin, same FLOPs)."""
    table = []
    for op in sorted(set(plain) | set(plugin)):
        calls_a, us_a, flops_a = plain.get(op, [0, 0.0, 0])
        calls_b, us_b, flops_b = plugin.get(op, [0, 0.0, 0])
        table.append((op, int(calls_a), int(calls_b), us_a / 1000, us_b / 1000,
                      flops_a == flops_b))
    table.sort(key=lambda row: abs(row[4] - row[3]), reverse=True)
    return table[:rows] + [row for row in table[rows:] if row[1] != row[2] or not row[5]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=".cache/models/SmolLM2-135M-Instruct")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path, help="then one more run of each under "
                        "torch.profiler (steps 3 to the end); tables and their op diff go here")
    args = parser.parse_args()
    if args.steps < SKIP_STEPS + 2:
        parser.error(f"--steps must be at least {SKIP_STEPS + 2} (the first {SKIP_STEPS} are "
                     "warm-up and not split)")
    work = Path(tempfile.mkdtemp(prefix="ipo-overhead-"))
    prefs, sft = write_data(work)
    model = str(Path(args.model).resolve())
    plain = config(model, work, "plain", args.steps, prefs, rl="dpo", dpo_loss_type=["ipo"],
                   rl_beta=0.1)
    plugin = config(model, work, "plugin", args.steps, prefs, rl="ipo", ipo_tau=0.1,
                    plugins=["axolotl_ipo.IPOPlugin"])
    sft_cfg = config(model, work, "sft", args.steps, sft)
    sft_cfg.write_text(sft_cfg.read_text().replace("type: chatml", "type: alpaca"))

    results: dict[str, list[Run]] = {"plain": [], "plugin": [], "sft": []}

    def record(name: str, path: Path, i: int) -> None:
        r = run(path, args.steps)
        results[name].append(r)
        print(f"run {i + 1} {name:6s}: {r.s_per_step:.3f} s/step (inside {r.inside_s:.3f}, "
              f"between {r.between_s:.3f}), peak {r.peak_mib:.0f} MiB", flush=True)

    variants = {"plain": plain, "plugin": plugin}
    for i in range(args.runs):
        for name in pair_order(i):
            record(name, variants[name], i)
    for i in range(2):
        record("sft", sft_cfg, i)

    def ratios(field: str) -> list[float]:
        return [getattr(b, field) / getattr(a, field)
                for a, b in zip(results["plain"], results["plugin"], strict=True)]

    def medians(field: str) -> dict[str, float]:
        return {k: statistics.median(getattr(r, field) for r in v) for k, v in results.items()}

    time_ratios, mem_ratios = ratios("s_per_step"), ratios("peak_mib")
    ipo_vs_sft = medians("peak_mib")["plugin"] / medians("peak_mib")["sft"]
    summary = {
        "model": model, "runs": args.runs, "steps": args.steps,
        "median_s_per_step": medians("s_per_step"),
        "median_peak_mib": medians("peak_mib"),
        # steps after the first SKIP_STEPS, split at the trainer's on_step_begin/on_step_end
        "median_inside_step_s": medians("inside_s"),
        "median_between_steps_s": medians("between_s"),
        "plugin_over_plain_time": statistics.median(time_ratios),
        "plugin_over_plain_memory": statistics.median(mem_ratios),
        "plugin_over_plain_inside_step": statistics.median(ratios("inside_s")),
        "plugin_over_plain_between_steps": statistics.median(ratios("between_s")),
        "ipo_lora_over_sft_lora_memory": ipo_vs_sft,
        "time_ratios": time_ratios, "memory_ratios": mem_ratios,  # per alternating pair
        "inside_step_ratios": ratios("inside_s"), "between_steps_ratios": ratios("between_s"),
    }
    print("\n| measure | median ratio | target |\n|---|---|---|")
    print(f"| time per step, plugin `rl: ipo` / plain Axolotl | "
          f"{summary['plugin_over_plain_time']:.3f} | <= 1.03 |")
    print(f"| of which inside a step (forward, backward, optimizer) | "
          f"{summary['plugin_over_plain_inside_step']:.3f} | |")
    print(f"| of which between steps (logging, callbacks, next batch) | "
          f"{summary['plugin_over_plain_between_steps']:.3f} | |")
    print(f"| peak memory, plugin / plain | {summary['plugin_over_plain_memory']:.3f} | <= 1.02 |")
    print(f"| peak memory, IPO+LoRA / SFT+LoRA | {ipo_vs_sft:.3f} | <= 1.15 |")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        ops = {}
        for name, path in variants.items():
            run(path, args.steps, profile=args.profile / name)
            ops[name] = json.loads((args.profile / f"{name}.json").read_text())
        print(f"\ntorch.profiler, steps {SKIP_STEPS + 1}-{args.steps} of one run each "
              f"(tables: {args.profile}/plain.txt, plugin.txt)")
        print("| op | calls plain | calls plugin | self ms plain | self ms plugin | same FLOPs |")
        print("|---|---|---|---|---|---|")
        diff = profile_diff(ops["plain"], ops["plugin"])
        for op, calls_a, calls_b, ms_a, ms_b, same_flops in diff:
            print(f"| `{op}` | {calls_a} | {calls_b} | {ms_a:.1f} | {ms_b:.1f} | "
                  f"{'yes' if same_flops else 'NO'} |")
        flops = {name: sum(op[2] for op in table.values()) for name, table in ops.items()}
        same = all(ops["plain"].get(op, [0])[0] == ops["plugin"].get(op, [0])[0]
                   for op in set(ops["plain"]) | set(ops["plugin"]))
        print(f"every op called as often in both: {'yes' if same else 'NO'}; "
              f"FLOPs plugin / plain {flops['plugin'] / max(flops['plain'], 1):.4f}")
        summary["profile_diff"] = diff
        summary["profile_same_op_counts"] = same
        summary["profile_flops"] = flops
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))

if __name__ == "__main__":
    main()
