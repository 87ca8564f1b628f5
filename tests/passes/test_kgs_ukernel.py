"""The microkernel lowering of rt3d-kgs-conv3d: inline MLIR in, printed IR checked, then
compiled by iree-compile and run against PyTorch (host, and aarch64 under qemu)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from iree.compiler import ir
from iree.compiler.passmanager import PassManager
from rt3d_iree.passes import KgsConv3dOptions, run_pass
from rt3d_iree.passes.kgs_conv3d import ConvGeometry, plan_kgs
from rt3d_iree.passes.kgs_ukernel import Microkernel, plan_call


def dense_literal(arr: np.ndarray) -> str:
    return "dense<" + np.array2string(arr, separator=", ", threshold=10**9, floatmode="unique").replace("\n", "") + ">"


def module_text(weight: np.ndarray, bias: np.ndarray | None = None, relu: bool = False, init_arg: bool = False,
                stride: int = 1) -> str:
    """A padded conv as torch-mlir writes it: bias broadcast (or zero fill) into the accumulator."""
    f, c, kd, kh, kw = weight.shape
    wt = f"tensor<{f}x{c}x{kd}x{kh}x{kw}xf32>"
    xt = f"tensor<1x{c}x6x10x10xf32>"
    od, oh, ow = 7 - kd, (10 - kh) // stride + 1, (10 - kw) // stride + 1
    ot = f"tensor<1x{f}x{od}x{oh}x{ow}xf32>"
    if init_arg:
        init = ""
    elif bias is None:
        init = f"%init = linalg.fill ins(%zero : f32) outs(%e : {ot}) -> {ot}"
    else:
        init = (f"%b = arith.constant {dense_literal(bias)} : tensor<{f}xf32>\n"
                f"  %init = linalg.broadcast ins(%b : tensor<{f}xf32>) outs(%e : {ot}) dimensions = [0, 2, 3, 4]")
    out = "%y"
    tail = ""
    if relu:
        tail = f"""%r = linalg.generic {{indexing_maps = [affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>,
      affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>],
      iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]}}
      ins(%y : {ot}) outs(%e : {ot}) {{
  ^bb0(%in: f32, %o: f32):
    %p = arith.cmpf ugt, %in, %zero : f32
    %s = arith.select %p, %in, %zero : f32
    linalg.yield %s : f32
  }} -> {ot}"""
        out = "%r"
    arg = f", %init: {ot}" if init_arg else ""
    return f"""
