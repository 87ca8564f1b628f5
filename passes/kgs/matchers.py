"""IR matchers of the ``rt3d-kgs-conv3d`` pass: a conv's geometry and input, pools, constants.

Why a module of its own: recognising torch-mlir's forms (zero and -inf ``tensor.pad``, trimmed
pool inputs, 3-D max pools, grouped convs written as generics) is separate from deciding what
to emit; these functions only read the IR, never change it. What follows a conv is matched in
``epilogue``.
"""

from __future__ import annotations

import re

from iree.compiler import ir

from . import ukernel_abi, ukernel_plan
from .options import ConvGeometry, NotHandled


def conv_geometry(op: ir.Operation) -> ConvGeometry:
    """Read the static geometry of a ``linalg.conv_3d_ncdhw_fcdhw`` op."""
    x_t = ir.RankedTensorType(op.operands[0].type)
    w_t = ir.RankedTensorType(op.operands[1].type)
    o_t = ir.RankedTensorType(op.results[0].type)
    for t in (x_t, w_t, o_t):
        if not t.has_static_shape:
            raise NotHandled("dynamic shapes are not supported")
        if str(t.element_type) != "f32":
            raise NotHandled(f"element type {t.element_type} is not f32")
    n, c, d, h, w = x_t.shape
    f, wc, kd, kh, kw = w_t.shape
    if wc != c:
        raise NotHandled(f"weight has {wc} input channels but input has {c} (grouped conv)")
    strides = tuple(int(v) for v in ir.DenseIntElementsAttr(op.attributes["strides"]))
    dilations = tuple(int(v) for v in ir.DenseIntElementsAttr(op.attributes["dilations"]))
    _, _, od, oh, ow = o_t.shape
    return ConvGeometry(n, c, d, h, w, f, kd, kh, kw, strides, dilations, od, oh, ow)


def _is_constant_expr(value: ir.Value, limit: int = 10_000) -> bool:
    """True if ``value`` is computed from constants only (no function argument reaches it)."""
    stack, seen = [value], 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > limit or isinstance(v.owner, ir.Block):
            return False  # a block argument: the function's input (or too deep to tell)
        stack.extend(v.owner.operands)
    return True


def _is_generic_conv3d(op: ir.Operation) -> bool:
    """A linalg.generic that slides a 3-D window: an input map with three ``dX + dY`` results,
    at least three reduction loops and a multiply in its body (how torch-mlir writes grouped
    conv3d; padded 3-D max pooling slides a window too, but takes a maximum)."""
    try:
        maps = ir.ArrayAttr(op.attributes["indexing_maps"])
        iters = str(op.attributes["iterator_types"])
    except (KeyError, ValueError):
        return False
    if iters.count("reduction") < 3 or not len(maps):
        return False
    results = str(maps[0]).split("->", 1)[-1]
    if results.count("+") < 3:
        return False
    body = op.regions[0].blocks[0]
    return any(o.operation.name in ("arith.mulf", "arith.muli") for o in body.operations)


_POOL_TERM = re.compile(r"^d(\d)(?:\s*\*\s*(\d+))?\s*\+\s*d(\d)$")


def _maxpool_window(op: ir.Operation) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """(window, strides) if ``op`` is torch-mlir's 3-D max pool the pooling kernel computes.

    The form: ins(x [N,C,D,H,W], window [kd,kh,kw]) outs(fill -inf), maps
    (d0, d1, d2 * sd + d5, d3 * sh + d6, d4 * sw + d7), (d5, d6, d7), identity; body
    ``maximumf(in, out)``; no dilation; rows no wider than the kernel's row buffer.
    """
    if len(op.operands) != 3 or len(op.results) != 1:
        return None
    try:
        maps = [str(m).split("->", 1)[1].strip().rstrip(">").strip()
                for m in ir.ArrayAttr(op.attributes["indexing_maps"])]
        iters = str(op.attributes["iterator_types"])
    except (KeyError, ValueError):
        return None
    if iters.count("parallel") != 5 or iters.count("reduction") != 3:
        return None
    if maps[1] != "(d5, d6, d7)" or maps[2] != "(d0, d1, d2, d3, d4)":
        return None
    terms = [t.strip() for t in maps[0].removeprefix("(").removesuffix(")").split(",")]
    if len(terms) != 5 or terms[:2] != ["d0", "d1"]:
        return None
    strides = []
    for i, term in enumerate(terms[2:]):
        m = _POOL_TERM.fullmatch(term)
        if not m or int(m.group(1)) != 2 + i or int(m.group(3)) != 5 + i:
            return None
        strides.append(int(m.group(2) or 1))
    types = [ir.RankedTensorType(v.type) for v in op.operands]
    if any(not t.has_static_shape or str(t.element_type) != "f32" for t in types) or types[0].rank != 5:
        return None
    ops = [o.operation for o in op.regions[0].blocks[0].operations]
    block = op.regions[0].blocks[0]
    if [o.name for o in ops] != ["arith.maximumf", "linalg.yield"]:
        return None
    if list(ops[0].operands) != [block.arguments[0], block.arguments[2]]:
        return None
    init = op.operands[2].owner
    init = init.operation if isinstance(init, ir.OpView) else init
    if (not isinstance(init, ir.Operation) or init.name != "linalg.fill"
            or _float_constant(init.operands[0]) != float("-inf")):
        return None
    window = tuple(types[1].shape)
    ow = ir.RankedTensorType(op.results[0].type).shape[4]
    if (ow - 1) * strides[2] + window[2] > ukernel_abi.POOL_ROW_MAX:
        return None
    return window, tuple(strides)


