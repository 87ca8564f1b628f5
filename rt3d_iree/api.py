"""The Python front door: ``rt3d_iree.compile(model, example_args, target="host")``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iree.compiler import ir

from .compiler import apply_kgs, compile_mlir, kgs_options
from .importer import CHECKPOINT_SUFFIXES, import_torch, load_model_file, new_context
from .passes import run_trim
from .runtime import CompiledModule, entry_point
from .targets import get_target

logger = logging.getLogger(__name__)


def load(model: Any, example_args: Sequence[Any] = (), context: ir.Context | None = None) -> ir.Module:
    """Any accepted model form -> MLIR in IREE's context.

    ``model`` is a torch.nn.Module (with ``example_args``), an ExportedProgram, an
    ``ir.Module``, or a path to a .pt2 / .mlir / .mlirbc file or an `rt3d prune` checkpoint.
    """
    if isinstance(model, ir.Module):
        module = model
    elif isinstance(model, (str, Path)):
        module = load_model_file(model, context)
    else:
        module = import_torch(model, example_args, context or new_context())
    run_trim(module)  # works around an IREE 3.13 failure on padded pools (passes/trim_window_inputs.py)
    return module


def default_group_size(model: Any, group_size: tuple[int, int] | str | None) -> tuple[int, int] | str:
    """``None`` means: the group size an `rt3d prune` checkpoint was pruned with, else 8x4."""
    if group_size is not None:
        return group_size
    if isinstance(model, (str, Path)) and Path(model).suffix in CHECKPOINT_SUFFIXES:
        from .prune.checkpoint import group_size_of, load_checkpoint

        found = group_size_of(load_checkpoint(model))
        if found is not None:
            logger.info("group size %dx%d from the checkpoint", *found)
            return found
    return (8, 4)


def optimize(
    model: Any,
    example_args: Sequence[Any] = (),
    *,
    target: str = "host",
    group_size: tuple[int, int] | str | None = None,
    kernel: str = "auto",
) -> tuple[ir.Module, Any]:
    """Import and run the KGS pass; return the rewritten MLIR (stock iree-compile compiles it)."""
    tgt = get_target(target)
    options = kgs_options(default_group_size(model, group_size), tgt, kernel)
    module = load(model, example_args)
    report = apply_kgs(module, options)
    return module, report


def compile(  # noqa: A001 - the public name users expect
    model: Any,
    example_args: Sequence[Any] = (),
    *,
    target: str = "host",
    group_size: tuple[int, int] | str | None = None,
    kgs: bool = True,
    kernel: str = "auto",
    extra_flags: Sequence[str] = (),
    save_to: str | Path | None = None,
    reproducer_dir: str | Path | None = None,
) -> CompiledModule:
    """Compile a model for ``target`` and return a callable ``CompiledModule``.

    Args:
        model: torch.nn.Module (with ``example_args``), ExportedProgram, ir.Module or a path
            to a .pt2 / .mlir / .mlirbc file or an `rt3d prune` checkpoint (.pt).
        example_args: inputs of the shape the module will be called with (shapes are static).
        target: a name from ``rt3d_iree.targets.TARGETS``.
        group_size: (gM filters, gN channels) of the KGS structure to exploit; "auto" = what
            `rt3d tune` recorded; None = the checkpoint's own group size, else (8, 4).
        kgs: False compiles with IREE's stock conv lowering (the baseline).
        kernel: "auto" (the hand-written microkernel where the target has one: llvm-cpu
            x86-64 AVX-512/AVX2 and aarch64; else code generation), "microkernel" (required),
            or "codegen" (IREE code generation of our gather-GEMM only).
        extra_flags: more iree-compile flags, appended after the target's (so they override).
        save_to: also write the vmfb here (atomically).
        reproducer_dir: where a failing compile leaves its MLIR and command.
    """
    tgt = get_target(target)
    options = kgs_options(default_group_size(model, group_size), tgt, kernel)
    module = load(model, example_args)
    function, inputs, n_outputs = entry_point(module)
    report = apply_kgs(module, options) if kgs else None
    vmfb = compile_mlir(module, tgt, extra_flags, reproducer_dir)
    compiled = CompiledModule(vmfb, tgt, function, inputs, report, n_outputs)
    if save_to is not None:
        compiled.save(save_to)
    return compiled
