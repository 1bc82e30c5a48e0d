#!/usr/bin/env bash
# Run the test suite against every supported Axolotl release (oldest and newest).
# Environments come from scripts/setup_env.sh; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1
.venv/bin/ruff check .
status=0
for venv in .venv .venv-ax021; do
  echo "=== pytest with $("$venv/bin/python" -c 'import axolotl; print("axolotl", axolotl.__version__)')"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
done
exit $status
