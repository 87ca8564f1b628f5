"""The microkernel's own dispatches, compiled and run against PyTorch (host, and aarch64 under
qemu): max pools, conv + ReLU + pool fusion, the pad kernel, depth-padded temporal convs,
prefetching, and residual additions done by the conv's store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rt3d_iree.passes.kgs_conv3d import ConvGeometry, plan_kgs
from rt3d_iree.passes.kgs_ukernel import plan_call

POOLS = [  # (kernel, stride, padding, input shape): C3D's pools, a padded pool, odd windows and sizes
    ((1, 2, 2), (1, 2, 2), 0, (1, 4, 3, 10, 12)),
    (2, 2, 0, (1, 3, 4, 9, 9)),
    (2, 2, (0, 1, 1), (1, 5, 2, 3, 3)),
    (3, 1, 1, (1, 2, 5, 9, 11)),
    ((2, 3, 3), (1, 2, 2), 0, (2, 3, 6, 13, 17)),
    # fused, rows wide enough for the pool's vector paths (AVX-512: 16 pooled columns) and a tail
    ((1, 2, 2), (1, 2, 2), 0, (1, 2, 2, 4, 40)),
    (2, 2, 0, (1, 2, 2, 4, 36)),
    # standalone, wide enough for the window vector paths: stride 1 (S3D's 3x3x3), stride 2
    # (S3D's padded 1x3x3), a stride the vectors do not cover; two vectors and a tail on AVX-512
    (3, 1, 1, (1, 2, 3, 4, 37)),
    ((1, 3, 3), (1, 2, 2), (0, 1, 1), (1, 2, 2, 5, 70)),
    ((1, 1, 3), (1, 1, 3), 0, (1, 2, 2, 3, 50)),
    # S3D's ceil-mode 2x2x2 pool (odd sizes: windows past the end), padding in one dimension
    (2, 2, 0, (1, 2, 3, 7, 21), True),
    ((3, 1, 1), (2, 1, 1), (1, 0, 0), (1, 2, 5, 3, 18)),
    (3, 1, 1, (1, 2, 3, 4, 16)),  # rows of whole vectors: the padding after them is not in a tail
    # small planes (S3D's branch pools): many planes per workgroup, one frame, padding in H, W only;
    # and a stride-1 pool too large for that path (the row path)
    (3, 1, 1, (1, 40, 4, 7, 7)),
    ((1, 3, 3), 1, (0, 1, 1), (1, 3, 1, 5, 6)),
    (3, 1, 1, (1, 2, 3, 30, 37)),
]


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_max_pools_run_on_the_microkernel(target):
    import rt3d_iree

    for kernel, stride, padding, shape, *ceil in POOLS:
        x = torch.randn(*shape)
        x[0, 0, 0, 0, 0] = float("nan")  # NaN propagates through max pooling, as in PyTorch
        x[0, 0, -1, -1, shape[-1] // 2] = float("nan")  # and from inside a row's vectors
        padded = padding != 0 or bool(ceil)  # no ReLU: negative inputs tell -inf padding from zeros
        model = torch.nn.Sequential(torch.nn.Conv3d(shape[1], shape[1], 1),
                                    torch.nn.Identity() if padded else torch.nn.ReLU(),
                                    torch.nn.MaxPool3d(kernel, stride, padding=padding, ceil_mode=bool(ceil))).eval()
        compiled = rt3d_iree.compile(model, (x,), target=target, kernel="microkernel")
        # a pool whose window is its stride and that covers the input is fused into the conv
        fused = kernel == stride and padding == 0 and all(s % k == 0 for s, k in zip(shape[2:], _triple(kernel), strict=True))
        assert (compiled.report.pools, compiled.report.fused_pools) == ((0, 1) if fused else (1, 0)), (kernel, stride)
        # a padded pool reads its input unpadded (the -inf padding skipped, not copied)
        assert compiled.report.unpadded_pools == int(padded), (kernel, stride, padding)
        ref = model(x).detach().numpy()
        out = compiled(x)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
        ok = ~np.isnan(ref)
        assert np.abs(out[ok] - ref[ok]).max() <= 1e-4 * np.abs(ref[ok]).max(), (kernel, stride, padding)


def _triple(v) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)


FUSED = [  # (window = stride, input shape, filters): C3D's 1x2x2 and 2x2x2 pools, batch 2, F % gM != 0
    ((1, 2, 2), (1, 4, 3, 10, 12), 8),
    (2, (1, 3, 4, 8, 10), 12),
    (2, (2, 5, 6, 6, 14), 20),
    ((1, 2, 2), (1, 3, 2, 20, 112), 16),  # wide rows: one pooled row per workgroup
]


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_conv_relu_maxpool_fuse_into_one_dispatch(target):
    """The pool is computed by the conv's dispatch from a stack buffer (the conv output never
    reaches memory); KGS zeros in the first group; every result checked against PyTorch."""
    import rt3d_iree

    torch.manual_seed(2)
    for window, shape, f in FUSED if target == "host" else FUSED[1:3]:
        conv = torch.nn.Conv3d(shape[1], f, 3, padding=1)
        with torch.no_grad():
            conv.weight.view(f, shape[1], -1)[:8, :, ::3] = 0
        model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.MaxPool3d(window, window)).eval()
        x = torch.randn(*shape)
        compiled = rt3d_iree.compile(model, (x,), target=target, kernel="microkernel")
        assert (compiled.report.pools, compiled.report.fused_pools) == (0, 1), window
        w = "x".join(map(str, _triple(window)))
        assert [c.epilogue for c in compiled.report.convs] == [f"bias+relu+maxpool{w}"]
        ref = model(x).detach().numpy()
        assert np.abs(compiled(x) - ref).max() <= 1e-4 * np.abs(ref).max(), (window, shape)


def test_pool_after_a_conv_with_other_users_is_not_fused(ukernel):
    """The conv's output is also returned: it must reach memory, so the pool stays separate."""
    import rt3d_iree

    class Both(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 8, 3, padding=1)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return y, torch.nn.functional.max_pool3d(y, 2)

    model = Both().eval()
    x = torch.randn(1, 3, 4, 8, 8)
    compiled = rt3d_iree.compile(model, (x,), kernel="microkernel")
    assert (compiled.report.pools, compiled.report.fused_pools) == (1, 0)
    for out, ref in zip(compiled(x), model(x), strict=True):
        ref = ref.detach().numpy()
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_fused_pool_tiles_fit_the_stack_buffer():
    """Pooled rows per workgroup: as many as the kernel's buffer holds, never zero where fusing."""
    from rt3d_iree.passes.kgs_ukernel import POOL_SCRATCH, pool_rows

    geom = ConvGeometry(1, 64, 18, 58, 58, 128, 3, 3, 3, (1, 1, 1), (1, 1, 1), 16, 56, 56)
    rows = pool_rows(geom, 16, (2, 2, 2))
    assert rows >= 1 and 16 * rows * 2 * 56 <= POOL_SCRATCH
    wide = ConvGeometry(1, 3, 3, 10, 2000, 16, 3, 3, 3, (1, 1, 1), (1, 1, 1), 1, 8, 1998)
    assert pool_rows(wide, 16, (1, 2, 2)) == 0  # the pass leaves such a pool unfused


