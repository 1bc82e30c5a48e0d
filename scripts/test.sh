#!/usr/bin/env bash
# Run the test suite against every supported Axolotl release (oldest and newest).
# Builds the two environments first if they are missing (scripts/setup_env.sh, ~3 min once);
# extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh 0.19.0 .venv
bash scripts/setup_env.sh 0.21.0 .venv-ax021
bash scripts/prepare_assets.sh .venv   # SmolLM2 + NQ-open for the slow real-model tests
export AXOLOTL_IPO_REQUIRE_SMOLLM2=1    # here a missing model fails those tests, never skips
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1
.venv/bin/ruff check .
status=0
for venv in .venv .venv-ax021; do
  echo "=== pytest with $("$venv/bin/python" -c 'import axolotl; print("axolotl", axolotl.__version__)')"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
done
exit $status
