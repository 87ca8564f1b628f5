"""Bring models into IREE's MLIR context: PyTorch via torch-mlir's FX importer, or MLIR files.

torch-mlir and IREE each ship their own MLIR Python bindings with separate contexts, so a
module crosses between them as bytecode (fast, and the weights stay binary blobs).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from iree.compiler import ir

from .errors import Rt3dError

logger = logging.getLogger(__name__)

FUNCTION = "forward"
MLIR_SUFFIXES = (".mlir", ".mlirbc")
MODEL_SUFFIXES = (".pt2",)
CHECKPOINT_SUFFIXES = (".pt", ".pth")  # rt3d prune checkpoints


def new_context() -> ir.Context:
    """An IREE MLIR context with every dialect IREE knows registered."""
    return ir.Context()


def import_torch(module: Any, example_args: Sequence[Any], context: ir.Context | None = None, *,
                 drop_dead: bool = False) -> ir.Module:
    """Export ``module`` with torch.export and import it as linalg-on-tensors MLIR.

    ``module`` may also be a ``torch.export.ExportedProgram`` (then ``example_args`` is unused).
    ``drop_dead`` first removes, from a copy, the conv output channels nothing reads
    (``prune/slim.py``: what filter pruning leaves), so they are neither computed nor gathered.
    """
    import torch
    from torch_mlir import fx

    context = context or new_context()
    if isinstance(module, torch.nn.Module):
        args = tuple(torch.as_tensor(a) if not isinstance(a, torch.Tensor) else a for a in example_args)
        modes = {m: m.training for m in module.modules()}  # the caller's model keeps its mode
        try:
            module.eval()
            if drop_dead:
                from .prune.slim import without_dead_channels

                exported = without_dead_channels(module)
            else:
                exported = module
            program = torch.export.export(exported, args)
        except Rt3dError:
            raise
        except Exception as exc:  # torch.export raises many types; all mean "cannot export"
            raise Rt3dError(
                f"torch.export could not export the model: {type(exc).__name__}: {_first_line(exc)}",
                "make forward() traceable by torch.export (no data-dependent Python control flow) "
                "and pass example inputs of the shape you will run",
            ) from exc
        finally:
            for m, training in modes.items():
                m.training = training
    elif isinstance(module, torch.export.ExportedProgram):
        program = module
    else:
        raise Rt3dError(
            f"expected a torch.nn.Module or ExportedProgram, got {type(module).__name__}",
            "pass the model object itself, or a path to a .pt2, .mlir or .mlirbc file to `rt3d compile`",
        )
    from .decompose import split_grouped_convs

    program = split_grouped_convs(program)  # torch-mlir cannot lower grouped 3-D convs
    with _captured_stderr() as diagnostics, _conv_locations_named(program):
        try:
            imported = fx.export_and_import(program, output_type="linalg-on-tensors", func_name=FUNCTION)
            failure = None
        except Exception as exc:
            failure = exc
    if failure is not None:
        culprit = _culprit(diagnostics.getvalue())
        raise Rt3dError(
            f"torch-mlir could not import the model: {culprit or _first_line(failure)}",
            "the model uses an operator torch-mlir cannot lower to linalg; replace it or file an "
            "issue with torch-mlir naming the operator",
        ) from None
    buf = io.BytesIO()
    imported.operation.write_bytecode(buf)
    return ir.Module.parse(buf.getvalue(), context)


def load_mlir(path: str | Path, context: ir.Context | None = None) -> ir.Module:
    """Parse a .mlir (text) or .mlirbc (bytecode) file into IREE's context."""
    path = Path(path)
    context = context or new_context()
    if not path.is_file():
        raise Rt3dError(f"no such file: {path}", "check the path")
    data = path.read_bytes()
    if not data.strip():
        raise Rt3dError(f"{path} is empty", "pass the MLIR of a model (rt3d opt writes one) or a .pt2 file")
    if path.suffix != ".mlirbc" and b"dense_resource<rt3d_kgs_conv3d_" in data:  # `rt3d opt` text (inline_form)
        from .passes.kgs.ukernel_ir import inline_form

        try:
            data = inline_form(data.decode()).encode()
        except (UnicodeDecodeError, ValueError) as exc:
            raise Rt3dError(f"{path} is not valid MLIR: {exc}", "write it again with rt3d opt") from None
    try:
        return ir.Module.parse(data, context)
    except ir.MLIRError as exc:
        raise Rt3dError(
            f"{path} is not valid MLIR: {_where(exc, path)}",
            "pass linalg-on-tensors MLIR (for example from torch-mlir) or a .pt2 saved with torch.export.save",
        ) from None


