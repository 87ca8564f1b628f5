"""Find the KGS microkernel bitcode for a compile target (built from plugins/ukernel).

Why here and not in the pass: which ISA a target runs (AVX-512 or AVX2 on this host, NEON on
phones) is a fact about targets and machines, and where the bitcode lies is a fact about this
install; the pass only takes the bitcode it is given.

Where the bitcode is (``kgs_conv3d_{avx512,avx2,neon}.bc``), first hit per file wins:

1. ``$RT3D_UKERNEL_DIR``: a build of one's own, for experiments.
2. Package data, ``rt3d_iree/ukernel_bitcode/``: ``pip install .`` and wheels, where CMake's
   ``install(FILES ... DESTINATION rt3d_iree/ukernel_bitcode)`` (plugins/ukernel) puts it, so
   an installed rt3d_iree carries its kernel and needs no checkout. (Not ``rt3d_iree/ukernels/``:
   a folder next to this module with its name would be confused with it on import.)
3. The source checkout's build, ``plugins/ukernel/build``: what ``cmake -S . -B build && cmake
   --build build`` (scripts/setup.sh) writes. The editable install keeps no copy in 2 (it runs
   no CMake), so a rebuild here takes effect without reinstalling.
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
PACKAGE_DATA = "ukernel_bitcode"  # in the rt3d_iree package; the DESTINATION of plugins/ukernel's install()
INSTALL_COMMAND = "pip install ."  # a wheel build: CMake runs and installs the bitcode as package data


def bitcode_name(isa: str) -> str:
    return f"kgs_conv3d_{isa}.bc"


def package_data_dir() -> Path:
    """The bitcode a wheel or ``pip install .`` installed: rt3d_iree/ukernel_bitcode, next to
    this module (a real folder: wheels install unpacked, and IREE takes the bytes)."""
    return Path(__file__).resolve().parent / PACKAGE_DATA


def search_dirs() -> list[Path]:
    """Where the bitcode is looked for, in order: $RT3D_UKERNEL_DIR, package data, source build."""
    env = os.environ.get(BUILD_DIR_ENV)
    return [*([Path(env)] if env else []), package_data_dir(), PLUGIN_DIR / "build"]


def bitcode_path(isa: str) -> Path | None:
    """The ``isa`` bitcode file microkernel_for loads (the first of search_dirs() that has it)."""
    return next((d / bitcode_name(isa) for d in search_dirs() if (d / bitcode_name(isa)).is_file()), None)


def build_dir() -> Path:
    """The folder the bitcode comes from: the first of search_dirs() holding any kernel; with
    none built, where one would go: $RT3D_UKERNEL_DIR if set, else plugins/ukernel/build."""
    dirs = search_dirs()
    built = next((d for d in dirs if d.is_dir() and any(d.glob(bitcode_name("*")))), None)
    if built is not None:
        return built
    return dirs[0] if os.environ.get(BUILD_DIR_ENV) else dirs[-1]


def build_hint(verb: str = "build") -> str:
    """How to get the bitcode: in a source checkout, build it; else reinstall from source."""
    if (PLUGIN_DIR / "CMakeLists.txt").is_file():
        return f"{verb} it with: {BUILD_COMMAND} (scripts/setup.sh does this)"
    return f"{verb} it by installing rt3d-iree from source: {INSTALL_COMMAND} runs CMake and clang"


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
    if target.config_name == "neon":
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
                            "use --kernel auto or --kernel codegen (kernel='auto' or 'codegen' in Python) "
                            "for code generation")
        return None
    path = bitcode_path(isa)
    if path is None:
        searched = ", ".join(str(d) for d in search_dirs())
        message = f"the {isa} microkernel is not built ({bitcode_name(isa)} is in none of: {searched})"
        if required:
            raise Rt3dError(message, build_hint())
        logger.warning("%s: using the code generation path; %s", message, build_hint())
        return None
    try:
        kernel = Microkernel(isa, path.read_bytes())
    except ValueError as exc:
        raise Rt3dError(f"{path}: {exc}", build_hint("rebuild")) from None
    logger.info("%s microkernel: %s", isa, path)
    return kernel
