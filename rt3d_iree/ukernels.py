"""Find the KGS microkernel bitcode for a compile target (built from plugins/ukernel).

Why here and not in the pass: which ISA a target runs (AVX-512 or AVX2 on this host, NEON on
phones) is a fact about targets and machines, and the build folder is a fact about this
checkout; the pass only takes the bitcode it is given.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

from rt3d_iree.passes.kgs_ukernel import Microkernel

from .errors import Rt3dError
from .targets import Target

logger = logging.getLogger(__name__)

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugins" / "ukernel"
BUILD_DIR_ENV = "RT3D_UKERNEL_DIR"
BUILD_COMMAND = "cmake -S . -B build && cmake --build build"


def build_dir() -> Path:
    """Where the bitcode files are: $RT3D_UKERNEL_DIR, else plugins/ukernel/build."""
    return Path(os.environ.get(BUILD_DIR_ENV, PLUGIN_DIR / "build"))


@lru_cache(maxsize=1)
def host_isa() -> str | None:
    """The widest ISA of this CPU the kernel has a build for, or None."""
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        return None
    if {"avx512f", "avx512vl"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return None


def target_isa(target: Target) -> str | None:
    """ISA of the microkernel for a target, None where the target takes code generation."""
    if target.kernel == "neon":
        return "neon"
    if target.name == "host":
        return host_isa()
    return None


def microkernel_for(target: Target, required: bool = False) -> Microkernel | None:
    """The microkernel for ``target``, or None (code generation path) with the reason logged.

    ``required=True`` turns a missing build into an error that says how to build it.
    """
    isa = target_isa(target)
    if isa is None:
        if required:
            raise Rt3dError(f"target {target.name!r} has no microkernel (llvm-cpu with AVX-512, AVX2 or NEON only)",
                            "compile without --microkernel to use the code generation path")
        return None
    path = build_dir() / f"kgs_conv3d_{isa}.bc"
    if not path.is_file():
        message = f"the {isa} microkernel is not built ({path} is missing)"
        if required:
            raise Rt3dError(message, f"build it with: {BUILD_COMMAND} (scripts/setup.sh does this)")
        logger.warning("%s: using the code generation path; build it with: %s", message, BUILD_COMMAND)
        return None
    try:
        return Microkernel(isa, path.read_bytes())
    except ValueError as exc:
        raise Rt3dError(f"{path}: {exc}", f"rebuild it with: {BUILD_COMMAND}") from None