def _where(exc: ir.MLIRError, path: Path) -> str:
    """The parser's first error as ``path:line:col: message`` (its own location names "-")."""
    for diag in getattr(exc, "error_diagnostics", []) or []:
        m = re.search(r'loc\("[^"]*":(\d+):(\d+)\)', str(diag.location))
        if m:
            return f"{path}:{m[1]}:{m[2]}: {diag.message}"
        return diag.message
    return _first_line(exc)


def load_model_file(path: str | Path, context: ir.Context | None = None, *, drop_dead: bool = False) -> ir.Module:
    """Load what `rt3d compile` accepts: .pt2 (torch.export.save), an `rt3d prune` checkpoint
    (.pt / .pth), .mlir or .mlirbc."""
    path = Path(path)
    if path.suffix in CHECKPOINT_SUFFIXES:
        from .prune.checkpoint import load_checkpoint, model_from_checkpoint

        model, example = model_from_checkpoint(load_checkpoint(path))
        return import_torch(model, (example,), context, drop_dead=drop_dead)
    if path.suffix in MLIR_SUFFIXES:
        return load_mlir(path, context)
    if path.suffix in MODEL_SUFFIXES:
        return import_torch(load_program(path), (), context)
    raise Rt3dError(
        f"do not know how to read {path.name!r}",
        "pass a .pt2 file (torch.export.save), an rt3d prune checkpoint (.pt), a .mlir or a .mlirbc file",
    )


def _conv_nodes(program: Any) -> Iterator[tuple[Any, str, str]]:
    """Each convolution node of an exported program, with the module path and type that called
    it (torch.export's ``nn_module_stack``; the node's own name where it has none)."""
    for node in program.graph.nodes:
        if node.op != "call_function" or not any(k in str(node.target) for k in ("convolution", "conv3d")):
            continue
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            yield node, node.name, ""
            continue
        path, kind = list(stack.values())[-1]
        yield node, path, getattr(kind, "__name__", str(kind).rsplit(".", 1)[-1].strip("'>"))


@contextlib.contextmanager
def _conv_locations_named(program: Any) -> Iterator[None]:
    """Give every convolution the location "module.path (Type)" while torch-mlir imports it.

    Why: torch-mlir locates an op by its Python stack, which for every conv of an nn.Sequential
    is the same two lines of torch's own code, so a pass message could not say which layer it
    means. The stack of each convolution node is swapped for one frame named after the module
    that called it (torch.export's ``nn_module_stack``), and put back afterwards.
    """
    saved = {}
    for node, path, kind_name in _conv_nodes(program):
        if not kind_name:  # no calling module to name it after
            continue
        saved[node] = node.meta.get("stack_trace")
        node.meta["stack_trace"] = f'  File "{path} ({kind_name})", line 1, in forward\n'
    try:
        yield
    finally:
        for node, trace in saved.items():
            node.meta["stack_trace"] = trace


@contextlib.contextmanager
def _captured_stderr() -> Iterator[io.StringIO]:
    """Collect what native code (MLIR's diagnostics) writes to file descriptor 2."""
    out = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.write(tmp.read().decode(errors="replace"))


def _culprit(diagnostics: str) -> str | None:
    """The operator (or first error) behind a torch-mlir lowering failure."""
    op = re.search(r'name = "(torch\.[\w.]+)"', diagnostics) or re.search(r"operation '(torch\.aten\.[\w.]+)'",
                                                                         diagnostics)
    if op:
        return f"it cannot lower the operator {op.group(1)}"
    err = re.search(r"error: (.+)", diagnostics)
    return f"lowering failed: {err.group(1).strip()}" if err else None


def load_program(path: str | Path) -> Any:
    """A .pt2 file (torch.export.save) as an ExportedProgram; a clear error for a missing or
    unreadable one."""
    path = Path(path)
    if not path.is_file():
        raise Rt3dError(f"no such file: {path}", "check the path")
    try:
        return _quiet_export_load(path)
    except Exception as exc:
        raise Rt3dError(
            f"{path} is not a readable torch.export program ({type(exc).__name__}: {_first_line(exc)})",
            "re-save the model with torch.export.save(torch.export.export(model, example_args), path)",
        ) from exc


def _quiet_export_load(path: Path):
    """torch.export.load, without the traceback torch logs as a warning before it raises
    (a bad file gets our one-line error, not a 12-line traceback first)."""
    import torch

    log = logging.getLogger("torch.export")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return torch.export.load(str(path))
    finally:
        log.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