func.func @forward(%x: {xt}{arg}) -> {ot} {{
  %w = arith.constant {dense_literal(weight)} : {wt}
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : {ot}
  {init}
  %y = linalg.conv_3d_ncdhw_fcdhw {{dilations = dense<1> : vector<3xi64>, strides = dense<[1, {stride}, {stride}]> : vector<3xi64>}}
      ins(%x, %w : {xt}, {wt}) outs(%init : {ot}) -> {ot}
  {tail}
  return {out} : {ot}
}}"""


def run(text: str, kernel: Microkernel, cleanup: bool = False):
    """Run the pass; ``cleanup`` then runs canonicalize + CSE, as the compile pipeline does,
    so that the constants the pass replaced are gone from the printed IR."""
    ctx = ir.Context()
    module = ir.Module.parse(text, ctx)
    report = run_pass(module, KgsConv3dOptions(microkernel=kernel))
    module.operation.verify()
    if cleanup:
        with ctx:
            PassManager.parse("builtin.module(canonicalize, cse)").run(module.operation)
    return str(module), report


def weights(seed: int, shape=(8, 4, 3, 3, 3), keep: int = 27) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    w.reshape(shape[0], shape[1], -1)[:, :, keep:] = 0
    return w


def test_conv_becomes_microkernel_dispatch_with_bitcode(ukernel, check_ir):
    printed, report = run(module_text(weights(0, keep=9)), ukernel)
    # zero init: the kernel writes a fresh output, adding a zero bias. Packed weights are
    # 1 group x 36 columns x 8 filters; the 36 gather offsets end with the column count.
    check_ir(printed, f"""
        // CHECK-LABEL: func.func private @rt3d_kgs_conv3d_0(
        // CHECK-SAME:    %[[X:[a-z_0-9]+]]: tensor<1x4x6x10x10xf32>, %[[BIAS:[a-z_0-9]+]]: tensor<8xf32>, %[[W:[a-z_0-9]+]]: tensor<288xf32>, %[[IDX:[a-z_0-9]+]]: tensor<37xi32>
        // CHECK:         %[[FLAT:[a-z_0-9]+]] = tensor.collapse_shape %[[X]]
        // CHECK:         %[[OUT:[a-z_0-9]+]] = flow.dispatch @rt3d_kgs_ukernels::@conv0[{{{{.*}}}}](%[[FLAT]], %[[W]], %[[IDX]], %[[BIAS]],
        // CHECK:         return %[[OUT]]
        // CHECK:       stream.executable private @rt3d_kgs_ukernels
        // CHECK-SAME:    path = "rt3d_kgs_conv3d_{ukernel.isa}.bc"
        // CHECK:         stream.executable.export public @conv0
        // CHECK:         func.func private @rt3d_kgs_conv3d_workgroup(
        // CHECK-SAME:      hal.import.static
        // CHECK:         func.func @conv0(
        // CHECK:           call @rt3d_kgs_conv3d_workgroup(
        // CHECK-LABEL: func.func @forward(
        // CHECK-NOT:     linalg.conv_3d
        // CHECK:         %[[B:[a-z_0-9]+]] = arith.constant dense<0.000000e+00> : tensor<8xf32>
        // CHECK-NEXT:    %[[PW:[a-z_0-9]+]] = arith.constant dense<"0x{{{{[0-9A-F]+}}}}"> : tensor<288xf32>
        // CHECK-NEXT:    %[[PI:[a-z_0-9]+]] = arith.constant dense<[0, 1, 2, 10, {{{{.*}}}}, 1822, 36]> : tensor<37xi32>
        // CHECK-NEXT:    call @rt3d_kgs_conv3d_0(%arg0, %[[B]], %[[PW]], %[[PI]])
        // CHECK-NOT:     linalg.conv_3d
    """)
    assert report.convs[0].epilogue == "bias"
    assert [c.kernel for c in report.convs] == ["microkernel"]


def test_bias_and_relu_fold_into_the_kernel(ukernel, check_ir):
    bias = np.arange(8, dtype=np.float32)
    printed, report = run(module_text(weights(1), bias=bias, relu=True), ukernel, cleanup=True)
    # the bias is passed to the kernel; neither the broadcast nor the ReLU's select survives
    check_ir(printed, """
        // CHECK-LABEL: func.func @forward(
        // CHECK-NOT:     linalg.broadcast
        // CHECK:         %[[B:[a-z_0-9]+]] = arith.constant dense<[0.000000e+00, 1.000000e+00, 2.000000e+00, {{.*}}, 7.000000e+00]> : tensor<8xf32>
        // CHECK-NOT:     linalg.broadcast
        // CHECK:         %[[Y:[a-z_0-9]+]] = call @rt3d_kgs_conv3d_0(%arg0, %[[B]],
        // CHECK-NOT:     arith.select
        // CHECK-NEXT:    return %[[Y]]
    """)
    assert report.convs[0].epilogue == "bias+relu"


def test_unknown_accumulator_is_accumulated_into(ukernel, check_ir):
    printed, report = run(module_text(weights(2), init_arg=True), ukernel)
    # the dispatch takes the accumulator as its last buffer and updates it in place (tied result)
    check_ir(printed, """
        // CHECK-LABEL: func.func private @rt3d_kgs_conv3d_0(
        // CHECK-SAME:    %{{[a-z_0-9]+}}: tensor<1x4x6x10x10xf32>, %[[ACC:[a-z_0-9]+]]: tensor<1x8x4x8x8xf32>
        // CHECK:         flow.dispatch @rt3d_kgs_ukernels::@conv0[{{.*}}]({{.*}}, %[[ACC]], {{.*}} -> %[[ACC]]
        // CHECK-LABEL: func.func @forward(%arg0: tensor<1x4x6x10x10xf32>, %arg1: tensor<1x8x4x8x8xf32>)
        // CHECK:         call @rt3d_kgs_conv3d_0(%arg0, %arg1,
    """)
    assert report.convs[0].epilogue == "accumulate"


def test_strided_rows_read_phase_planes(ukernel, check_ir):
    """Stride 2 in H and W: the input is rearranged into 4 phase planes (space-to-depth), on
    which the same stride-1 kernel runs."""
    printed, report = run(module_text(weights(3), stride=2), ukernel)
    assert [c.kernel for c in report.convs] == ["microkernel"]
    # [n, c (+ 1 padding channel), sh, sw, d, H', W']
    check_ir(printed, """
        // CHECK-LABEL: func.func private @rt3d_kgs_conv3d_0(
        // CHECK:         %[[P:[a-z_0-9]+]] = tensor.pad %arg0 low[0, 0, 0, 0, 0] high[0, 1, 0, 0, 0]
        // CHECK:         %[[E:[a-z_0-9]+]] = tensor.expand_shape %[[P]] {{.*}} output_shape [1, 5, 6, 5, 2, 5, 2]
        // CHECK:         %[[T:[a-z_0-9]+]] = linalg.transpose ins(%[[E]] : tensor<1x5x6x5x2x5x2xf32>) outs({{.*}} : tensor<1x5x2x2x6x5x5xf32>) permutation = [0, 1, 4, 6, 2, 3, 5]
        // CHECK:         %[[F:[a-z_0-9]+]] = tensor.collapse_shape %[[T]]
        // CHECK:         flow.dispatch @rt3d_kgs_ukernels::@conv0[{{.*}}](%[[F]],
    """)


def test_bad_bitcode_is_refused():
    with pytest.raises(ValueError, match="not LLVM bitcode"):
        Microkernel("avx2", b"\x7fELF....")
    with pytest.raises(ValueError, match="unknown microkernel ISA"):
        Microkernel("sse2", b"BC\xc0\xde")


@pytest.mark.parametrize("shape", [(1, 3, 3, 3, 3), (2, 5, 9, 9, 9), (1, 8, 4, 17, 5), (3, 2, 3, 7, 30)])
def test_input_is_readable_to_the_last_vector(shape):
    """Whatever the geometry, the padded channels cover every whole-vector load."""
    n, c, d, h, w = shape
    kd, kh, kw = min(3, d), min(3, h), min(3, w)
    geom = ConvGeometry(n, c, d, h, w, 8, kd, kh, kw, (1, 1, 1), (1, 1, 1), d - kd + 1, h - kh + 1, w - kw + 1)
    plan = plan_kgs(np.ones((8, c, kd, kh, kw), np.float32), geom, 8, 4)
    call = plan_call("conv0", geom, plan, relu=False, tied=False)
    k = call.constants
    tiles = call.workload[0]
    last_q = -(-min(tiles * k["qt"], geom.oh * w) // 16) * 16 - 1
    last = (n - 1) * k["img"] + (geom.od - 1) * k["seg"] + last_q + int(plan.offsets.max())
    assert last < call.flat_len


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_compiled_microkernel_matches_pytorch(target):
    """Bias + ReLU fused, KGS zeros, F not a multiple of gM, batch 2, depth stride and dilation."""
    import rt3d_iree

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(6, 12, (3, 3, 2), stride=(2, 1, 1), padding=(1, 1, 0), dilation=(1, 2, 1))
    with torch.no_grad():
        conv.weight.view(12, 6, -1)[:, :, ::3] = 0
    model = torch.nn.Sequential(conv, torch.nn.ReLU()).eval()
    x = torch.randn(2, 6, 7, 9, 11)
    compiled = rt3d_iree.compile(model, (x,), target=target, kernel="microkernel")
    assert [c.kernel for c in compiled.report.convs] == ["microkernel"]
    ref = model(x).detach().numpy()
    out = compiled(x)
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_strided_convs_match_pytorch(target):
    """R(2+1)D's and S3D's strided convs (1x3x3 / 1x7x7 stride (1, 2, 2), 1x1x1 stride 2) and odd
    strides with padding, dilation and KGS zeros."""
    import rt3d_iree

    torch.manual_seed(1)
    cases = [((1, 3, 3), (1, 2, 2), (0, 1, 1), 1, (1, 8, 3, 12, 12)),
             ((1, 7, 7), (1, 2, 2), (0, 3, 3), 1, (1, 3, 2, 15, 16)),
             (1, 2, 0, 1, (1, 6, 4, 7, 7)),
             (1, (1, 2, 2), 0, 1, (2, 5, 3, 10, 9)),
             ((2, 3, 2), (2, 3, 2), (1, 1, 0), 1, (2, 5, 6, 11, 9)),
             ((3, 3, 3), (1, 1, 2), 1, (1, 2, 1), (1, 4, 5, 8, 13))]
    for kernel, stride, padding, dilation, shape in cases:
        conv = torch.nn.Conv3d(shape[1], 10, kernel, stride=stride, padding=padding, dilation=dilation).eval()
        with torch.no_grad():
            conv.weight.view(10, shape[1], -1)[:8, :, ::2] = 0  # KGS zeros in the first group
        x = torch.randn(*shape)
        compiled = rt3d_iree.compile(conv, (x,), target=target, kernel="microkernel")
        assert [c.kernel for c in compiled.report.convs] == ["microkernel"]
        # strided 1x1x1: the input is subsampled by the pooling kernel, not split into phases
        assert compiled.report.subsampled == (kernel == 1 and stride != 1), (kernel, stride)
        ref = conv(x).detach().numpy()
        assert np.abs(compiled(x) - ref).max() <= 1e-4 * np.abs(ref).max(), (kernel, stride)


def test_aarch64_conv_after_fully_pruned_conv():
    """Found by the fuzzer: the second conv's input is constant, so IREE evaluates it at compile
    time on this x86 machine, where the aarch64 kernel object is not linked (undefined symbol).
    Constant-input convs now take the code generation path."""
    import rt3d_iree

    first = torch.nn.Conv3d(2, 4, 3, padding=1)
    with torch.no_grad():
        first.weight.zero_()
    model = torch.nn.Sequential(first, torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1)).eval()
    x = torch.randn(1, 2, 3, 5, 5)
    compiled = rt3d_iree.compile(model, (x,), target="aarch64", kernel="microkernel")
    assert [c.kernel for c in compiled.report.convs] == ["", "codegen"]  # pruned layer, constant input
    ref = model(x).detach().numpy()
    assert np.abs(compiled(x) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_residual_add_of_a_later_value_is_left_alone(ukernel, check_ir):
    """conv + r where r is computed after the conv: the conv cannot add it in place."""
    w = weights(4)
    text = module_text(w, bias=np.ones(8, np.float32))
    ot = "tensor<1x8x4x8x8xf32>"
    text = text.replace(f"  return %y : {ot}", f"""  %later = arith.constant dense<1.0> : {ot}
  %sum = linalg.generic {{indexing_maps = [affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>,
      affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>],
      iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]}}
      ins(%y, %later : {ot}, {ot}) outs(%e : {ot}) {{
  ^bb0(%p: f32, %q: f32, %o: f32):
    %s = arith.addf %p, %q : f32
    linalg.yield %s : f32
  }} -> {ot}
  return %sum : {ot}""")
    assert "%sum" in text
    printed, report = run(text, ukernel)
    assert report.fused_residuals == 0 and report.convs[0].epilogue == "bias"
    check_ir(printed, """
        // CHECK-LABEL: func.func @forward(
        // CHECK:         %[[Y:[a-z_0-9]+]] = call @rt3d_kgs_conv3d_0(
        // CHECK:         %[[LATER:[a-z_0-9]+]] = arith.constant dense<1.000000e+00>
        // CHECK:         %[[SUM:[a-z_0-9]+]] = linalg.generic
        // CHECK-SAME:      ins(%[[Y]], %[[LATER]] :
        // CHECK:           arith.addf
        // CHECK:         return %[[SUM]]
    """)


def _conv_ops(module: ir.Module) -> list[ir.Operation]:
    found = []

    def collect(op: ir.Operation) -> ir.WalkResult:
        if op.name == "linalg.conv_3d_ncdhw_fcdhw":
            found.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(collect)
    return found


def test_epilogue_says_what_follows_the_conv():
    """match_epilogue reads (and leaves alone) what the kernel applies as it stores: the
    accumulator's constant bias (else it accumulates), a ReLU that is the conv's only user, a
    residual addition of a value computed before the conv, a max pool to fuse."""
    from rt3d_iree.passes.kgs.epilogue import match_epilogue
    from rt3d_iree.passes.kgs.matchers import conv_geometry

    from rt3d_iree.api import import_model

    bias = np.arange(8, dtype=np.float32)
    ot = "tensor<1x8x4x8x8xf32>"
    add = f"""  %sum = linalg.generic {{indexing_maps = [affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>,
      affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>],
      iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]}}
      ins(%y, %r : {ot}, {ot}) outs(%e : {ot}) {{
  ^bb0(%p: f32, %q: f32, %o: f32):
    %s = arith.addf %p, %q : f32
    linalg.yield %s : f32
  }} -> {ot}
  return %sum : {ot}"""
    biased = module_text(weights(1), bias=bias)
    early = biased.replace("  %zero = ", f"  %r = arith.constant dense<1.0> : {ot}\n  %zero = ", 1)
    late = biased.replace(f"  return %y : {ot}", f"  %r = arith.constant dense<1.0> : {ot}\n" + add)
    cases = [
        (module_text(weights(1), bias=bias, relu=True), "bias+relu"),
        (module_text(weights(1)), "bias"),  # a zero fill: a zero bias
        (module_text(weights(1), init_arg=True), "accumulate"),
        (early.replace(f"  return %y : {ot}", add), "bias+residual"),
        (late, "bias"),  # r is computed after the conv: left alone
    ]
    for text, label in cases:
        module = ir.Module.parse(text, ir.Context())
        before = str(module)
        (conv,) = _conv_ops(module)
        epilogue = match_epilogue(conv, conv_geometry(conv), 8)
        assert str(module) == before
        assert epilogue.label == label, text
        assert (epilogue.relu is not None) == ("relu" in label) and epilogue.pool is None
        assert (epilogue.residual is not None) == ("residual" in label)
        if label == "accumulate":
            assert epilogue.bias is None
        else:
            np.testing.assert_array_equal(epilogue.bias, bias if "%b = " in text else np.zeros(8, np.float32))
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool3d(2)).eval()
    module = import_model(model, (torch.randn(1, 3, 4, 8, 8),))
    (conv,) = _conv_ops(module)
    geom = conv_geometry(conv)
    epilogue = match_epilogue(conv, geom, 8)
    assert epilogue.label == "bias+relu+maxpool2x2x2" and epilogue.pool[1] == (2, 2, 2)
    assert match_epilogue(conv, geom, 8, frames=(1, 2)).label == "bias+relu"  # frame ranges: no fused pool
