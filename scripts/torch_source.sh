#!/usr/bin/env bash
# Where scripts/setup_env.sh installs torch from. Prints the extra pip arguments (none, or
# `--index-url URL`) on stdout and says which source it chose on stderr:
#   - an NVIDIA GPU answers `nvidia-smi`: the default index (PyPI's torch is the CUDA build);
#   - no NVIDIA GPU: PyTorch's CPU wheel index (a CUDA build would be ~3 GB of unused
#     libraries, and Axolotl's CUDA-only paths fail on it without a driver);
#   - no NVIDIA GPU and that index cannot be reached: the default index (pip's configured
#     sources, which may hold a local CPU wheel; on plain PyPI it is the CUDA build).
#   TORCH_CPU_INDEX overrides the CPU index URL; PYTHON is the interpreter used to probe it.
set -euo pipefail
cpu_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
python="${PYTHON:-python3}"

if nvidia-smi >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found: torch from the default index (CUDA build)" >&2
elif "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)' \
  "${cpu_index%/}/torch/" >/dev/null 2>&1; then
  echo "setup: no NVIDIA GPU: torch from PyTorch's CPU wheel index $cpu_index" >&2
  echo "--index-url $cpu_index"
else
  echo "setup: no NVIDIA GPU, and $cpu_index cannot be reached: torch from the default" \
    "index (pip's configured sources; on plain PyPI that is the CUDA build)" >&2
fi
