"""rt3d-trim-window-inputs: padded windows sliced to what they read (an IREE 3.13 workaround)."""

from __future__ import annotations

import torch
from iree.compiler import ir
from rt3d_iree.passes import run_trim
from torch import nn

import rt3d_iree
from rt3d_iree.bench import max_rel_error
from rt3d_iree.models import C3D

POOL = """
#map = affine_map<(d0, d1, d2, d3, d4, d5, d6, d7) -> (d0, d1, d2 * 2 + d5, d3 * 2 + d6, d4 * 2 + d7)>
#map1 = affine_map<(d0, d1, d2, d3, d4, d5, d6, d7) -> (d5, d6, d7)>
#map2 = affine_map<(d0, d1, d2, d3, d4, d5, d6, d7) -> (d0, d1, d2, d3, d4)>
func.func @forward(%x: tensor<1x8x2x3x3xf32>, %init: tensor<1x8x1x1x1xf32>) -> tensor<1x8x1x1x1xf32> {
  %w = tensor.empty() : tensor<2x2x2xf32>
  %0 = linalg.generic {indexing_maps = [#map, #map1, #map2], iterator_types = ["parallel", "parallel", "parallel",
      "parallel", "parallel", "reduction", "reduction", "reduction"]}
      ins(%x, %w : tensor<1x8x2x3x3xf32>, tensor<2x2x2xf32>) outs(%init : tensor<1x8x1x1x1xf32>) {
  ^bb0(%in: f32, %in_0: f32, %out: f32):
    %1 = arith.maximumf %in, %out : f32
    linalg.yield %1 : f32
  } -> tensor<1x8x1x1x1xf32>
  return %0 : tensor<1x8x1x1x1xf32>
}
"""


def test_oversized_window_input_is_sliced(check_ir):
    module = ir.Module.parse(POOL, ir.Context())
    report = run_trim(module)
    assert report.trimmed and report.trimmed[0][1:] == ([1, 8, 2, 3, 3], [1, 8, 2, 2, 2])
    check_ir(str(module), """
        // CHECK-LABEL: func.func @forward(
        // CHECK:         %[[S:[a-z_0-9]+]] = tensor.extract_slice %arg0[0, 0, 0, 0, 0] [1, 8, 2, 2, 2] [1, 1, 1, 1, 1] : tensor<1x8x2x3x3xf32> to tensor<1x8x2x2x2xf32>
        // CHECK:         linalg.generic
        // CHECK-SAME:      ins(%[[S]], %{{[a-z_0-9]+}} : tensor<1x8x2x2x2xf32>, tensor<2x2x2xf32>)
        // CHECK:           arith.maximumf
    """)


SUM = """
#map = affine_map<(d0, d1) -> (d0, d1)>
#map1 = affine_map<(d0, d1) -> ()>
func.func @forward(%x: tensor<2x3xf32>, %init: tensor<f32>) -> tensor<f32> {
  %0 = linalg.generic {indexing_maps = [#map, #map1], iterator_types = ["reduction", "reduction"]}
      ins(%x : tensor<2x3xf32>) outs(%init : tensor<f32>) {
  ^bb0(%in: f32, %out: f32):
    %1 = arith.addf %in, %out : f32
    linalg.yield %1 : f32
  } -> tensor<f32>
  return %0 : tensor<f32>
}
"""


def test_rank0_reduction_is_left_alone(check_ir):
    """``x.sum()``: a rank-0 output (map ``-> ()``) is not a window and must not trip the pass."""
    module = ir.Module.parse(SUM, ir.Context())
    assert run_trim(module).trimmed == []
    check_ir(str(module), """
        // CHECK-NOT: tensor.extract_slice
        // CHECK:     linalg.generic
        // CHECK-SAME:  ins(%arg0 : tensor<2x3xf32>) outs(%arg1 : tensor<f32>)
    """)


def test_exact_window_input_is_left_alone():
    exact = POOL.replace("1x8x2x3x3", "1x8x2x2x2")
    module = ir.Module.parse(exact, ir.Context())
    before = str(module)
    assert run_trim(module).trimmed == []
    assert str(module) == before


def test_padded_pools_on_unit_maps_compile_and_match_pytorch():
    """C3D's pool5 (padding 0,1,1) on a 1x1 map: IREE 3.13 rejects it without the slice."""
    pool = nn.MaxPool3d(2, 2, padding=(0, 1, 1))
    x = torch.randn(1, 8, 2, 1, 1)
    assert max_rel_error(rt3d_iree.compile(pool, (x,), kgs=False)(x), pool(x)) == 0.0
    model = C3D(num_classes=8, width=0.125, frames=16, size=16).eval()
    x = torch.randn(1, 3, 16, 16, 16)
    assert max_rel_error(rt3d_iree.compile(model, (x,))(x), model(x).detach()) <= 1e-4


def test_small_s3d_compiles_and_matches_pytorch():
    """S3D at 8x16x16 hits the same IREE failure in its padded pools; with the slice it compiles."""
    from rt3d_iree.models import S3D

    model = S3D(num_classes=8, width=0.125, frames=8, size=16).eval()
    x = torch.randn(1, 3, 8, 16, 16)
    compiled = rt3d_iree.compile(model, (x,))
    assert compiled.report.rewritten == len(compiled.report.convs) > 50
    assert max_rel_error(compiled(x), model(x).detach()) <= 1e-4
