"""Read the values of constant tensors out of MLIR, including ``dense_resource`` blobs.

torch-mlir imports every parameter as a ``dense_resource`` blob, and the MLIR Python
bindings expose no accessor for a blob's bytes. The KGS pass must see the weight values
(it finds the pruned columns itself), so we print a throw-away module that holds only a
clone of the constant: the printer then emits just that one blob in the
``dialect_resources`` section, which we decode. This costs one hex round trip per weight,
which is small next to the compile itself and needs no private API.
"""

from __future__ import annotations

import io
import re

import numpy as np
from iree.compiler import ir

_NP_DTYPES = {
    "f32": np.float32,
    "f64": np.float64,
    "f16": np.float16,
    "i32": np.int32,
    "i64": np.int64,
    "i8": np.int8,
}

_BLOB_RE = re.compile(rb':\s*"0x([0-9A-Fa-f]*)"')


def element_dtype(tensor_type: ir.RankedTensorType) -> np.dtype | None:
    """numpy dtype of a tensor type's element type, or None if we do not read it."""
    return _NP_DTYPES.get(str(tensor_type.element_type))


def constant_value(value: ir.Value) -> np.ndarray | None:
    """Values of ``value`` if it is produced by an ``arith.constant`` of a ranked tensor.

    Returns None for anything that is not a readable constant (block arguments, computed
    values, unsupported element types), so callers can leave such ops alone.
    """
    owner = value.owner
    if not isinstance(owner, (ir.Operation, ir.OpView)):
        return None
    op = owner.operation if isinstance(owner, ir.OpView) else owner
    if op.name != "arith.constant" or "value" not in op.attributes:
        return None
    try:
        ttype = ir.RankedTensorType(value.type)
    except ValueError:
        return None
    dtype = element_dtype(ttype)
    if dtype is None:
        return None
    shape = tuple(ttype.shape)
    attr = op.attributes["value"]
    if _is_resource(attr):
        return _resource_value(op, dtype, shape)
    if isinstance(attr, ir.DenseElementsAttr):
        if attr.is_splat:
            return np.full(shape, np.array(attr.get_splat_value().value, dtype=dtype))
        return np.array(attr, copy=True).astype(dtype, copy=False).reshape(shape)
    return None


def _is_resource(attr: ir.Attribute) -> bool:
    # The bindings do not downcast dense_resource attributes; a checked cast tells.
    try:
        ir.DenseResourceElementsAttr(attr)
    except ValueError:
        return False
    return True


def _resource_value(op: ir.Operation, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
    """Decode a dense_resource blob by printing a module that holds only ``op``."""
    with op.context, ir.Location.unknown():
        scratch = ir.Module.create()
        with ir.InsertionPoint(scratch.body):
            op.clone()
    buf = io.BytesIO()
    scratch.operation.print(file=buf, binary=True)
    match = _BLOB_RE.search(buf.getvalue())
    if match is None:
        return None
    raw = bytes.fromhex(match.group(1).decode("ascii"))
    # The first 4 bytes of a blob are its alignment (little-endian u32).
    data = np.frombuffer(raw[4:], dtype=dtype)
    if data.size != int(np.prod(shape)):
        return None
    return data.reshape(shape).copy()
