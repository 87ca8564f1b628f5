#!/usr/bin/env bash
# Set up rt3d-iree from nothing: a virtual environment in .venv with the pinned toolchain
# (torch 2.13.0 CPU, torch-mlir, IREE compiler and runtime 3.13.0) and test tools.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull GBs of CUDA wheels.
"$VPY" -m pip install -q torch==2.13.0
"$VPY" -m pip install -q -e '.[test]'
"$VPY" -c "import torch, torch_mlir, iree.compiler, iree.runtime; print('rt3d-iree environment ready: torch', torch.__version__)"