def _frames_only_pad(x: ir.Value, geom: ConvGeometry) -> tuple[int, int] | None:
    """(depth padding before, input depth) if the conv's input ``x`` is a zero pad in depth
    only that the kernel can do without (ukernel_plan.frame_ranges_fit), else None."""
    found = _zero_pad_of(x)
    if found is None:
        return None
    shape, low, high = found
    if any(low[i] or high[i] for i in (0, 1, 3, 4)) or not (low[2] or high[2]):
        return None
    if not ukernel_plan.frame_ranges_fit(geom, shape[2]):
        return None
    return low[2], shape[2]


def _zero_pad_of(value: ir.Value) -> tuple[list[int], list[int], list[int]] | None:
    """(source shape, low, high) if ``value`` is a static zero ``tensor.pad`` of a 5-D tensor."""
    return _constant_pad_of(value, 0.0)


def _pool_pad_foldable(shape: list[int], low: list[int], high: list[int], out_shape: list[int],
                       window: tuple[int, int, int], strides: tuple[int, int, int]) -> bool:
    """Whether the pooling kernel can read a pool's -inf-padded input unpadded: padding in D,
    H, W only, and every window holds at least one input element (else its maximum would be
    -inf from padding alone, which the kernel does not compute)."""
    if any(low[:2]) or any(high[:2]) or min(low) < 0 or min(high) < 0 or low[4] > ukernel_abi.POOL_PAD_MAX:
        return False
    return all(lo < k and (o - 1) * s - lo < n
               for n, o, k, s, lo in zip(shape[2:], out_shape[2:], window, strides, low[2:], strict=True))


def _defining_op(value: ir.Value) -> ir.Operation | None:
    """The operation that defines ``value`` (None for a block argument)."""
    op = value.owner
    if isinstance(op, ir.OpView):
        return op.operation
    return op if isinstance(op, ir.Operation) else None


def _leading_slice(value: ir.Value) -> ir.Operation | None:
    """The op if ``value`` is a static ``tensor.extract_slice`` at offset 0 with unit strides
    (a leading corner: what rt3d-trim-window-inputs makes of a pool's padded input)."""
    op = _defining_op(value)
    if op is None or op.name != "tensor.extract_slice" or len(op.operands) != 1:  # dynamic parts: operands
        return None
    offsets = list(ir.DenseI64ArrayAttr(op.attributes["static_offsets"]))
    strides = list(ir.DenseI64ArrayAttr(op.attributes["static_strides"]))
    if any(offsets) or any(s != 1 for s in strides):
        return None
    return op


def _constant_pad_of(value: ir.Value, fill: float) -> tuple[list[int], list[int], list[int]] | None:
    """(source shape, low, high) if ``value`` is a static ``tensor.pad`` of a 5-D tensor with ``fill``."""
    op = _defining_op(value)
    if op is None or op.name != "tensor.pad" or len(op.operands) != 1:  # dynamic low / high come as operands
        return None
    yielded = op.regions[0].blocks[0].operations[0]
    if yielded.operation.name != "tensor.yield" or _float_constant(yielded.operands[0]) != fill:
        return None
    src = ir.RankedTensorType(op.operands[0].type)
    if not src.has_static_shape or src.rank != 5:
        return None
    low = list(ir.DenseI64ArrayAttr(op.attributes["static_low"]))
    high = list(ir.DenseI64ArrayAttr(op.attributes["static_high"]))
    return list(src.shape), low, high


def _float_constant(value: ir.Value) -> float | None:
    """The value of a scalar float ``arith.constant``, else None."""
    owner = value.owner
    if not isinstance(owner, (ir.Operation, ir.OpView)):
        return None
    owner = owner.operation if isinstance(owner, ir.OpView) else owner
    if owner.name != "arith.constant":
        return None
    try:
        return ir.FloatAttr(owner.attributes["value"]).value
    except ValueError:
        return None
