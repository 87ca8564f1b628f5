"""The Python front door: ``rt3d_iree.compile(model, example_args, target="host")``."""

from __future__ import annotations

import logging
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iree.compiler import ir

from .compiler import apply_kgs, check_extra_flags, check_stamp, compile_mlir, kgs_options, stamp_target
from .errors import Rt3dError
from .files import check_folder, check_writable
from .group_size import resolve_group_size
from .importer import import_torch, load_model_file, new_context
from .passes import run_trim
from .runners import Runner, check_runner_type
from .runtime import CompiledModule, entry_point
from .targets import Target, resolve_target

logger = logging.getLogger(__name__)


def import_model(model: Any, example_args: Sequence[Any] = (), context: ir.Context | None = None, *,
                 drop_dead: bool = False) -> ir.Module:
    """Any accepted model form -> MLIR in IREE's context (``load_module`` reloads a compiled vmfb).

    ``model`` is a torch.nn.Module (with ``example_args``), an ExportedProgram, an
    ``ir.Module``, or a path to a .pt2 / .mlir / .mlirbc file or an `rt3d prune` checkpoint.
    ``drop_dead``: a module's (or checkpoint's) conv channels that nothing reads are removed
    first (``prune/slim.py``).
    """
    if isinstance(model, ir.Module):
        module = model
    elif isinstance(model, (str, Path)):
        module = load_model_file(model, context, drop_dead=drop_dead)
    else:
        module = import_torch(model, example_args, context or new_context(), drop_dead=drop_dead)
    run_trim(module)  # works around an IREE 3.13 failure on padded pools (passes/trim_window_inputs.py)
    return module


def load(model: Any, example_args: Sequence[Any] = (), context: ir.Context | None = None) -> ir.Module:
    """Deprecated name of :func:`import_model` (it returns MLIR, where other loaders return
    something runnable; a saved vmfb reloads with ``rt3d_iree.load_module``)."""
    warnings.warn("rt3d_iree.load is now rt3d_iree.import_model (MLIR); rt3d_iree.load_module reloads a vmfb",
                  DeprecationWarning, stacklevel=2)
    return import_model(model, example_args, context)


def optimize(
    model: Any,
    example_args: Sequence[Any] = (),
    *,
    target: str | Target = "host",
    group_size: tuple[int, int] | str | None = None,
    kernel: str = "auto",
    drop_dead_channels: bool = True,
) -> tuple[ir.Module, Any]:
    """Import and run the KGS pass; return the rewritten MLIR (stock iree-compile compiles it)."""
    tgt = resolve_target(target)
    options = kgs_options(resolve_group_size(group_size, model=model, target=tgt), tgt, kernel)
    module = _import_for(model, _as_args(example_args), tgt, drop_dead_channels)
    report = apply_kgs(module, options)
    stamp_target(module, tgt)
    return module, report