PADDED = [  # (conv input shape, filters, kernel, padding): D/H/W pads as torch-mlir writes them, batch 2
    ((1, 3, 4, 9, 11), 8, 3, 1),
    ((2, 4, 5, 7, 6), 12, (3, 1, 1), (1, 0, 0)),  # a temporal conv: frames only
    ((1, 5, 3, 12, 10), 8, (1, 3, 3), (0, 1, 1)),  # a spatial conv: rows and columns
    ((1, 2, 3, 6, 40), 8, (1, 5, 5), (0, 2, 2)),  # rows wide enough for whole vectors
]


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_pad_kernel_pads_conv_inputs(target, monkeypatch):
    """Large conv inputs are zero-padded by the pad kernel's dispatch (IREE's pad fills, then
    copies); the size threshold is lowered here so small inputs take that path too."""
    from rt3d_iree.passes.kgs import ukernel_plan

    import rt3d_iree

    monkeypatch.setattr(ukernel_plan, "PAD_KERNEL_MIN", 0)  # where pad_call reads it
    torch.manual_seed(3)
    for shape, f, kernel, padding in PADDED:
        conv = torch.nn.Conv3d(shape[1], f, kernel, padding=padding)
        with torch.no_grad():
            conv.weight.view(f, shape[1], -1)[:8, :, ::2] = 0  # KGS zeros in the first group
        model = torch.nn.Sequential(conv, torch.nn.ReLU()).eval()
        x = torch.randn(*shape)
        compiled = rt3d_iree.compile(model, (x,), target=target, kernel="microkernel")
        assert compiled.report.pads == 1, (shape, kernel)
        ref = model(x).detach().numpy()
        assert np.abs(compiled(x) - ref).max() <= 1e-4 * np.abs(ref).max(), (shape, kernel, padding)


def test_small_inputs_keep_irees_pad():
    """Below the threshold a pad dispatch of its own costs more than IREE's pad (S3D: +1.5 ms)."""
    from rt3d_iree.passes import kgs_ukernel

    import rt3d_iree

    shape, f, kernel, padding = PADDED[0]
    assert int(np.prod([shape[0], shape[1] + 1, shape[2] + 2, shape[3] + 2, shape[4] + 2])) < kgs_ukernel.PAD_KERNEL_MIN
    model = torch.nn.Conv3d(shape[1], f, kernel, padding=padding).eval()
    compiled = rt3d_iree.compile(model, (torch.randn(*shape),), kernel="microkernel")
    assert compiled.report.pads == 0


