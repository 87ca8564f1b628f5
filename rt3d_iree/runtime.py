"""Compiled modules: callable on torch tensors or numpy arrays, with their vmfb bytes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from iree.compiler import ir

from .errors import Rt3dError
from .files import atomic_write
from .runners import BenchResult, Runner, get_runner
from .targets import Target

logger = logging.getLogger(__name__)

_DTYPES = {"f32": np.float32, "f16": np.float16, "f64": np.float64, "i64": np.int64, "i32": np.int32, "i1": np.bool_}


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype one argument must have."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{'x'.join(map(str, self.shape))} {np.dtype(self.dtype).name}"


def entry_point(module: ir.Module, preferred: str = "forward") -> tuple[str, list[TensorSpec], int]:
    """Name, argument specs and result count of the entry function (``forward`` or the only public one)."""
    publics = []
    for op in module.body.operations:
        if op.operation.name != "func.func":
            continue
        attrs = op.operation.attributes
        if "sym_visibility" in attrs and str(attrs["sym_visibility"]) == '"private"':
            continue
        if not op.regions[0].blocks:
            continue
        publics.append(op)
    chosen = next((f for f in publics if ir.StringAttr(f.attributes["sym_name"]).value == preferred), None)
    if chosen is None:
        if len(publics) != 1:
            names = [ir.StringAttr(f.attributes["sym_name"]).value for f in publics]
            raise Rt3dError(
                f"cannot tell which function to run: public functions {names}",
                f"name the entry function {preferred!r}",
            )
        chosen = publics[0]
    specs = []
    for arg in chosen.regions[0].blocks[0].arguments:
        try:
            t = ir.RankedTensorType(arg.type)
        except ValueError:
            raise Rt3dError(f"entry argument of type {arg.type} is not a ranked tensor", "") from None
        dtype = _DTYPES.get(str(t.element_type))
        if dtype is None or not t.has_static_shape:
            raise Rt3dError(f"unsupported entry argument type {t}", "use static-shape f32 inputs")
        specs.append(TensorSpec(tuple(t.shape), np.dtype(dtype)))
    n_results = len(ir.FunctionType(ir.TypeAttr(chosen.attributes["function_type"]).value).results)
    return ir.StringAttr(chosen.attributes["sym_name"]).value, specs, n_results


class CompiledModule:
    """A compiled model. Call it like the PyTorch module; ``vmfb`` holds the compiled bytes.

    Calls run where the target's code can run here: in-process for the host and Vulkan,
    under qemu-user for aarch64 (see ``rt3d_iree.runners``); pass ``runner`` to choose.
    """

    def __init__(self, vmfb: bytes, target: Target, function: str, inputs: list[TensorSpec], report: Any = None,
                 n_outputs: int = 1, runner: Runner | None = None):
        self.vmfb = vmfb
        self.target = target
        self.function = function
        self.inputs = inputs
        self.report = report
        self.n_outputs = n_outputs
        self.runner = runner or get_runner(target.runner)

    def save(self, path: str | Path) -> Path:
        """Write the vmfb atomically (a failure never leaves a partial file)."""
        return atomic_write(path, self.vmfb)

    def __call__(self, *args: Any) -> Any:
        arrays, as_torch = self._check(args)
        host = self.runner.run(self.vmfb, self.function, arrays, self.n_outputs, self.target.driver)
        if as_torch:
            import torch

            host = [torch.from_numpy(np.ascontiguousarray(h)) for h in host]
        return host[0] if len(host) == 1 else tuple(host)

    def benchmark(self, *args: Any, threads: int = 2, repetitions: int = 5) -> BenchResult:
        """Time the entry function on this module's runner with iree-benchmark-module."""
        arrays, _ = self._check(args)
        return self.runner.benchmark(self.vmfb, self.function, arrays, self.target.driver, threads, repetitions)

    def _check(self, args: tuple[Any, ...]) -> tuple[list[np.ndarray], bool]:
        expected = ", ".join(str(s) for s in self.inputs)
        if len(args) != len(self.inputs):
            raise Rt3dError(
                f"{self.function} takes {len(self.inputs)} input(s) ({expected}), got {len(args)}",
                "call it with the same number of inputs as the example inputs you compiled with",
            )
        as_torch = False
        arrays = []
        for i, (arg, spec) in enumerate(zip(args, self.inputs, strict=True)):
            if hasattr(arg, "detach") and hasattr(arg, "numpy"):
                as_torch = True
                arg = arg.detach().cpu().numpy()
            arr = np.asarray(arg)
            if arr.shape != spec.shape:
                raise Rt3dError(
                    f"input {i} has shape {'x'.join(map(str, arr.shape)) or 'scalar'}, "
                    f"the module was compiled for {spec}",
                    "compile again with example inputs of the shape you want to run (shapes are static)",
                )
            if arr.dtype != spec.dtype:
                raise Rt3dError(
                    f"input {i} has dtype {arr.dtype}, the module expects {spec.dtype}",
                    f"convert it first, for example x.astype(np.{spec.dtype.name}) or x.to(torch.float32)",
                )
            arrays.append(np.ascontiguousarray(arr))
        return arrays, as_torch
