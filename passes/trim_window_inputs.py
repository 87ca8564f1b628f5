"""rt3d-trim-window-inputs: slice a windowed op's input down to the extent its window reads.

torch-mlir writes 3-D max pooling with padding as ``tensor.pad`` plus a ``linalg.generic``
whose input map slides a window (``d2 * 2 + d5``). When the padding makes the input larger
than the last window reaches (C3D's pool5, padding (0, 1, 1), on a 2x1x1 map: padded to 2x3x3,
read 2x2x2), IREE 3.13 fails to compile it ("inferred input/output operand #1 has shape's
dimension #1 to be 3, but found 2"). Slicing the input to exactly what is read gives the same
result and compiles. The pass changes nothing else.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from iree.compiler import ir
from iree.compiler.dialects import tensor

logger = logging.getLogger(__name__)

PASS_NAME = "rt3d-trim-window-inputs"
_TERM = re.compile(r"^d(\d+)(?:\s*\*\s*(\d+))?$")


@dataclass
class TrimReport:
    """What the pass did: one entry per sliced operand (location, old shape, new shape)."""

    trimmed: list[tuple[str, list[int], list[int]]]


def _affine_results(attr: ir.Attribute) -> list[str]:
    text = str(attr)
    body = text.split("->", 1)[1].strip()
    body = body[body.index("(") + 1: body.rindex(")")].strip()
    return [r.strip() for r in body.split(",")] if body else []  # "-> ()": a rank-0 operand


def _loop_bounds(op: ir.Operation, maps: list[list[str]]) -> dict[int, int]:
    """Each loop's trip count, read from operands whose map result is a bare ``dN``."""
    bounds: dict[int, int] = {}
    for operand, results in zip(list(op.operands), maps, strict=False):
        shape = ir.RankedTensorType(operand.type).shape
        for dim, expr in zip(shape, results, strict=True):
            m = re.fullmatch(r"d(\d+)", expr)
            if m and dim >= 0:
                bounds[int(m.group(1))] = dim
    return bounds


def _needed(expr: str, bounds: dict[int, int]) -> int | None:
    """1 + the largest index ``expr`` reaches, for sums of ``dN`` and ``dN * c`` terms."""
    reach = 0
    for term in expr.split("+"):
        m = _TERM.fullmatch(term.strip())
        if not m or int(m.group(1)) not in bounds:
            return None
        reach += (bounds[int(m.group(1))] - 1) * int(m.group(2) or 1)
    return reach + 1


class TrimWindowInputsPass:
    """Python-defined MLIR pass (``PassManager.add(TrimWindowInputsPass())``)."""

    name = PASS_NAME

    def __init__(self) -> None:
        self.report = TrimReport([])

    def __call__(self, op: ir.Operation, pass_: object | None = None) -> None:
        module_op = op.operation if isinstance(op, ir.OpView) else op
        generics: list[ir.Operation] = []

        def collect(o: ir.Operation) -> ir.WalkResult:
            if o.name == "linalg.generic":
                generics.append(o)
            return ir.WalkResult.ADVANCE

        module_op.walk(collect)
        for g in generics:
            self._trim(g)

    def _trim(self, op: ir.Operation) -> None:
        maps = [_affine_results(m) for m in ir.ArrayAttr(op.attributes["indexing_maps"])]
        if not all(isinstance(v.type, ir.RankedTensorType) for v in op.operands):
            return
        bounds = _loop_bounds(op, maps)
        n_inputs = len(op.operands) - len(op.results)
        for i in range(n_inputs):
            source = op.operands[i]
            shape = list(ir.RankedTensorType(source.type).shape)
            if len(maps[i]) != len(shape) or any(d < 0 for d in shape):
                continue
            needed = [_needed(e, bounds) for e in maps[i]]
            if any(n is None or n > d for n, d in zip(needed, shape, strict=True)) or needed == shape:
                continue
            elem = ir.RankedTensorType(source.type).element_type
            with ir.InsertionPoint(op), op.location:
                new_type = ir.RankedTensorType.get(needed, elem)
                sliced = tensor.ExtractSliceOp(new_type, source, [], [], [], [0] * len(shape), needed,
                                               [1] * len(shape))
            op.operands[i] = sliced.result
            self.report.trimmed.append((str(op.location), shape, needed))
            logger.info("%s: sliced a window input %s -> %s", PASS_NAME, shape, needed)


def run_trim(module: ir.Module) -> TrimReport:
    """Run the pass on ``module`` in place; return what it sliced."""
    from iree.compiler.passmanager import PassManager

    trim = TrimWindowInputsPass()
    with module.context:
        pm = PassManager("builtin.module")
        pm.add(trim, name=PASS_NAME, argument=PASS_NAME, description=__doc__.splitlines()[0])
        pm.run(module.operation)
    return trim.report