TEMPORAL = [  # (input shape, filters, kernel, stride, padding, dilation): padded in depth only
    ((2, 6, 5, 4, 8), 12, (3, 1, 1), 1, (1, 0, 0), 1),
    ((1, 4, 7, 4, 4), 8, (3, 1, 1), (2, 1, 1), (1, 0, 0), 1),
    ((1, 4, 6, 8, 8), 8, (3, 1, 1), 1, (2, 0, 0), (2, 1, 1)),
    ((1, 3, 2, 4, 4), 8, (5, 1, 1), 1, (2, 0, 0), 1),  # fewer frames than the kernel
    ((1, 3, 4, 6, 16), 8, (3, 3, 1), 1, (1, 0, 0), 1),  # rows shrink, no row padding
]


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_convs_padded_in_depth_read_their_input_unpadded(target, check_ir):
    """A temporal conv's depth padding costs no copy: each output frame sums only the columns
    of the kernel frames inside the input (columns sorted by frame, ranges in the table)."""
    import rt3d_iree

    torch.manual_seed(5)
    for shape, f, kernel, stride, padding, dilation in TEMPORAL:
        conv = torch.nn.Conv3d(shape[1], f, kernel, stride=stride, padding=padding, dilation=dilation)
        with torch.no_grad():
            conv.weight.view(f, shape[1], -1)[:8, :, ::2] = 0  # KGS zeros in the first group
        model = torch.nn.Sequential(conv, torch.nn.ReLU()).eval()
        x = torch.randn(*shape)
        module, _ = rt3d_iree.optimize(model, (x,), target=target, kernel="microkernel")
        check_ir(str(module), "// CHECK-NOT: tensor.pad\n// CHECK: flow.dispatch @rt3d_kgs_ukernels\n// CHECK-NOT: tensor.pad")
        compiled = rt3d_iree.compile(model, (x,), target=target, kernel="microkernel")
        assert compiled.report.pads == 0
        ref = model(x).detach().numpy()
        assert np.abs(compiled(x) - ref).max() <= 1e-4 * np.abs(ref).max(), (shape, kernel, padding)


