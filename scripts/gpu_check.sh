#!/usr/bin/env bash
# The GPU path on ONE GPU, in one command of under 10 minutes; no network, no model download.
#   Tier 1 (torch + transformers + TRL/datasets wheels; never Axolotl): random-weight models with
#     real shapes (SmolLM2-135M, a ~1.2B Llama) built on the GPU; the project's sampler in bf16
#     against the naive per-prompt generate loop; 1 rank vs 2 simulated ranks give byte-identical
#     pairs; a TRL IPO training step (full fine-tune, then LoRA) with step time and peak memory.
#   Tier 2 (Axolotl installed): python3 -m axolotl.cli.train with rl: ipo on the random 1.2B
#     model: LoRA, QLoRA (bitsandbytes); DeepSpeed ZeRO-2 and ZeRO-3 through `accelerate launch`
#     on one GPU, LoRA (1.2B) and full fine-tune (SmolLM2 shape), each passing only if the
#     trainer's engine is DeepSpeed's at that stage; QLoRA with vLLM sampling. A step whose
#     packages are missing is SKIP with their names.
# Every step: PASS / FAIL / SKIP with the reason, its own timeout, and one shared time budget;
# a table at the end. With $OUT set: $OUT/gpu_check.md (table), gpu_check.json (numbers),
# gpu_check.log. Exit status 1 if a step failed.
#
#   bash scripts/gpu_check.sh              on a GPU machine (python3 = the one with torch)
#   bash scripts/gpu_check.sh --self-test  the same steps on CPU with tiny models (CI runs it)
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET (seconds; 540 GPU, 1800 self-test),
# GPU_CHECK_WORK (scratch folder; default a new temporary one), GPU_CHECK_STEPS (names to run).
set -uo pipefail
cd "$(dirname "$0")/.."
self_test=""
budget="${GPU_CHECK_BUDGET:-540}"
scale=1
if [ "${1:-}" = "--self-test" ]; then
  self_test="--self-test"
  budget="${GPU_CHECK_BUDGET:-1800}"
  scale=4  # a CPU runner shared with other jobs is slow; the counts are small anyway
elif [ $# -gt 0 ]; then
  echo "usage: bash scripts/gpu_check.sh [--self-test]" >&2
  exit 2
fi
python="${PYTHON:-python3}"
work="${GPU_CHECK_WORK:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$work"
: >"$work/steps.tsv"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled \
  AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"   # one GPU, even on a bigger node
# name:timeout in seconds, in run order
steps=(env:60 models:150 sampler-smollm2:120 sampler-llama1b:120 ranks:120
  trl-ipo-smollm2:120 trl-ipo-llama1b-lora:150
  axolotl-lora:200 axolotl-qlora:200 axolotl-zero2-lora:200 axolotl-zero2-full:200
  axolotl-zero3-lora:200 axolotl-zero3-full:200 axolotl-vllm:300)

run_step() {  # NAME LIMIT: one step under its timeout, its line appended to steps.tsv
  local name="$1" limit="$2" t0=$SECONDS rc status reason=""
  echo "== $name (timeout ${limit}s)"
  timeout --kill-after=10 "$limit" "$python" scripts/gpu_check.py "$name" --work "$work" $self_test
  rc=$?
  case $rc in
    0) status=PASS ;;
    3) status=SKIP ;;
    124 | 137) status=FAIL reason="timed out after ${limit}s" ; echo "== $name: FAIL: $reason" ;;
    *) status=FAIL reason="exit $rc" ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$reason" "$((SECONDS - t0))" >>"$work/steps.tsv"
}

run_all() {
  echo "gpu_check ${self_test:-on GPU}: work $work, budget ${budget}s, $("$python" --version 2>&1)"
  [ -z "$self_test" ] && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader 2>/dev/null
  start=$SECONDS
  for entry in "${steps[@]}"; do
    name="${entry%%:*}"
    limit=$(("${entry##*:}" * scale))
    if [ -n "${GPU_CHECK_STEPS:-}" ] && [[ " $GPU_CHECK_STEPS " != *" $name "* ]]; then
      continue
    fi
    left=$((budget - (SECONDS - start) - 10))
    [ "$left" -lt "$limit" ] && limit="$left"
    if [ "$limit" -lt 15 ]; then
      printf '%s\tSKIP\ttime budget of %ss spent\t0\n' "$name" "$budget" >>"$work/steps.tsv"
      echo "== $name: SKIP: time budget of ${budget}s spent"
      continue
    fi
    run_step "$name" "$limit"
  done

  echo
  echo "gpu_check finished in $((SECONDS - start))s"
  "$python" scripts/gpu_check.py report --work "$work" ${OUT:+--out "$OUT"}
  case $? in
    0) return 0 ;;
    4) return 1 ;;  # a step failed
    *) cat "$work/steps.tsv"  # the report itself broke: the raw results
       if grep -q $'\tFAIL\t' "$work/steps.tsv"; then return 1; fi ;;
  esac
}

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  run_all 2>&1 | tee "$OUT/gpu_check.log"
  exit "${PIPESTATUS[0]}"
fi
run_all
