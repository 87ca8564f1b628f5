"""FileCheck for the pass tests: printed IR checked against CHECK lines, as MLIR's own
lit tests do, with the `filecheck` package (a Python port of LLVM's FileCheck).

Why not substring probes: a probe such as ``"tensor.extract" in printed`` passes wherever
the string appears, in any op and in any order; CHECK lines pin the op, its operands
(captured SSA names) and the order, and a failure prints the IR position that did not match.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


def _filecheck_binary() -> str:
    here = Path(sys.executable).with_name("filecheck")
    found = str(here) if here.is_file() else shutil.which("filecheck")
    if found is None:
        raise RuntimeError("the `filecheck` package is not installed: run `pip install -e '.[test]'`")
    return found


def filecheck(printed: str, checks: str, tmp_path: Path, prefix: str = "CHECK") -> None:
    """Fail (with FileCheck's diagnostics and the IR) unless ``printed`` matches ``checks``."""
    check_file = tmp_path / f"{prefix.lower()}.checks"
    check_file.write_text(textwrap.dedent(checks))
    proc = subprocess.run([_filecheck_binary(), str(check_file), f"--check-prefix={prefix}"],
                          input=printed, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        shown = re.sub(r'"0x([0-9A-F]{16})[0-9A-F]{32,}"', r'"0x\1..."', printed)  # elide weight blobs
        pytest.fail(f"FileCheck failed:\n{proc.stderr}\n--- IR (long hex elided) ---\n{shown}", pytrace=False)


@pytest.fixture
def check_ir(tmp_path: Path) -> Callable[..., None]:
    """``check_ir(printed, checks, prefix="CHECK")``: FileCheck ``printed`` against ``checks``."""
    def run(printed: str, checks: str, prefix: str = "CHECK") -> None:
        filecheck(printed, checks, tmp_path, prefix)
    return run


@pytest.fixture(scope="module")
def ukernel():
    """The host's microkernel (its bitcode must be built: scripts/setup.sh builds it)."""
    from rt3d_iree.targets import get_target
    from rt3d_iree.ukernels import microkernel_for

    kernel = microkernel_for(get_target("host"), required=True)
    assert kernel is not None
    return kernel
