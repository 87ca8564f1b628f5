"""The rewrite driver of the ``rt3d-kgs-conv3d`` pass: ``KgsConv3dPass`` and ``run_pass``.

Why a module of its own: this is the only part that changes the IR. It walks the module, asks
the matchers, the planner and the epilogue what to do with each conv and pool, emits the
kernels' text (``emit``, ``ukernel_ir``) and splices it in; convs it cannot handle are left to
IREE's default lowering with a logged reason (``NotHandled``).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, func

from ..kernel_config import SpirvKernelConfig
from ..weights import constant_value
from . import ukernel_ir, ukernel_plan
from .emit import emit_kernel
from .epilogue import match_epilogue
from .matchers import (
    _constant_pad_of,
    _defining_op,
    _frames_only_pad,
    _is_constant_expr,
    _is_generic_conv3d,
    _leading_slice,
    _maxpool_window,
    _pool_pad_foldable,
    _zero_pad_of,
    conv_geometry,
)
from .options import ConvGeometry, ConvReport, KgsConv3dOptions, KgsPlan, NotHandled, PassReport
from .plan import plan_kgs

# The name the pass has always logged under (rt3d's CLI prints it with each message).
logger = logging.getLogger("rt3d_iree.passes.kgs_conv3d")

PASS_NAME = "rt3d-kgs-conv3d"
PASS_DESCRIPTION = "The ``rt3d-kgs-conv3d`` pass: linalg 3-D convolutions -> KGS-compacted gather matmuls."
CONV_OP = "linalg.conv_3d_ncdhw_fcdhw"
_INT32_MAX = 2**31 - 1


class KgsConv3dPass:
    """Python-defined MLIR pass; add it with ``PassManager.add(KgsConv3dPass(options))``.

    After it runs, ``report`` lists every conv it saw and what it did.
    """

    name = PASS_NAME

    def __init__(self, options: KgsConv3dOptions | None = None) -> None:
        self.options = options or KgsConv3dOptions()
        self.report = PassReport()

    def __call__(self, op: ir.Operation, pass_: object | None = None) -> None:
        module_op = op.operation if isinstance(op, ir.OpView) else op
        convs: list[ir.Operation] = []

        def collect(o: ir.Operation) -> ir.WalkResult:
            if o.name == CONV_OP:
                convs.append(o)
            elif o.name.startswith("linalg.") and "conv_3d" in o.name:
                self.report.convs.append(
                    ConvReport(str(o.location), False, f"{o.name} is not supported (only {CONV_OP})")
                )
                logger.info("leaving %s at %s to IREE: unsupported conv form", o.name, o.location)
            elif o.name == "linalg.generic" and _is_generic_conv3d(o):
                reason = ("a 3-D convolution written as linalg.generic (torch-mlir emits grouped conv3d, "
                          "groups > 1, this way) is not supported")
                self.report.convs.append(ConvReport(str(o.location), False, reason))
                logger.info("leaving conv at %s to IREE: %s", o.location, reason)
            return ir.WalkResult.ADVANCE

        module_op.walk(collect)
        body = module_op.regions[0].blocks[0]
        self._ukernel_calls: list[ukernel_plan.UkernelCall | ukernel_plan.FrameCall] = []
        self._ukernel_helpers: list[str] = []
        for index, conv in enumerate(convs):
            try:
                self.report.convs.append(self._rewrite(conv, body, f"rt3d_kgs_conv3d_{index}"))
            except NotHandled as exc:
                logger.info("leaving conv at %s to IREE: %s", conv.location, exc)
                self.report.convs.append(ConvReport(str(conv.location), False, str(exc)))
        # Pools not fused into a conv above get a dispatch of their own.
        pools: list[ir.Operation] = []
        if self.options.microkernel is not None and not isinstance(self.options.kernel_config(), SpirvKernelConfig):
            def collect_pools(o: ir.Operation) -> ir.WalkResult:
                if o.name == "linalg.generic" and _maxpool_window(o) is not None:
                    pools.append(o)
                return ir.WalkResult.ADVANCE

            module_op.walk(collect_pools)
        for index, pool in enumerate(pools):
            self._rewrite_pool(pool, f"rt3d_maxpool3d_{index}")
        if self._ukernel_calls:
            # Parsed together: the helpers' flow.dispatch ops refer to the executable's exports.
            text = ukernel_ir.executable_text(self._ukernel_calls, self.options.microkernel)
            with module_op.context, ir.Location.unknown():
                parsed = ir.Module.parse("module {" + text + "".join(self._ukernel_helpers) + "\n}")
                for op in list(parsed.body.operations):
                    op.operation.move_before(body.operations[0])

    def _rewrite(self, conv: ir.Operation, body: ir.Block, name: str) -> ConvReport:
        opts = self.options
        geom = conv_geometry(conv)
        weight = constant_value(conv.operands[1])
        if weight is None:
            raise NotHandled("weight is not a constant tensor (the pass reads weight values)")
        total = geom.n * geom.c * geom.d * geom.h * geom.w
        if total + geom.c * geom.d * geom.h * geom.w > _INT32_MAX:
            raise NotHandled("input too large for 32-bit gather offsets")
        init = conv.operands[2]
        result = conv.results[0]
        config = opts.kernel_config()
        spirv = isinstance(config, SpirvKernelConfig)
        # A conv whose input is constant (after a fully pruned conv) is evaluated by IREE at
        # compile time for the compiling machine: the target's kernel object is not linked
        # there (found by the fuzzer on aarch64: undefined symbol) and a GPU tiling does not
        # lower there ("gpu.thread_id ... LLVM IR"). Such convs take plain code generation.
        constant_input = _is_constant_expr(conv.operands[0])
        ukernel = opts.microkernel is not None and not spirv and not constant_input
        subsampled = None
        if ukernel and geom.kernel_volume == 1 and not geom.rows_contiguous and _zero_pad_of(conv.operands[0]) is None:
            # A strided 1x1x1 conv (ResNet downsampling) reads one input element in sd*sh*sw:
            # the pooling kernel with a 1x1x1 window copies just those (the phase planes below
            # copy all of it, R(2+1)D: 0.6 ms of its 0.7 for three; IREE's strided
            # tensor.extract_slice 0.4), then it is a stride-1 conv.
            subsampled = self._subsample(conv.operands[0], geom, conv, name + "_subsample")
            geom = replace(geom, d=geom.od, h=geom.oh, w=geom.ow, strides=(1, 1, 1))
        # Strided rows: the microkernel reads the input as phase planes (ukernel_plan.py).
        col_offset = ukernel_plan.phase_column_offsets(geom) if ukernel and not geom.rows_contiguous else None
        # Padded in depth only (temporal convs): the kernel reads the unpadded input, each output
        # frame only the kernel frames inside it, so the input is not copied at all.
        frames = _frames_only_pad(conv.operands[0], geom) if ukernel and geom.rows_contiguous else None
        if frames is not None:
            col_offset = ukernel_plan.frame_column_offsets(geom, *frames)
        plan = plan_kgs(weight, geom, opts.group_m, opts.group_n, col_offset=col_offset, by_frame=frames is not None)
        if spirv and plan.group_m == 1:
            # A unit filter loop is folded by IREE, after which our SPIR-V tiling no longer
            # fits (wrong results or failed compiles, found by the fuzzer) and IREE's own
            # choice is a subgroup reduction assuming the target's width: pair the filters.
            plan = plan_kgs(weight, geom, 2, opts.group_n)
        k_total = geom.c * geom.kernel_volume
        kept = int(plan.kept_per_group.sum())
        positions = geom.n * geom.od * geom.oh * geom.ow
        per_col = positions * plan.group_m
        real_rows = np.minimum(plan.group_m, geom.f - np.arange(plan.groups) * plan.group_m)
        report = ConvReport(
            location=str(conv.location),
            rewritten=True,
            dense_macs=geom.dense_macs,
            kept_macs=int((plan.kept_per_group * real_rows).sum()) * positions,
            executed_macs=plan.groups * plan.columns * per_col,
            kgs_conforming=plan.kgs_conforming,
        )
        if plan.columns == 0:
            # Fully pruned layer: the output is the accumulator (bias or zeros).
            result.replace_all_uses_with(init)
            conv.erase()
            logger.info("conv at %s is fully pruned: replaced by its bias", report.location)
            return report
        if ukernel:
            report.kernel = "microkernel"
            report.executed_macs = kept * per_col  # it runs each group's own column count
            report.epilogue = self._rewrite_ukernel(conv, geom, plan, name, frames, subsampled)
            return report
        report.kernel = "codegen"
        waste = 1 - kept / max(1, plan.groups * plan.columns)
        if waste > opts.max_padding_waste:
            logger.info(
                "conv at %s: unbalanced groups waste %.0f%% of MACs on padding", report.location, waste * 100
            )
        if spirv and constant_input:
            config = None  # no GPU tiling where IREE evaluates it on the host (see above)
        text = emit_kernel(name, geom, plan, config)
        with conv.context, conv.location:
            helper = ir.Module.parse("module {" + text + "\n}")
            fn = helper.body.operations[0]
            fn.operation.move_before(body.operations[0])
            with ir.InsertionPoint(conv):
                w_attr = ir.DenseElementsAttr.get(np.ascontiguousarray(plan.weights))
                off_attr = ir.DenseElementsAttr.get(np.ascontiguousarray(plan.offsets))
                w_val = arith.ConstantOp(w_attr.type, w_attr).result
                off_val = arith.ConstantOp(off_attr.type, off_attr).result
                args = [conv.operands[0], init, w_val, off_val]
                call = func.CallOp([result.type], ir.FlatSymbolRefAttr.get(name), args)
        result.replace_all_uses_with(call.results[0])
        conv.erase()
        logger.debug(
            "rewrote conv at %s: %d groups x %d columns of %d (%.1f%% kept)",
            report.location, plan.groups, plan.columns, k_total, 100 * kept / max(1, plan.groups * k_total),
        )
        return report

    def _rewrite_pool(self, pool: ir.Operation, name: str) -> None:
        """Replace a 3-D max pool by the microkernel's pooling dispatch (IREE's own lowering of
        the pooling generic ran at a quarter of memory speed; C3D spends 25 ms in pools)."""
        window, strides = _maxpool_window(pool)
        x, result = pool.operands[0], pool.results[0]
        if _is_constant_expr(x):
            return  # evaluated at compile time on this machine (see _rewrite)
        out_shape = ir.RankedTensorType(result.type).shape
        low, pad_op = (0, 0, 0), None
        slice_op = _leading_slice(x)  # rt3d-trim-window-inputs cut the padding's end
        padded_x = x if slice_op is None else slice_op.operands[0]
        padded = _constant_pad_of(padded_x, float("-inf"))
        if padded is not None and _pool_pad_foldable(*padded, out_shape, window, strides):
            # The kernel reads the input unpadded (the padding is -inf: skipped). IREE would
            # fill the padded tensor and copy the input into it.
            pad_op = _defining_op(padded_x)
            x, low = pad_op.operands[0], tuple(padded[1][2:])
        pooled = self._pool_dispatch(x, out_shape, window, strides, low, name, pool)
        result.replace_all_uses_with(pooled)
        pool.erase()
        if pad_op is not None:
            self.report.unpadded_pools += 1
            for dead in (slice_op, pad_op):
                if dead is not None and not list(dead.results[0].uses):
                    dead.erase()
        self.report.pools += 1

    def _subsample(self, x: ir.Value, geom: ConvGeometry, before: ir.Operation, name: str) -> ir.Value:
        """``x[:, :, ::sd, ::sh, ::sw]`` cut to ``geom``'s output extent, by the pooling
        dispatch (a 1x1x1 window), called before ``before``."""
        self.report.subsampled += 1
        out_shape = [geom.n, geom.c, geom.od, geom.oh, geom.ow]
        return self._pool_dispatch(x, out_shape, (1, 1, 1), geom.strides, (0, 0, 0), name, before)

    def _pool_dispatch(self, x: ir.Value, out_shape, window, strides, low, name: str,
                       before: ir.Operation) -> ir.Value:
        """The pooling kernel's dispatch on ``x`` (helper ``name``), called before ``before``."""
        call = ukernel_plan.pool_call(f"pool{len(self._ukernel_calls)}", ir.RankedTensorType(x.type).shape,
                                     out_shape, window, strides, low)
        self._ukernel_calls.append(call)
        self._ukernel_helpers.append(ukernel_ir.pool_helper_text(name, call))
        with before.context, before.location, ir.InsertionPoint(before):
            out_t = ir.RankedTensorType.get(list(out_shape), ir.RankedTensorType(x.type).element_type)
            return func.CallOp([out_t], ir.FlatSymbolRefAttr.get(name), [x]).results[0]

    def _rewrite_ukernel(self, conv: ir.Operation, geom: ConvGeometry, plan: KgsPlan, name: str,
                         frames: tuple[int, int] | None = None, x: ir.Value | None = None) -> str:
        """Replace ``conv`` by a call to a helper that dispatches the microkernel; return the
        epilogue's label for the report.

        The kernel applies what ``match_epilogue`` finds as it stores. The bias is passed to the
        kernel when the conv's accumulator is a broadcast constant (how torch-mlir writes a
        conv's bias); otherwise the kernel adds into the accumulator. A ReLU that is the conv's
        only user is applied by the kernel as it stores. So is a residual addition (ResNet
        blocks: ``relu(conv(x) + bias + r)``): the kernel adds into ``r`` in place, which saves
        the elementwise dispatch's pass over memory (R(2+1)D: eight of them, 12.8 MB each in
        its first stage).
        """
        init, result = conv.operands[2], conv.results[0]
        epilogue = match_epilogue(conv, geom, plan.group_m, frames)
        bias, relu, residual, pool = epilogue.bias, epilogue.relu, epilogue.residual, epilogue.pool
        call = ukernel_plan.plan_call(f"conv{len(self._ukernel_calls)}", geom, plan, relu is not None, bias is None,
                                     phased=not geom.rows_contiguous, pool=pool[1] if pool else None, frames=frames,
                                     residual=residual is not None)
        self._ukernel_calls.append(call)
        x = conv.operands[0] if x is None else x  # (``x``: the conv's input, subsampled)
        source_pad = _zero_pad_of(x)
        pad_op = None
        if source_pad is not None:
            pad_op = _defining_op(x)
            x = pad_op.operands[0]
            if frames is not None:  # the kernel reads it as it is
                source_pad = (source_pad[0], [0] * 5, [0] * 5)
        pad = None
        x_shape, low, high = ukernel_plan.input_pad(geom, call, source_pad)
        if call.phase is None and (any(low) or any(high)):  # the phase layout keeps tensor.pad + transpose
            pad = ukernel_plan.pad_call(f"pad{len(self._ukernel_calls)}", x_shape, low, high)
            if pad is not None:
                self._ukernel_calls.append(pad)
                self.report.pads += 1
        self._ukernel_helpers.append(ukernel_ir.helper_text(name, geom, call, source_pad, pad))
        with conv.context, conv.location, ir.InsertionPoint(conv):
            w_attr = ir.DenseElementsAttr.get(ukernel_plan.packed_weights(plan).reshape(-1))
            off_attr = ir.DenseElementsAttr.get(ukernel_plan.offset_table(plan, call))
            if bias is None:
                second = init
            else:
                b_attr = ir.DenseElementsAttr.get(bias)
                second = arith.ConstantOp(b_attr.type, b_attr).result
            args = [x, second, arith.ConstantOp(w_attr.type, w_attr).result,
                    arith.ConstantOp(off_attr.type, off_attr).result]
            if residual is not None:
                args.append(residual[1])
            out_type = pool[0].results[0].type if pool else result.type
            call_op = func.CallOp([out_type], ir.FlatSymbolRefAttr.get(name), args)
        if pool is not None:
            pool_op = pool[0]
            pool_init = pool_op.operands[2].owner
            pool_op.results[0].replace_all_uses_with(call_op.results[0])
            pool_op.erase()
            pool_init = pool_init.operation if isinstance(pool_init, ir.OpView) else pool_init
            if not list(pool_init.results[0].uses):  # its -inf fill
                pool_init.erase()
        if relu is not None:
            if pool is None:
                relu.results[0].replace_all_uses_with(call_op.results[0])
            relu.erase()
        if residual is not None:
            residual[0].results[0].replace_all_uses_with(call_op.results[0])
            residual[0].erase()
            self.report.fused_residuals += 1
        if pool is None:
            result.replace_all_uses_with(call_op.results[0])
        conv.erase()
        if pad_op is not None and not list(pad_op.results[0].uses):  # torch-mlir's pad, now read by no one
            pad_op.erase()
        producer = init.owner
        if bias is not None and not list(init.uses):  # the bias broadcast / fill is now dead
            (producer.operation if isinstance(producer, ir.OpView) else producer).erase()
        if pool is not None:
            self.report.fused_pools += 1
        return epilogue.label


def run_pass(module: ir.Module, options: KgsConv3dOptions | None = None) -> PassReport:
    """Run the pass on ``module`` in place through an MLIR PassManager; return its report."""
    from iree.compiler.passmanager import PassManager

    kgs = KgsConv3dPass(options)
    with module.context:
        pm = PassManager("builtin.module")
        pm.add(kgs, name=PASS_NAME, argument=PASS_NAME, description=PASS_DESCRIPTION)
        pm.run(module.operation)
    return kgs.report
