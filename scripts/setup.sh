#!/usr/bin/env bash
# Set up rt3d-iree from nothing: system packages for the phone and GPU targets (qemu-user,
# the aarch64 C library, Mesa's software Vulkan driver), a virtual environment in .venv with
# the pinned toolchain (torch 2.13.0 CPU, torch-mlir, IREE compiler and runtime 3.13.0) and
# test tools, and the aarch64 IREE tools. Idempotent: a second run only checks.
# Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# System packages: qemu-user + libc6:arm64 + libstdc++6:arm64 run aarch64 code here;
# mesa-vulkan-drivers (lavapipe) + libvulkan1 run Vulkan modules without a GPU;
# cmake + clang build the KGS microkernel's LLVM bitcode (plugins/ukernel).
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v clang-14 >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 || need+=(clang-14)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
[ -e /lib/ld-linux-aarch64.so.1 ] || need+=(libc6:arm64)
ls /usr/lib/aarch64-linux-gnu/libstdc++.so.6 >/dev/null 2>&1 || need+=(libstdc++6:arm64)
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
ls /usr/lib/x86_64-linux-gnu/libvulkan.so.1 >/dev/null 2>&1 || need+=(libvulkan1)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing system packages: ${need[*]}" >&2
    echo "setup: run as root: dpkg --add-architecture arm64 && apt-get update && apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  dpkg --add-architecture arm64
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull GBs of CUDA wheels.
"$VPY" -m pip install -q torch==2.13.0
# Editable (scikit-build-core's import hook): rt3d_iree and rt3d_iree.passes (the passes/ folder)
# import from this tree, so edits take effect without reinstalling. It runs no CMake (pyproject.toml).
"$VPY" -m pip install -q -e '.[test,onnx]'  # onnx: ONNX Runtime for `rt3d report`
# The KGS microkernel as LLVM bitcode per ISA (AVX-512, AVX2, NEON), found by rt3d_iree/ukernels.py.
# The top-level CMakeLists.txt builds it into plugins/ukernel/build (a wheel carries it as package
# data instead: pip install . ; scripts/check_wheel.sh checks that).
cmake -S . -B build >/dev/null
cmake --build build
# aarch64 iree-run-module / iree-benchmark-module from the manylinux aarch64 runtime wheel.
.venv/bin/rt3d fetch-tools
"$VPY" -c "import torch, torch_mlir, iree.compiler, iree.runtime; print('rt3d-iree environment ready: torch', torch.__version__)"
