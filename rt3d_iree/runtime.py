"""Compiled modules: callable on torch tensors or numpy arrays, with their vmfb bytes."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from iree.compiler import ir

from .errors import Rt3dError
from .files import atomic_write, check_writable
from .runners import BenchResult, Runner, check_runner_type, get_runner
from .session import Session
from .targets import Target, resolve_target

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
        if not publics:
            raise Rt3dError("the MLIR has no public function with a body, so there is nothing to compile and run",
                            f"give the module a public func.func (named {preferred!r}, or the only public one)")
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
        self._session: Session | None = None
        self._load_tried = False  # the runner is asked once; one without sessions runs each call afresh
        self._session_lock = threading.Lock()

    def save(self, path: str | Path) -> Path:
        """Write the vmfb atomically (a failure never leaves a partial file)."""
        return atomic_write(check_writable(path, "compiled module"), self.vmfb)

    def __call__(self, *args: Any) -> Any:
        """Run the module. The first call loads it (session.py); later calls reuse it, and calls
        from several threads queue on the module's own caller thread."""
        arrays, as_torch = self._check(args)
        session = self._loaded()
        if session is not None:
            host = session(arrays)
        else:
            host = self.runner.run(self.vmfb, self.function, arrays, self.n_outputs, self.target.driver)
        if as_torch:
            import torch

            host = [torch.from_numpy(np.ascontiguousarray(h)) for h in host]
        return host[0] if len(host) == 1 else tuple(host)

    def _loaded(self) -> Session | None:
        with self._session_lock:
            if not self._load_tried:
                self._session = self.runner.load(self.vmfb, self.function, self.target.driver)
                self._load_tried = True
            return self._session

    def benchmark(self, *args: Any, threads: int = 2, repetitions: int = 5) -> BenchResult:
        """Time the entry function on this module's runner with iree-benchmark-module."""
        arrays, _ = self._check(args)
        for name, value in (("threads", threads), ("repetitions", repetitions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Rt3dError(f"benchmark {name} must be a whole number >= 1, got {value!r}",
                                f"for example {name}=2")
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
            if not (hasattr(arg, "shape") and hasattr(arg, "dtype")) and not isinstance(arg, (list, tuple)):
                raise Rt3dError(f"input {i} is a {type(arg).__name__}, the module expects a tensor {spec}",
                                "pass a torch tensor or a numpy array of that shape")
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


_DECLARATION = re.compile(r"func @(?P<name>[\w.$-]+)\((?P<args>.*?)\)\s*->\s*\((?P<results>.*)\)")
_TENSOR = re.compile(r"tensor<(?:(?P<dims>[0-9x]+)x)?(?P<dtype>[a-z]+\d*)>")


def load_module(path: str | Path, target: str | Target = "host", runner: Runner | None = None,
                function: str = "forward") -> CompiledModule:
    """A saved vmfb (``CompiledModule.save``, ``rt3d compile -o``) as a callable CompiledModule.

    The entry function and its input shapes come from the module's own reflection data, so
    only the target it was compiled for is needed (for the runtime driver and runner).
    """
    import iree.runtime as rt

    check_runner_type(runner)
    if not isinstance(path, (str, Path)):
        raise Rt3dError(f"load_module needs a path, got {type(path).__name__}", "pass the .vmfb file's path")
    path = Path(path)
    if path.is_dir():
        raise Rt3dError(f"{path} is a folder, not a compiled module", "pass the .vmfb file's path")
    if not path.is_file():
        raise Rt3dError(f"no such compiled module: {path}", "pass the .vmfb written by rt3d compile -o or .save()")
    vmfb = path.read_bytes()
    try:
        vm_module = rt.VmModule.copy_buffer(rt.VmInstance(), vmfb)
    except (RuntimeError, ValueError) as exc:
        raise Rt3dError(f"{path} is not a loadable IREE module ({exc})",
                        "compile it again with rt3d compile (the same IREE release reads it)") from None
    names = [n for n in vm_module.function_names if not n.startswith("__")]
    chosen = function if function in names else (names[0] if len(names) == 1 else None)
    if chosen is None:
        raise Rt3dError(f"cannot tell which function of {path} to run: {names}", "pass function=NAME")
    declaration = vm_module.lookup_function(chosen).reflection.get("iree.abi.declaration", "")
    match = _DECLARATION.search(declaration)
    if match is None:
        raise Rt3dError(f"{path} carries no signature for {chosen!r}", "compile it again with rt3d compile")
    inputs = []
    for m in _TENSOR.finditer(match["args"]):
        dtype = _DTYPES.get(m["dtype"])
        if dtype is None:
            raise Rt3dError(f"{path}: unsupported argument type {m[0]}", "use static-shape f32 inputs")
        dims = tuple(int(d) for d in m["dims"].split("x")) if m["dims"] else ()
        inputs.append(TensorSpec(dims, np.dtype(dtype)))
    n_outputs = max(1, match["results"].count("%"))
    return CompiledModule(vmfb, resolve_target(target), chosen, inputs, None, n_outputs, runner)
