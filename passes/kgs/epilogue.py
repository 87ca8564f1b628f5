"""What follows a conv in the IR: its bias, a ReLU, a residual addition, a max pool to fuse.

Why a module of its own: the microkernel applies these as it stores, so the pass must find them
around the conv (as torch-mlir writes them) before it rewrites anything. ``match_epilogue``
only reads the IR and says what it found in an ``Epilogue``; the rewrite consumes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from iree.compiler import ir

from ..weights import constant_value
from . import ukernel_plan
from .matchers import _float_constant, _maxpool_window
from .options import ConvGeometry


@dataclass(frozen=True, eq=False)  # holds IR handles and an array: compared by identity
class Epilogue:
    """What the microkernel applies to a conv's result as it stores it, and the ops it replaces.

    Attributes:
        bias: the per-filter bias when the conv's accumulator broadcasts a constant (how
            torch-mlir writes a conv's bias); None: the kernel adds into the accumulator.
        relu: the ReLU generic applied last (after the residual addition when there is one).
        residual: (the elementwise add, r) of a residual connection ``conv + bias + r``.
        pool: (the 3-D max pool, its window) computed by the conv's dispatch.
    """

    bias: np.ndarray | None = None
    relu: ir.Operation | None = None
    residual: tuple[ir.Operation, ir.Value] | None = None
    pool: tuple[ir.Operation, tuple[int, int, int]] | None = None

    @property
    def label(self) -> str:
        """How reports name it: "accumulate" or "bias", then "+residual", "+relu", "+maxpoolAxBxC"."""
        label = ("accumulate" if self.bias is None else "bias") + ("+residual" if self.residual is not None else "")
        label += "+relu" if self.relu is not None else ""
        if self.pool is not None:
            label += "+maxpool" + "x".join(map(str, self.pool[1]))
        return label


def match_epilogue(conv: ir.Operation, geom: ConvGeometry, group_m: int,
                   frames: tuple[int, int] | None = None) -> Epilogue:
    """What the microkernel can apply after ``conv`` (``geom``: the geometry it runs, ``group_m``
    its plan's filters per group, ``frames`` set when it reads a depth-padded input unpadded).

    A ReLU that is the conv's only user is applied as it stores. So is a residual addition
    (ResNet blocks: ``relu(conv(x) + bias + r)``), when the conv has a bias, no ReLU of its own,
    and ``r`` is computed before it; the ReLU after the addition is then taken. A max pool is
    fused only after a biased conv without a residual addition, of stride-1 rows, whose input
    is not read through frame ranges (``frames``).
    """
    init, result = conv.operands[2], conv.results[0]
    bias = _constant_bias(init, geom.f)
    relu = _sole_relu_user(result)
    residual = _sole_residual_add(result) if bias is not None and relu is None else None
    if residual is not None and not _available_at(residual[1], conv):
        residual = None  # r is computed after the conv (then r's own conv may take the addition)
    if residual is not None:
        relu = _sole_relu_user(residual[0].results[0])
    pool = None
    if bias is not None and residual is None and geom.rows_contiguous and frames is None:
        pool = _fusable_pool(relu.results[0] if relu is not None else result, geom, group_m)
    return Epilogue(bias=bias, relu=relu, residual=residual, pool=pool)


def _constant_bias(init: ir.Value, filters: int) -> np.ndarray | None:
    """The per-filter bias if ``init`` broadcasts a constant along the filter dim, else None."""
    op = init.owner
    if not isinstance(op, (ir.Operation, ir.OpView)):
        return None
    op = op.operation if isinstance(op, ir.OpView) else op
    if op.name == "linalg.fill":
        value = _float_constant(op.operands[0])
        return None if value is None else np.full(filters, value, np.float32)
    if op.name == "linalg.broadcast" and list(ir.DenseI64ArrayAttr(op.attributes["dimensions"])) == [0, 2, 3, 4]:
        value = constant_value(op.operands[0])
        if value is not None and value.shape == (filters,):
            return value.astype(np.float32)
    return None


def _fusable_pool(value: ir.Value, geom: ConvGeometry,
                  group_m: int) -> tuple[ir.Operation, tuple[int, int, int]] | None:
    """(pool op, window) if ``value``'s only user is a 3-D max pool the kernel can fuse: window
    equal to its stride (no overlap), no padding, floor sizes, and a stack buffer big enough
    for one pooled row (ukernel_plan.pool_rows)."""
    uses = list(value.uses)
    if len(uses) != 1:
        return None
    user = uses[0].owner
    user = user.operation if isinstance(user, ir.OpView) else user
    if user.name != "linalg.generic" or user.operands[0] != value:
        return None
    found = _maxpool_window(user)
    if found is None or found[0] != found[1]:
        return None
    window = found[0]
    pooled = tuple(ir.RankedTensorType(user.results[0].type).shape)
    if pooled != (geom.n, geom.f, geom.od // window[0], geom.oh // window[1], geom.ow // window[2]):
        return None
    if min(pooled[2:]) < 1 or ukernel_plan.pool_rows(geom, group_m, window) < 1:
        return None
    return user, window


def _sole_elementwise_user(result: ir.Value, inputs: int) -> ir.Operation | None:
    """The 5-D elementwise ``linalg.generic`` (identity maps, ``inputs`` inputs, ``result``'s
    type) that is ``result``'s only user, if there is one; ``result`` is among its inputs."""
    uses = list(result.uses)
    if len(uses) != 1:
        return None
    user = uses[0].owner
    user = user.operation if isinstance(user, ir.OpView) else user
    if user.name != "linalg.generic" or len(user.operands) != inputs + 1 or user.results[0].type != result.type:
        return None
    if result not in list(user.operands)[:inputs]:
        return None
    if str(user.attributes["iterator_types"]).count("parallel") != 5:
        return None
    identity = "(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)"
    if any(identity not in str(m) for m in ir.ArrayAttr(user.attributes["indexing_maps"])):
        return None
    return user


def _sole_relu_user(result: ir.Value) -> ir.Operation | None:
    """The elementwise ``max(x, 0)`` generic that is ``result``'s only user, if there is one.

    torch-mlir writes ReLU as ``select(cmpf ugt x, 0), x, 0)``; ``arith.maximumf`` is also taken.
    """
    user = _sole_elementwise_user(result, 1)
    if user is None:
        return None
    block = user.regions[0].blocks[0]
    ops = [o.operation for o in block.operations]
    arg = block.arguments[0]

    def is_zero(v: ir.Value) -> bool:
        return _float_constant(v) == 0.0

    names = [o.name for o in ops]
    if names == ["arith.maximumf", "linalg.yield"]:
        m = ops[0]
        ok = (m.operands[0] == arg and is_zero(m.operands[1])) or (m.operands[1] == arg and is_zero(m.operands[0]))
        return user if ok and ops[1].operands[0] == m.results[0] else None
    if names == ["arith.cmpf", "arith.select", "linalg.yield"]:
        cmp, sel, yld = ops
        pred = str(cmp.attributes["predicate"])
        # ogt / ugt are arith.cmpf predicates 2 / 9
        if not (cmp.operands[0] == arg and is_zero(cmp.operands[1]) and pred.split(":")[0].strip() in ("2", "9")):
            return None
        if sel.operands[0] != cmp.results[0] or sel.operands[1] != arg or not is_zero(sel.operands[2]):
            return None
        return user if yld.operands[0] == sel.results[0] else None
    return None


def _available_at(value: ir.Value, op: ir.Operation) -> bool:
    """True if ``value`` is defined before ``op`` in its block (or is an argument of it)."""
    owner = value.owner
    if isinstance(owner, ir.Block):
        return owner == op.block
    owner = owner.operation if isinstance(owner, ir.OpView) else owner
    return owner.block == op.block and owner.is_before_in_block(op)


def _sole_residual_add(result: ir.Value) -> tuple[ir.Operation, ir.Value] | None:
    """(the add, r) if ``result``'s only user is the elementwise ``result + r`` of a tensor
    ``r`` of its type (torch-mlir's residual connection), else None."""
    user = _sole_elementwise_user(result, 2)
    if user is None:
        return None
    a, b = user.operands[0], user.operands[1]
    if a == b or a.type != b.type:
        return None
    block = user.regions[0].blocks[0]
    ops = [o.operation for o in block.operations]
    if [o.name for o in ops] != ["arith.addf", "linalg.yield"] or ops[1].operands[0] != ops[0].results[0]:
        return None
    if {ops[0].operands[0], ops[0].operands[1]} != {block.arguments[0], block.arguments[1]}:
        return None
    return user, b if a == result else a
