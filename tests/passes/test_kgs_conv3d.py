"""The rt3d-kgs-conv3d pass on inline MLIR: parse, run the pass, check the printed IR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from iree.compiler import ir
from rt3d_iree.passes import KgsConv3dOptions, run_pass
from rt3d_iree.passes.kgs_conv3d import ConvGeometry, plan_kgs
from rt3d_iree.passes.weights import constant_value


def dense_literal(arr: np.ndarray) -> str:
    return "dense<" + np.array2string(arr, separator=", ", threshold=10**9, floatmode="unique").replace("\n", "") + ">"


def conv_module(weight: np.ndarray, const_weight: bool = True) -> str:
    f, c, kd, kh, kw = weight.shape
    wt = f"tensor<{f}x{c}x{kd}x{kh}x{kw}xf32>"
    xt = f"tensor<1x{c}x6x10x10xf32>"
    ot = f"tensor<1x{f}x{7 - kd}x{11 - kh}x{11 - kw}xf32>"
    wdef = f"%w = arith.constant {dense_literal(weight)} : {wt}" if const_weight else ""
    warg = f", %w: {wt}" if not const_weight else ""
    return f"""
func.func @forward(%x: {xt}{warg}) -> {ot} {{
  {wdef}
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : {ot}
  %init = linalg.fill ins(%zero : f32) outs(%e : {ot}) -> {ot}
  %y = linalg.conv_3d_ncdhw_fcdhw {{dilations = dense<1> : vector<3xi64>, strides = dense<1> : vector<3xi64>}}
      ins(%x, %w : {xt}, {wt}) outs(%init : {ot}) -> {ot}
  return %y : {ot}
}}"""


def run(text: str, **opts):
    ctx = ir.Context()
    module = ir.Module.parse(text, ctx)
    report = run_pass(module, KgsConv3dOptions(**opts))
    module.operation.verify()
    return str(module), report


def test_dense_conv_becomes_gather_matmul_call(check_ir):
    w = np.random.default_rng(0).standard_normal((8, 4, 3, 3, 3)).astype(np.float32)
    printed, report = run(conv_module(w))
    # all 4*27 columns kept: compacted weights are [groups, gM, 108], one gather index per column;
    # the flattened input is padded by 2 so the last window's row of 8 (in a row of 10) stays in bounds
    check_ir(printed, """
        // CHECK-LABEL: func.func private @rt3d_kgs_conv3d_0(
        // CHECK-SAME:    %[[X:[a-z_0-9]+]]: tensor<1x4x6x10x10xf32>, %[[ACC:[a-z_0-9]+]]: tensor<1x8x4x8x8xf32>, %[[W:[a-z_0-9]+]]: tensor<1x8x108xf32>, %[[IDX:[a-z_0-9]+]]: tensor<1x108xi32>
        // CHECK:         %[[FLAT:[a-z_0-9]+]] = tensor.collapse_shape %[[X]] {{.*}} into tensor<2400xf32>
        // CHECK:         %[[PADDED:[a-z_0-9]+]] = tensor.pad %[[FLAT]] low[0] high[2]
        // CHECK:         linalg.generic
        // CHECK-SAME:      attrs = {compilation_info = #compilation}
        // CHECK:           %[[COL:[a-z_0-9]+]] = tensor.extract %[[IDX]]
        // CHECK:           tensor.extract %[[PADDED]]
        // CHECK:           arith.mulf
        // CHECK:           arith.addf
        // CHECK:         tensor.expand_shape %[[ACC]]
        // CHECK-LABEL: func.func @forward(
        // CHECK-NOT:     linalg.conv_3d
        // CHECK:         call @rt3d_kgs_conv3d_0(
        // CHECK-NOT:     linalg.conv_3d
        // CHECK:         return
    """)
    assert report.rewritten == 1 and report.convs[0].kept_macs == report.convs[0].dense_macs


def test_kgs_zeros_compact_the_matmul(check_ir):
    w = np.random.default_rng(1).standard_normal((8, 4, 3, 3, 3)).astype(np.float32)
    w.reshape(8, 4, 27)[:, :, 9:] = 0  # KGS: the same 18 positions removed in every kernel
    printed, report = run(conv_module(w))
    # 4 channels x 9 kept positions: the first 9 (d = 0) of each channel's 600-element volume
    check_ir(printed, r"""
        // CHECK-LABEL: func.func @forward(
        // CHECK:         %[[W:[a-z_0-9]+]] = arith.constant dense<"0x{{[0-9A-F]+}}"> : tensor<1x8x36xf32>
        // CHECK-NEXT:    %[[IDX:[a-z_0-9]+]] = arith.constant dense<{{\[\[}}0, 1, 2, 10, 11, 12, 20, 21, 22, 600, {{.*}}, 1822]]> : tensor<1x36xi32>
        // CHECK-NEXT:    call @rt3d_kgs_conv3d_0(%arg0, %{{.+}}, %[[W]], %[[IDX]])
    """)
    conv = report.convs[0]
    assert conv.kgs_conforming and conv.kept_macs * 3 == conv.dense_macs


def test_non_constant_weight_left_to_iree_with_reason(check_ir):
    w = np.zeros((8, 4, 3, 3, 3), dtype=np.float32)
    printed, report = run(conv_module(w, const_weight=False))
    check_ir(printed, """
        // CHECK-NOT: call @rt3d_kgs_conv3d
        // CHECK:     linalg.conv_3d_ncdhw_fcdhw
        // CHECK-SAME:  ins(%arg0, %arg1 : tensor<1x4x6x10x10xf32>, tensor<8x4x3x3x3xf32>)
        // CHECK-NOT: call @rt3d_kgs_conv3d
    """)
    assert report.rewritten == 0
    assert "constant" in report.convs[0].reason


def test_fully_pruned_layer_becomes_its_accumulator(check_ir):
    printed, report = run(conv_module(np.zeros((8, 4, 3, 3, 3), dtype=np.float32)))
    check_ir(printed, """
        // CHECK-LABEL: func.func @forward(
        // CHECK:         %[[INIT:[a-z_0-9]+]] = linalg.fill
        // CHECK-NOT:     linalg.conv_3d
        // CHECK-NOT:     call @
        // CHECK:         return %[[INIT]]
    """)
    assert report.convs[0].kept_macs == 0


def test_rejects_bad_group_size():
    with pytest.raises(ValueError, match="group_m"):
        KgsConv3dOptions(group_m=0)
    with pytest.raises(ValueError, match="unknown kernel configuration"):
        KgsConv3dOptions(config_name="tpu")


def _geom(f: int, c: int, k: tuple[int, int, int] = (3, 3, 3)) -> ConvGeometry:
    return ConvGeometry(1, c, 6, 10, 10, f, *k, (1, 1, 1), (1, 1, 1), 6 - k[0] + 1, 10 - k[1] + 1, 10 - k[2] + 1)


def test_plan_unbalanced_and_ragged_groups():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((12, 6, 3, 3, 3)).astype(np.float32)
    w[0:8].reshape(8, 6, 27)[:, :, 5:] = 0  # group 0 keeps 5 positions per channel
    plan = plan_kgs(w, _geom(12, 6), group_m=8, group_n=4)
    assert plan.groups == 2 and plan.group_m == 8
    assert list(plan.kept_per_group) == [30, 162]
    assert plan.columns == 162
    # padded filters of the ragged last group have zero weights
    assert np.all(plan.weights[1, 4:] == 0)


def test_plan_merges_identical_groups_and_skips_pruned_ones():
    w = np.random.default_rng(3).standard_normal((32, 4, 3, 3, 3)).astype(np.float32)
    merged = plan_kgs(w, _geom(32, 4), group_m=8, group_n=4)
    assert merged.group_m == 16 and merged.groups == 2  # dense: groups merge up to 16 rows
    w[8:16] = 0
    plan = plan_kgs(w, _geom(32, 4), group_m=8, group_n=4)
    assert plan.group_m == 8 and list(plan.kept_per_group) == [108, 0, 108, 108]


def test_reads_torch_mlir_dense_resource_weights():
    from torch_mlir import fx

    conv = torch.nn.Conv3d(3, 5, 3).eval()
    imported = fx.export_and_import(conv, torch.randn(1, 3, 4, 5, 5), output_type="linalg-on-tensors")
    assert "dense_resource" in str(imported)
    ctx = ir.Context()
    module = ir.Module.parse(str(imported), ctx)
    found = []

    def visit(op):
        if op.name == "linalg.conv_3d_ncdhw_fcdhw":
            found.append(constant_value(op.operands[1]))
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    assert len(found) == 1
    np.testing.assert_array_equal(found[0], conv.weight.detach().numpy())
