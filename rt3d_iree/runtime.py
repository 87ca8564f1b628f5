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


def entry_point(module: ir.Module, preferred: str = "forward") -> tuple[str, list[TensorSpec]]:
    """Name and argument specs of the module's entry function (``forward`` or the only public one)."""
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
    return ir.StringAttr(chosen.attributes["sym_name"]).value, specs


class CompiledModule:
    """A compiled model. Call it like the PyTorch module; ``vmfb`` holds the compiled bytes."""

    def __init__(self, vmfb: bytes, target: Target, function: str, inputs: list[TensorSpec], report: Any = None):
        self.vmfb = vmfb
        self.target = target
        self.function = function
        self.inputs = inputs
        self.report = report
        self._fn = None

    def save(self, path: str | Path) -> Path:
        """Write the vmfb atomically (a failure never leaves a partial file)."""
        return atomic_write(path, self.vmfb)

    def _load(self):
        import iree.runtime as rt

        if self._fn is None:
            try:
                config = rt.Config(self.target.driver)
                ctx = rt.SystemContext(config=config)
                vm_module = rt.VmModule.copy_buffer(ctx.instance, self.vmfb)
                ctx.add_vm_module(vm_module)
                self._fn = ctx.modules[vm_module.name][self.function]
            except (RuntimeError, ValueError, KeyError) as exc:
                raise Rt3dError(
                    f"cannot load the compiled module: {exc}",
                    "the vmfb may be truncated or built by another IREE version; compile it again",
                ) from exc
        return self._fn

    def __call__(self, *args: Any) -> Any:
        arrays, as_torch = self._check(args)
        result = self._load()(*arrays)
        outs = result if isinstance(result, tuple) else (result,)
        host = [np.asarray(o.to_host()) for o in outs]
        if as_torch:
            import torch

            host = [torch.from_numpy(np.ascontiguousarray(h)) for h in host]
        return host[0] if len(host) == 1 else tuple(host)

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
