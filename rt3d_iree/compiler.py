"""The compile pipeline: KGS pass, then iree-compile, with reproducers on failure.

iree-compile runs as a subprocess of the wheel's own binary so that what we run is exactly
the command a user can paste to reproduce it (torch-mlir's pass-runner practice).
"""

from __future__ import annotations

import io
import logging
import re
import shlex
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from iree.compiler import ir
from iree.compiler.tools.binaries import find_tool

from rt3d_iree.passes import KgsConv3dOptions, PassReport, run_pass

from . import process
from .errors import CompileError, Rt3dError
from .group_size import DEFAULT_TEXT, resolve_group_size
from .targets import KERNELS, Target
from .ukernels import microkernel_for

logger = logging.getLogger(__name__)

_TEXT_LIMIT = 32 * 1024 * 1024


def kgs_options(group_size: tuple[int, int] | str | None, target: Target, kernel: str = "auto") -> KgsConv3dOptions:
    """Pass options for a (gM, gN) group size on a target, with a clear error for bad sizes.

    ``group_size`` is resolved by ``group_size.resolve_group_size`` (``"auto"``: what
    `rt3d tune` recorded for the target; None: the default).
    ``kernel``: "auto" uses the hand-written microkernel where the target has one and it is
    built (else code generation), "microkernel" requires it, "codegen" never uses it.
    """
    if kernel not in KERNELS:
        raise Rt3dError(f"unknown kernel {kernel!r}", f"choose one of: {', '.join(KERNELS)}")
    ukernel = None if kernel == "codegen" else microkernel_for(target, required=kernel == "microkernel")
    gm, gn = resolve_group_size(group_size, target=target)
    try:
        return KgsConv3dOptions(group_m=gm, group_n=gn, config_name=target.config_name, microkernel=ukernel)
    except ValueError as exc:
        raise Rt3dError(f"bad group size {gm}x{gn}: {exc}",
                        f"use for example {DEFAULT_TEXT} or 4x4") from None


# The module attribute naming the target a KGS-rewritten module was written for: its microkernel
# dispatches embed that target's executable format and ISA, so another target cannot compile it.
TARGET_ATTR = "rt3d.target"

# iree-compile flags that choose the device or its ISA: the target (and the KGS pass's kernels,
# which are built for it) already did, so a user flag among these would compile a module for
# one device with kernels for another.
DEVICE_FLAGS = ("--iree-hal-target-device", "--iree-hal-target-backends", "--iree-llvmcpu-target-triple",
                "--iree-llvmcpu-target-cpu", "--iree-hal-local-target-device-backends")


def check_extra_flags(flags: Sequence[str], target: Target, kgs: bool) -> None:
    """Refuse user flags that choose another device than ``target`` (see ``DEVICE_FLAGS``)."""
    for flag in flags:
        name = flag.split("=", 1)[0]
        if name in DEVICE_FLAGS and (kgs or flag not in target.flags):
            raise Rt3dError(
                f"{flag} chooses the device, which the target {target.name!r} already does",
                "pick the device with --target (rt3d targets lists them, with the flags each implies) "
                "and leave this flag out",
            )


def stamp_target(module: ir.Module, target: Target) -> None:
    """Record in ``module`` the target it was rewritten for (``TARGET_ATTR``)."""
    with module.context:
        module.operation.attributes[TARGET_ATTR] = ir.StringAttr.get(target.name)


def check_stamp(module: ir.Module, target: Target, source: str) -> None:
    """An MLIR file written by `rt3d opt` for one target, compiled for another: one clear error."""
    attrs = module.operation.attributes
    if TARGET_ATTR not in attrs:
        return
    written_for = ir.StringAttr(attrs[TARGET_ATTR]).value
    if written_for != target.name:
        raise Rt3dError(
            f"{source} was written by rt3d opt for target {written_for!r} (its kernels are built for that "
            f"device) and cannot be compiled for {target.name!r}",
            f"compile it with --target {written_for}, or run rt3d opt --target {target.name} on the model again",
        )


def apply_kgs(module: ir.Module, options: KgsConv3dOptions) -> PassReport:
    """Run the KGS conv3d pass in place and log what it did."""
    start = time.perf_counter()
    report = run_pass(module, options)
    logger.info(
        "rt3d-kgs-conv3d: rewrote %d of %d conv3d ops in %.2f s",
        report.rewritten, len(report.convs), time.perf_counter() - start,
    )
    for conv in report.skipped:
        logger.warning("conv3d %s left to IREE's default lowering: %s", where(conv.location), conv.reason)
    return report


def where(location: str) -> str:
    """A conv's location as users read it: the module path the importer named it by
    (importer._conv_locations_named), else the MLIR location as it is."""
    m = re.fullmatch(r'loc\("([^"]+)":1:0\)', location)
    return m[1] if m else location


def bytecode(module: ir.Module) -> bytes:
    """MLIR bytecode of ``module`` (compact; weights stay binary)."""
    buf = io.BytesIO()
    module.operation.write_bytecode(buf)
    return buf.getvalue()


def module_bytes(module: ir.Module) -> tuple[bytes, str]:
    """Serialize for iree-compile: text when small (readable reproducers), else bytecode."""
    data = bytecode(module)
    if len(data) < _TEXT_LIMIT:
        return str(module).encode(), ".mlir"
    return data, ".mlirbc"


def iree_compile_command(input_path: Path, output_path: Path, target: Target, extra_flags: Sequence[str]) -> list[str]:
    """The exact iree-compile command line; users' flags come last so they override ours."""
    return [find_tool("iree-compile"), str(input_path), *target.flags, *extra_flags, "-o", str(output_path)]


def compile_mlir(
    module: ir.Module,
    target: Target,
    extra_flags: Sequence[str] = (),
    reproducer_dir: str | Path | None = None,
) -> bytes:
    """Compile ``module`` with iree-compile for ``target``; return the vmfb bytes.

    On failure, the input MLIR and a ``command.sh`` reproducing the call are written to a
    new folder under ``reproducer_dir`` and a ``CompileError`` names both.
    """
    data, suffix = module_bytes(module)
    with tempfile.TemporaryDirectory(prefix="rt3d-compile-") as tmp:
        src = Path(tmp) / f"input{suffix}"
        out = Path(tmp) / "module.vmfb"
        src.write_bytes(data)
        cmd = iree_compile_command(src, out, target, extra_flags)
        logger.info("running: %s", shlex.join(cmd))
        start = time.perf_counter()
        proc = process.run(cmd, "iree-compile", "compile")
        logger.info("iree-compile took %.2f s", time.perf_counter() - start)
        if proc.returncode == 0:
            return out.read_bytes()
        folder, command = process.keep_reproducer(tmp, cmd, proc.stderr, "compile", reproducer_dir)
        raise CompileError(
            f"iree-compile failed (exit {proc.returncode}):\n{process.key_lines(proc.stderr)}\n"
            f"reproducer: {folder} (the input, command.sh and the whole stderr.txt)\ncommand: {command}",
            "run the command above to reproduce; remove or fix the extra flags if you passed any",
            reproducer=str(folder),
            command=command,
        )
