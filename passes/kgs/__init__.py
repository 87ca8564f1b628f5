"""The ``rt3d-kgs-conv3d`` pass, split by concern (see ``kgs_conv3d.py`` for what it does).

Modules, each importing only those above it:

- ``ukernel_abi``: what the hand-written kernel (plugins/ukernel) and the pass agree on;
- ``options``: the pass's options and reports, and the plain facts it plans from;
- ``plan``: KGS planning, numpy only (compacted weights and gather offsets);
- ``ukernel_plan``: sizes, constants and workgroup grids of the microkernel dispatches;
- ``ukernel_ir``: MLIR text of the microkernel executable and of the helpers that dispatch it;
- ``emit``: MLIR text of the code generation path's gather-matmul kernel;
- ``matchers``: IR pattern matchers on a conv's input and on pools;
- ``epilogue``: what follows a conv (bias, ReLU, residual add, fused pool), found in the IR;
- ``rewrite``: the pass itself, which rewrites the IR.

``rt3d_iree.passes.kgs_conv3d`` and ``rt3d_iree.passes.kgs_ukernel`` re-export the public names.
"""
