"""Configs and checks for scripts/gpu_check.sh (one GPU, SmolLM2-135M-Instruct, a few steps each).

    python scripts/gpu_check.py write --out DIR --model PATH   # SFT rows + one config per check
    python scripts/gpu_check.py verify CONFIG --backend NAME   # pairs sampled by NAME, IPO logged

The configs differ from the example configs only in scale: the same keys for QLoRA + sampling
with each backend and for DeepSpeed ZeRO-2, so tests/test_gpu_check.py validates them through
Axolotl on CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ZERO2 = REPO / "example_configs" / "deepspeed" / "zero2.json"
CHECKS = ("qlora-transformers", "qlora-vllm", "lora-zero2")


def sft_rows(n: int = 48) -> list[dict[str, str]]:
    """Arithmetic questions with their answers: deterministic alpaca SFT rows, no download."""
    return [
        {"instruction": f"What is {a} plus {b}? Answer with the number only.", "output": str(a + b)}
        for a, b in ((3 + i, 7 + 2 * i) for i in range(n))
    ]


def config(check: str, out: Path, model: str, data: Path) -> dict:
    backend = "vllm" if check.endswith("vllm") else "transformers"
    cfg = {
        "base_model": model,
        "plugins": ["axolotl_ipo.IPOPlugin"],
        "rl": "ipo",
        "ipo_tau": 0.1,
        "datasets": [{"path": str(data), "type": "alpaca"}],
        "rejection_sampling": {"backend": backend, "batch_size": 16, "max_new_tokens": 32,
                               "temperature": 0.7, "seed": 42},
        "dataset_prepared_path": str(out / check / "prepared"),
        "output_dir": str(out / check / "out"),
        "val_set_size": 0,
        "sequence_len": 256,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_target_linear": True,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_steps": 5,
        "num_epochs": 1,
        "learning_rate": 0.0001,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 42,
        "bf16": True,
        "tf32": True,
        "gradient_checkpointing": True,
        "attn_implementation": "sdpa",
    }
    if backend == "vllm":  # leave room for the CUDA context and a fast start on any GPU
        cfg["rejection_sampling"]["gpu_memory_utilization"] = 0.3
    if check.startswith("qlora"):
        cfg.update({"adapter": "qlora", "load_in_4bit": True})
    else:
        cfg.update({"adapter": "lora", "deepspeed": str(ZERO2)})
    return cfg


def write(out: Path, model: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = out / "sft.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in sft_rows()), encoding="utf-8")
    paths = []
    for check in CHECKS:
        path = out / f"{check}.yml"
        path.write_text(yaml.safe_dump(config(check, out, model, data), sort_keys=False))
        paths.append(path)
    return paths


def verify(config_path: Path, backend: str) -> str:
    """One line for the summary; raises SystemExit if the run left no evidence of its work."""
    cfg = yaml.safe_load(config_path.read_text())
    pairs = sorted(Path(cfg["dataset_prepared_path"]).glob("ipo_pairs/**/pairs.jsonl"))
    if not pairs:
        raise SystemExit(f"{config_path.name}: no pairs.jsonl under {cfg['dataset_prepared_path']}")
    rows = [json.loads(line) for line in pairs[-1].read_text().splitlines()]
    generators = {row["generator"].split(":")[0] for row in rows}
    if not rows or generators != {backend}:
        raise SystemExit(f"{config_path.name}: {len(rows)} pairs from {generators}, not {backend}")
    metrics = Path(cfg["output_dir"]) / "ipo_metrics.jsonl"
    losses = [json.loads(line).get("loss") for line in metrics.read_text().splitlines()
              ] if metrics.is_file() else []
    losses = [loss for loss in losses if loss is not None]
    if not losses:
        raise SystemExit(f"{config_path.name}: no training loss in {metrics}")
    return f"{len(rows)} pairs ({backend}), {len(losses)} logged steps, loss {losses[-1]:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    write_cmd = sub.add_parser("write", help="write the SFT data and one config per check")
    write_cmd.add_argument("--out", type=Path, required=True)
    write_cmd.add_argument("--model", required=True, help="a local HF model folder or hub id")
    verify_cmd = sub.add_parser("verify", help="check a finished run's pairs and losses")
    verify_cmd.add_argument("config", type=Path)
    verify_cmd.add_argument("--backend", choices=("transformers", "vllm"), required=True)
    args = parser.parse_args(argv)
    if args.command == "write":
        for path in write(args.out, args.model):
            print(path)
    else:
        print(verify(args.config, args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