def compile(  # noqa: A001 - the public name users expect
    model: Any,
    example_args: Sequence[Any] = (),
    *,
    target: str | Target = "host",
    group_size: tuple[int, int] | str | None = None,
    kgs: bool = True,
    kernel: str = "auto",
    extra_flags: Sequence[str] = (),
    save_to: str | Path | None = None,
    reproducer_dir: str | Path | None = None,
    runner: Runner | None = None,
    drop_dead_channels: bool = True,
) -> CompiledModule:
    """Compile a model for ``target`` and return a callable ``CompiledModule``.

    Args:
        model: torch.nn.Module (with ``example_args``), ExportedProgram, ir.Module or a path
            to a .pt2 / .mlir / .mlirbc file or an `rt3d prune` checkpoint (.pt).
        example_args: inputs of the shape the module will be called with (shapes are static).
        target: a name from ``rt3d_iree.targets.TARGETS``, or a ``Target`` (for example one
            with its runtime driver replaced); the module keeps it.
        group_size: (gM filters, gN channels) of the KGS structure to exploit; "auto" = what
            `rt3d tune` recorded; None = the checkpoint's own group size, else the default
            (``group_size.DEFAULT_GROUP_SIZE``; precedence in ``group_size.resolve_group_size``).
        kgs: False compiles with IREE's stock conv lowering (the baseline).
        kernel: "auto" (the hand-written microkernel where the target has one: llvm-cpu
            x86-64 AVX-512/AVX2 and aarch64; else code generation), "microkernel" (required),
            or "codegen" (IREE code generation of our gather-GEMM only).
        extra_flags: more iree-compile flags, appended after the target's (so they override).
        save_to: also write the vmfb here (atomically).
        reproducer_dir: where a failing compile leaves its MLIR and command.
        runner: where the module runs and is timed (``rt3d_iree.runners``: local, qemu, adb);
            None = the target's own. Given here so callers need not patch the result.
        drop_dead_channels: with ``kgs``, conv output channels that nothing reads (removed
            filters whose constants were folded into the next layer) are sliced out of a copy
            of the model before import (``prune/slim.py``), so filter pruning is faster too.
            Exact; False keeps them (to measure what it buys).
    """
    tgt = resolve_target(target)
    check_runner_type(runner)  # both checked before minutes of compiling
    example_args = _as_args(example_args)
    extra_flags = _as_flags(extra_flags)
    check_extra_flags(extra_flags, tgt, kgs)
    if save_to is not None:
        check_writable(save_to, "save_to path")
    if reproducer_dir is not None:
        check_folder(reproducer_dir, "reproducer folder")
    options = kgs_options(resolve_group_size(group_size, model=model, target=tgt), tgt, kernel)
    module = _import_for(model, example_args, tgt, kgs and drop_dead_channels)
    function, inputs, n_outputs = entry_point(module)
    report = apply_kgs(module, options) if kgs else None
    vmfb = compile_mlir(module, tgt, extra_flags, reproducer_dir)
    compiled = CompiledModule(vmfb, tgt, function, inputs, report, n_outputs, runner)
    if save_to is not None:
        compiled.save(save_to)
    return compiled


def _import_for(model: Any, example_args: Sequence[Any], target: Target, drop_dead: bool) -> ir.Module:
    """import_model, refusing a file `rt3d opt` wrote for another target than ``target``."""
    module = import_model(model, example_args, drop_dead=drop_dead)
    if isinstance(model, (str, Path)):
        check_stamp(module, target, str(model))
    return module


def _as_args(example_args: Any) -> Sequence[Any]:
    """A bare tensor is one input (``compile(model, x)``, as iree-turbine users write it)."""
    if hasattr(example_args, "shape") and hasattr(example_args, "dtype"):
        return (example_args,)
    if isinstance(example_args, (str, bytes)) or not isinstance(example_args, (tuple, list)):
        raise Rt3dError(f"example_args must be a tensor or a tuple of tensors, got {type(example_args).__name__}",
                        "pass inputs of the shape the model runs at, for example torch.randn(1, 3, 16, 112, 112)")
    bad = [type(a).__name__ for a in example_args if not (hasattr(a, "shape") and hasattr(a, "dtype"))]
    if bad:
        raise Rt3dError(f"example_args must hold tensors, got {', '.join(bad)}",
                        "pass a flat tuple of tensors, for example (torch.randn(1, 3, 16, 112, 112),)")
    return example_args


def _as_flags(extra_flags: Any) -> list[str]:
    """Flags as a list; one string is split as a shell would (not into characters)."""
    if isinstance(extra_flags, str):
        return shlex.split(extra_flags)
    if extra_flags is None:
        return []
    flags = list(extra_flags)
    bad = [f for f in flags if not isinstance(f, str)]
    if bad:
        raise Rt3dError(f"extra_flags must be strings, got {bad!r}",
                        'pass a list such as ["--iree-opt-level=O3"] or one string of flags')
    return flags

