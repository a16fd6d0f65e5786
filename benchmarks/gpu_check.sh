#!/usr/bin/env bash
# One prepared GPU check for a machine with an NVIDIA GPU, under 8 minutes: installs what
# it needs into .venv (vLLM's CUDA build included) and prints one table
# (benchmarks/gpu_check.py says what each row measures). Run from the repository root:
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null || { echo "gpu_check: no NVIDIA GPU here" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PY=.venv/bin/python
[ -x "$PY" ] || python3 -m venv .venv
"$PY" -m pip install -q --upgrade pip
"$PY" -c "import vllm" 2>/dev/null || "$PY" -m pip install -q -e '.[dev,vllm]'
export TOKENIZERS_PARALLELISM=false
timeout 470 "$PY" benchmarks/gpu_check.py "$@"
