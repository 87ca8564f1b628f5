"""The ``rt3d-kgs-conv3d`` pass: linalg 3-D convolutions -> KGS-compacted gather matmuls.

Why: IREE lowers ``linalg.conv_3d_ncdhw_fcdhw`` about 10x slower than PyTorch, and it
cannot exploit structured zeros. In the im2col view a conv is ``W[F, C*K] @ X_col[C*K, P]``.
Kernel Group Structured (KGS) sparsity zeroes the same columns for every filter of a group
of ``gM`` filters, so each group is a dense, compacted matmul whose right-hand rows are
gathered from the padded input through a constant index table. We emit exactly that as a
single ``linalg.generic`` (an implicit GEMM: the gathered rows are never materialised) with
a lowering configuration that makes IREE's CPU codegen run it at matmul speed. A dense conv
is KGS with every column kept, so it takes the same fast path.

The pass reads weight values itself (including torch-mlir's ``dense_resource`` blobs), so
it speeds up any model whose zeros follow the structure, whoever pruned it. Convs it
cannot handle are left to IREE's default lowering with a logged reason.

Each rewritten conv becomes a ``func.call`` to a private helper function holding the
kernel; IREE's inliner folds it back in, and the helper keeps ``rt3d opt`` output readable.

With ``KgsConv3dOptions.microkernel`` (llvm-cpu targets), the helper instead dispatches the
hand-written kernel of plugins/ukernel (see kgs_ukernel.py): the same compacted weights and
gather offsets, run near the machine's peak, with bias and ReLU applied as it stores; 3-D max
pools then run on the same kernel library.

The code lives in the ``kgs`` subpackage, one module per concern (``kgs/__init__.py`` lists
them); this module keeps the names callers import.
"""

from __future__ import annotations

from .kgs.emit import emit_kernel
from .kgs.epilogue import Epilogue, match_epilogue
from .kgs.matchers import conv_geometry
from .kgs.options import ConvGeometry, ConvReport, KgsConv3dOptions, KgsPlan, NotHandled, PassReport
from .kgs.plan import plan_kgs
from .kgs.rewrite import CONV_OP, PASS_NAME, KgsConv3dPass, run_pass
from .kgs.ukernel_abi import Microkernel

__all__ = [
    "CONV_OP",
    "PASS_NAME",
    "ConvGeometry",
    "ConvReport",
    "Epilogue",
    "KgsConv3dOptions",
    "KgsConv3dPass",
    "KgsPlan",
    "Microkernel",
    "NotHandled",
    "PassReport",
    "conv_geometry",
    "emit_kernel",
    "match_epilogue",
    "plan_kgs",
    "run_pass",
]
