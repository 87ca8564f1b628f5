#!/usr/bin/env bash
# Check that a wheel of rt3d-iree carries the KGS microkernel: build the wheel
# (scikit-build-core runs CMake, which installs the bitcode as rt3d_iree/ukernel_bitcode/),
# install it into a fresh virtual environment, and from outside the source tree compile a
# small C3D through the microkernel (kernel="microkernel": an error if no bitcode is found),
# compare it with PyTorch and check that the bitcode came from the venv's site-packages.
# Exits non-zero on any failure; leaves nothing behind (temp dirs are removed).
# Usage: bash scripts/check_wheel.sh     (PYTHON=python3.x to choose the fresh venv's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
BUILD_PY=.venv/bin/python  # has pip; the build itself runs in pip's isolated environment
[ -x "$BUILD_PY" ] || BUILD_PY=$PY

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rt3d-check-wheel.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
start=$SECONDS

echo "check_wheel: building the wheel"
"$BUILD_PY" -m pip wheel -q --no-deps -w "$TMP/dist" .
WHEEL=$(ls "$TMP"/dist/rt3d_iree-*.whl)
"$BUILD_PY" - "$WHEEL" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
want = {f"rt3d_iree/ukernel_bitcode/kgs_conv3d_{isa}.bc" for isa in ("avx512", "avx2", "neon")}
want |= {"rt3d_iree/passes/__init__.py", "rt3d_iree/passes/kgs/__init__.py", "rt3d_iree/ukernels.py"}
missing = sorted(want - names)
assert not missing, f"the wheel lacks {missing}"
print(f"check_wheel: {sys.argv[1].rsplit('/', 1)[-1]} holds the bitcode and rt3d_iree.passes")
EOF

echo "check_wheel: installing it into a fresh venv"
"$PY" -m venv "$TMP/venv"
VPY=$TMP/venv/bin/python
"$VPY" -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull GBs of CUDA wheels.
"$VPY" -m pip install -q torch==2.13.0
"$VPY" -m pip install -q "$WHEEL"

echo "check_wheel: compiling C3D through the microkernel (from $TMP/run)"
mkdir "$TMP/run"
cd "$TMP/run"
env -u RT3D_UKERNEL_DIR -u PYTHONPATH PYTHONNOUSERSITE=1 RT3D_SOURCE="$ROOT" "$VPY" - <<'EOF'
import logging
import os
import sysconfig
from pathlib import Path

import torch

import rt3d_iree
import rt3d_iree.passes.kgs
import rt3d_iree.ukernels
from rt3d_iree.models import C3D

site = Path(sysconfig.get_paths()["purelib"]).resolve()
source = Path(os.environ["RT3D_SOURCE"]).resolve()
for module in (rt3d_iree, rt3d_iree.passes.kgs):
    where = Path(module.__file__).resolve()
    assert where.is_relative_to(site), f"{module.__name__} imported from {where}, not from {site}"
    assert not where.is_relative_to(source), f"{module.__name__} imported from the source tree: {where}"

loaded = []


class Loads(logging.Handler):  # rt3d_iree.ukernels.microkernel_for logs the file it read
    def emit(self, record):
        if record.msg == "%s microkernel: %s":
            loaded.append(Path(str(record.args[-1])).resolve())


log = logging.getLogger("rt3d_iree.ukernels")
log.setLevel(logging.INFO)
log.addHandler(Loads())

torch.manual_seed(0)
model = C3D(num_classes=8, width=0.125, frames=16, size=16).eval()
x = torch.randn(1, 3, 16, 16, 16)
compiled = rt3d_iree.compile(model, (x,), kernel="microkernel")
out = compiled(x)
with torch.no_grad():
    ref = model(x)
err, scale = float((out - ref).abs().max()), float(ref.abs().max())
assert out.shape == ref.shape and err <= 1e-4 * scale, f"max |out - ref| = {err:.3g} > 1e-4 x {scale:.3g}"

convs = compiled.report.convs
assert convs, "the KGS pass saw no conv"
kernels = [c.kernel for c in convs]
assert all(k == "microkernel" for k in kernels), f"not every conv ran the microkernel: {kernels}"

assert len(loaded) == 1, f"expected one bitcode load, saw {loaded}"
path = loaded[0]
assert path.is_relative_to(site), f"the bitcode came from {path}, not from the venv's {site}"
assert path.parent == rt3d_iree.ukernels.package_data_dir(), path
assert path == rt3d_iree.ukernels.bitcode_path(rt3d_iree.ukernels.host_isa()), path
print(f"check_wheel: {len(convs)} convs on the microkernel, max |out - ref| = {err:.2e} (max |ref| {scale:.2e})")
print(f"check_wheel: bitcode loaded from {path}")
EOF
echo  # (iree's nanobind may end stderr with a leak report and no newline)
echo "check_wheel: OK in $((SECONDS - start)) s (without removing the temp dirs)"