def test_depth_padding_needs_whole_vectors_to_skip_the_copy(check_ir):
    """Frames of 6x6 positions end mid-vector: the last vector would read past the input, so the
    input keeps its padded copy (with the extra channel)."""
    import rt3d_iree

    model = torch.nn.Conv3d(4, 8, (3, 1, 1), padding=(1, 0, 0)).eval()
    x = torch.randn(1, 4, 5, 6, 6)
    module, _ = rt3d_iree.optimize(model, (x,), kernel="microkernel")
    check_ir(str(module), """
        // CHECK:  %[[P:[a-z_0-9]+]] = tensor.pad %{{[a-z_0-9]+}} low[0, 0, 1, 0, 0] high[0, 1, 1, 0, 0]
        // CHECK:  %[[F:[a-z_0-9]+]] = tensor.collapse_shape %[[P]]
        // CHECK:  flow.dispatch @rt3d_kgs_ukernels::@conv0[{{.*}}](%[[F]],
    """)
    compiled = rt3d_iree.compile(model, (x,), kernel="microkernel")
    ref = model(x).detach().numpy()
    assert np.abs(compiled(x) - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_kgs_temporal_convs_run_every_group_over_one_tile(target):
    """A KGS temporal conv over large frames runs all its groups over each position tile (the
    input read once, not once per group), the tile sized by the union of the groups' columns:
    R(2+1)D's first temporal convs, 3.5 -> 3.0 ms at 3.2x. Numerics as PyTorch's."""
    from rt3d_iree.passes import kgs_ukernel

    import rt3d_iree
    from rt3d_iree.demo import kgs_prune_positions

    torch.manual_seed(6)
    shape, f = (1, 64, 12, 40, 40), 20  # a frame of 64 x 3 x 40 x 40 floats: larger than the cache tile
    conv = torch.nn.Conv3d(shape[1], f, (3, 1, 1), padding=(1, 0, 0))
    kgs_prune_positions(conv, keep=1, group_size=(8, 4), seed=6)  # each group keeps its own frames
    geom = ConvGeometry(n=1, c=64, d=14, h=40, w=40, f=f, kd=3, kh=1, kw=1, strides=(1, 1, 1),
                        dilations=(1, 1, 1), od=12, oh=40, ow=40)
    plan = plan_kgs(conv.weight.detach().numpy(), geom, 8, 4)
    call = plan_call("c", geom, plan, relu=True, tied=False)
    union = len(np.unique(np.concatenate([plan.offsets[g, :k] for g, k in enumerate(plan.kept_per_group)])))
    assert plan.columns < union  # each group reads a third of the rows, all groups most of them
    assert call.constants["gpw"] == plan.groups and call.workload[1] == 1
    assert call.constants["qt"] * union * 4 <= kgs_ukernel._TILE_INPUT  # the tile holds every group's rows
    model = torch.nn.Sequential(conv, torch.nn.ReLU()).eval()
    x = torch.randn(*shape)
    compiled = rt3d_iree.compile(model, (x,), target=target, kernel="microkernel")
    ref = model(x).detach().numpy()
    assert np.abs(compiled(x) - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_inputs_that_stream_from_memory_are_prefetched_into_l2(target, monkeypatch):
    """Inputs from 16 MB on (R(2+1)D's first temporal convs: 29 MB) carry the STREAM flag (the
    kernel prefetches them into L2 only); smaller ones do not. With the threshold at 0 every conv
    streams: the prefetch hints change no result, on either ISA."""
    from rt3d_iree.passes import kgs_ukernel
    from rt3d_iree.passes.kgs import ukernel_plan

    import rt3d_iree

    def geometry(hw: int) -> ConvGeometry:
        return ConvGeometry(n=1, c=144, d=18, h=hw, w=hw, f=64, kd=3, kh=1, kw=1, strides=(1, 1, 1),
                            dilations=(1, 1, 1), od=16, oh=hw, ow=hw)

    weight = np.ones((64, 144, 3, 1, 1), np.float32)
    flags = {hw: plan_call("c", geometry(hw), plan_kgs(weight, geometry(hw), 8, 4), relu=True,
                           tied=False).constants["flags"] for hw in (56, 28)}
    assert flags[56] & kgs_ukernel.STREAM and not flags[28] & kgs_ukernel.STREAM  # 32 MB and 8 MB of input
    assert flags[56] & kgs_ukernel.RELU
    monkeypatch.setattr(ukernel_plan, "_STREAM_INPUT", 0)  # where plan_call reads it
    torch.manual_seed(8)
    model = torch.nn.Sequential(torch.nn.Conv3d(6, 12, (3, 1, 1), padding=(1, 0, 0)), torch.nn.ReLU(),
                                torch.nn.Conv3d(12, 8, (1, 3, 3), padding=(0, 1, 1))).eval()
    with torch.no_grad():
        model[0].weight.view(12, 6, -1)[:8, :, ::2] = 0
    x = torch.randn(1, 6, 5, 20, 20)
    compiled = rt3d_iree.compile(model, (x,), target=target, kernel="microkernel")
    ref = model(x).detach().numpy()
    assert np.abs(compiled(x) - ref).max() <= 1e-4 * np.abs(ref).max()


class _Block(torch.nn.Module):
    """A ResNet block: relu(conv2(relu(conv1(x))) + identity), identity = x or a 1x1x1 conv of
    x computed before or after the main path; x is read again after the block."""

    def __init__(self, c: int, down: str | None):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(c, c, 3, padding=1)
        self.conv2 = torch.nn.Conv3d(c, c, (3, 1, 1), padding=(1, 0, 0))
        self.down = torch.nn.Conv3d(c, c, 1) if down else None
        self.first = down == "first"

    def forward(self, x):
        idn = self.down(x) if self.first else x
        y = self.conv2(torch.relu(self.conv1(x)))
        if self.down is not None and not self.first:
            idn = self.down(x)
        return torch.relu(y + idn), x * 2


@pytest.mark.parametrize("target", ["host", "aarch64"])
def test_residual_addition_is_done_by_the_conv_store(target):
    """The residual add and its ReLU are the store of the conv whose residual is computed before
    it (in place on the residual); its input is still intact for a later reader (x * 2)."""
    import rt3d_iree

    torch.manual_seed(3)
    for down in (None, "first", "after"):
        model = _Block(6, down).eval()
        with torch.no_grad():
            model.conv1.weight.view(6, 6, -1)[:, :, ::2] = 0
        x = torch.randn(1, 6, 4, 7, 9)
        compiled = rt3d_iree.compile(model, (x,), target=target, kernel="microkernel")
        assert compiled.report.fused_residuals == 1, down
        epilogues = [c.epilogue for c in compiled.report.convs]
        assert epilogues.count("bias+residual+relu") == 1, (down, epilogues)
        # the conv computed last takes the addition: conv2, or the downsample when it comes after
        fused = epilogues.index("bias+residual+relu")
        assert fused == len(epilogues) - 1, (down, epilogues)
        ref = [t.detach().numpy() for t in model(x)]
        for out, r in zip(compiled(x), ref, strict=True):
            assert np.abs(out - r).max() <= 1e-4 * np.abs(r).max(), down
