"""Microkernel lowering of the ``rt3d-kgs-conv3d`` pass for llvm-cpu targets.

Why: IREE's code generation of our gather-GEMM ``linalg.generic`` reaches about 60% of the
machine on dense layers and loses more on KGS layers (short reductions, per-column gathers),
so KGS at a third of the columns ran only 1.6-1.75x faster than dense. A hand-written C
kernel (plugins/ukernel, every register tile spelled out) runs both near peak, which turns
the FLOPs rate into speedup. It enters IREE the documented way for custom code: a
``stream.executable`` whose dispatch function calls the kernel (``hal.import.static``), the
kernel's LLVM bitcode attached as a ``hal.executable.objects`` entry (IREE links it with LTO
and inlines it), and a ``flow.dispatch`` at tensor level. Stock ``iree-compile`` compiles
the result, so ``rt3d opt`` output keeps working.

The code lives in three modules of the ``kgs`` subpackage; this module keeps the names
callers import:

- ``kgs/ukernel_abi.py``: the kernel's interface (symbols, flag bits, constant order, the
  ABI of its bindings and workgroups) and ``Microkernel``;
- ``kgs/ukernel_plan.py``: dispatch sizes, constants and tables (phase planes, frame ranges),
  and the tunables (patch them there, not here: this module only re-binds them);
- ``kgs/ukernel_ir.py``: the MLIR text (the executable and the dispatching helpers), and the
  IREE facts it relies on.
"""

from __future__ import annotations

from .kgs.ukernel_abi import (
    ACCUMULATE,
    EXECUTABLE,
    FORMATS,
    KERNEL_SYMBOL,
    PAD_SYMBOL,
    POOL_PAD_MAX,
    POOL_ROW_MAX,
    POOL_SCRATCH,
    POOL_SMALL_MAX,
    POOL_SMALL_TAPS,
    POOL_SYMBOL,
    RELU,
    STREAM,
    Microkernel,
)
from .kgs.ukernel_ir import executable_text, helper_text, pool_helper_text
from .kgs.ukernel_plan import (
    _STREAM_INPUT,  # noqa: F401 - read by tests
    _TILE_INPUT,  # noqa: F401 - read by tests
    PAD_KERNEL_MIN,
    FrameCall,
    UkernelCall,
    frame_column_offsets,
    frame_ranges_fit,
    input_pad,
    offset_table,
    packed_weights,
    pad_call,
    phase_column_offsets,
    phase_shape,
    plan_call,
    pool_call,
    pool_rows,
    pool_small,
)

__all__ = [
    "ACCUMULATE",
    "EXECUTABLE",
    "FORMATS",
    "KERNEL_SYMBOL",
    "PAD_KERNEL_MIN",
    "PAD_SYMBOL",
    "POOL_PAD_MAX",
    "POOL_ROW_MAX",
    "POOL_SCRATCH",
    "POOL_SMALL_MAX",
    "POOL_SMALL_TAPS",
    "POOL_SYMBOL",
    "RELU",
    "STREAM",
    "FrameCall",
    "Microkernel",
    "UkernelCall",
    "executable_text",
    "frame_column_offsets",
    "frame_ranges_fit",
    "helper_text",
    "input_pad",
    "offset_table",
    "packed_weights",
    "pad_call",
    "phase_column_offsets",
    "phase_shape",
    "plan_call",
    "pool_call",
    "pool_helper_text",
    "pool_rows",
    "pool_small",
]
