"""What the tests share: the offline environment, a script loader, config builders for the tiny
model, and a runner for the real CLIs (`axolotl-ipo`, `python -m axolotl.cli.*`)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


# -- scripts and benchmarks ------------------------------------------------------------------


def load_script(path: str) -> ModuleType:
    """A script of the repository (``benchmarks/x.py``, ``research/study/x.py``,
    ``scripts/y.py``) as a module, with its folder on ``sys.path`` as when it runs as a script
    (it imports its siblings)."""
    script = REPO / path
    folder = str(script.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(script.stem)


# -- the offline environment -----------------------------------------------------------------

OFFLINE_ENV: dict[str, str] = load_script("benchmarks/offline_env.py").OFFLINE_ENV


# -- config builders -------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


PREFERENCE_ROWS = [
    ("What is the capital of France?", "Paris.", "London."),
    ("Add 2 and 3.", "5.", "7."),
    ("Who wrote Hamlet?", "Shakespeare.", "Dickens."),
    ("Write a poem about the sea.", "Waves roll in.", "The sea is dry."),
]


def write_preference_file(path: Path, copies: int = 4) -> Path:
    rows = [
        {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        for _ in range(copies)
        for prompt, chosen, rejected in PREFERENCE_ROWS
    ]
    return write_jsonl(path, rows)


def base_config(model_dir: Path, work: Path, **overrides) -> dict:
    """A LoRA, fp32, CPU config for the tiny model; `rl` and plugin keys come from overrides."""
    cfg = {
        "base_model": str(model_dir),
        "plugins": ["axolotl_ipo.IPOPlugin"],
        "datasets": [
            {
                "path": str(write_preference_file(work / "prefs.jsonl")),
                "split": "train",
                "type": "chatml",
            }
        ],
        "dataset_prepared_path": str(work / "prepared"),
        "output_dir": str(work / "out"),
        "val_set_size": 0,
        "sequence_len": 128,
        "adapter": "lora",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_target_linear": True,
        "micro_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_steps": 3,
        "num_epochs": 1,
        "learning_rate": 1e-3,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "logging_steps": 1,
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "save_strategy": "no",
        "seed": 42,
    }
    cfg.update(overrides)
    return cfg


SFT_ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Who wrote Hamlet?", "input": "", "output": "Shakespeare."},
    {"instruction": "Write a poem about the sea.", "input": "", "output": "Waves roll in."},
    {"instruction": "Summarise:", "input": "The fox jumps over the dog.", "output": "A fox jumps."},
    {"instruction": "What is two plus two?", "input": "", "output": "Four."},
    {"instruction": "A row without its gold answer", "input": ""},
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    {"instruction": "Say hello.", "input": "", "output": "Hello!"},
]


def sft_config(model_dir: Path, work: Path, **overrides) -> dict:
    """`rl: ipo` on alpaca SFT rows (one invalid): the plugin samples the rejected answers."""
    path = write_jsonl(work / "sft.jsonl", SFT_ROWS)
    # pure IPO: its starting loss is exactly (1/(2*tau))^2 = 25 (the defaults add an NLL term)
    cfg = base_config(
        model_dir, work, rl="ipo", ipo_tau=0.1, ipo_sft_weight=0.0,
        datasets=[{"path": str(path), "type": "alpaca"}],
        rejection_sampling={"max_new_tokens": 12, "batch_size": 3},
    )
    cfg.update(overrides)
    return cfg


def write_config(work: Path, cfg: dict) -> Path:
    path = work / "config.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


# -- the real CLIs ---------------------------------------------------------------------------


def axolotl_ipo(*args: str) -> list[str]:
    """`axolotl-ipo ARGS` as a user runs it: the console script of this environment."""
    return [shutil.which("axolotl-ipo", path=str(Path(sys.executable).parent)), *args]


def axolotl(command: str, config: Path, *args: str) -> list[str]:
    """`python -m axolotl.cli.COMMAND CONFIG ARGS` (train, preprocess) in this environment."""
    return [sys.executable, "-m", f"axolotl.cli.{command}", str(config), *args]


def run(argv: list[str], work: Path, extra_env: dict | None = None, timeout: int = 300):
    """(exit code, stdout + stderr) of a command run in ``work`` with the offline environment and
    this checkout first on PYTHONPATH; the log is also left in ``work/run.log``."""
    # the checkout under test first, whichever checkout the environment was installed from
    pythonpath = os.pathsep.join([str(REPO), str(TESTS_DIR)])
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": pythonpath, **(extra_env or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        argv, cwd=work, env=env, capture_output=True, text=True, timeout=timeout
    )
    log = proc.stdout + proc.stderr
    (work / "run.log").write_text(log, encoding="utf-8")
    return proc.returncode, log


def read_metrics(output_dir: Path) -> tuple[dict, list[dict]]:
    """(the train_begin record, the per-step training logs) from the plugin's metrics file."""
    records = read_jsonl(output_dir / "ipo_metrics.jsonl")
    begin = next(r for r in records if r.get("event") == "train_begin")
    steps = [r for r in records if "loss" in r]
    return begin, steps
