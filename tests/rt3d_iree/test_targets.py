"""Dense and KGS models compiled for every target and run for real: the host CPU in-process,
aarch64 under qemu-user with the official aarch64 IREE tools, Vulkan on Mesa's lavapipe.
Each result is checked against PyTorch on the same inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rt3d_iree
from rt3d_iree.bench import TOLERANCE, max_rel_error
from rt3d_iree.errors import Rt3dError
from rt3d_iree.models import C3D
from rt3d_iree.runners import LocalRunner, QemuRunner
from rt3d_iree.sparsity import apply_kgs_magnitude

from .test_numerics import kgs_mask

PHONE_TARGETS = ["host", "aarch64", "vulkan-adreno"]

CONVS = {
    "3x3x3_pad1": (dict(in_channels=8, out_channels=16, kernel_size=3, padding=1), (1, 8, 4, 10, 10)),
    "1x3x3_F_not_div": (dict(in_channels=6, out_channels=12, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
                        (1, 6, 3, 8, 8)),
    "3x1x1_stride2": (dict(in_channels=8, out_channels=8, kernel_size=(3, 1, 1), stride=2), (1, 8, 5, 6, 6)),
}


def run_checked(model: nn.Module, x: torch.Tensor, target: str, expect_rewritten: int | None = None) -> float:
    model = model.eval()
    compiled = rt3d_iree.compile(model, (x,), target=target)
    with torch.no_grad():
        ref = model(x)
    out = compiled(x)
    assert isinstance(out, torch.Tensor) and out.shape == ref.shape
    err = max_rel_error(out, ref)
    assert err <= TOLERANCE, f"{target}: max rel error {err:.3g}"
    if expect_rewritten is not None:
        assert compiled.report.rewritten == expect_rewritten, compiled.report
    return err


@pytest.mark.parametrize("target", PHONE_TARGETS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "kgs"])
@pytest.mark.parametrize("case", list(CONVS))
def test_single_conv(target, sparse, case):
    kwargs, shape = CONVS[case]
    conv = nn.Conv3d(**kwargs)
    if sparse:
        kgs_mask(conv, 8, 4, [5, 2, 9])
    run_checked(conv, torch.randn(*shape), target, expect_rewritten=1)


def tiny_c3d(sparse: bool, trunk_only: bool = False) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = C3D(num_classes=5, width=1 / 16, frames=16, size=32).eval()
    x = torch.randn(1, 3, 16, 32, 32)
    if sparse:
        apply_kgs_magnitude(model, x, 2.6, (8, 4))
    return (model.features if trunk_only else model), x


@pytest.mark.parametrize("target", ["host", "aarch64", "vulkan"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "kgs"])
def test_small_full_c3d(target, sparse):
    model, x = tiny_c3d(sparse)
    run_checked(model, x, target, expect_rewritten=8)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "kgs"])
def test_small_c3d_trunk_vulkan_adreno(sparse):
    # The Adreno target's own FC kernels use 64-lane subgroup operations that lavapipe
    # (8 lanes) cannot honour (see targets.NARROW_SUBGROUP_DEVICES); every conv, pool and
    # our kernels run under the Adreno configuration here.
    model, x = tiny_c3d(sparse, trunk_only=True)
    run_checked(model, x, "vulkan-adreno", expect_rewritten=8)


def test_runners_are_real():
    """The aarch64 target really runs under qemu, Vulkan on a real (software) driver."""
    conv = nn.Conv3d(4, 8, 3, padding=1).eval()
    x = torch.randn(1, 4, 3, 6, 6)
    arm = rt3d_iree.compile(conv, (x,), target="aarch64")
    assert isinstance(arm.runner, QemuRunner)
    assert "qemu" in arm.runner.check("local-task")
    vk = rt3d_iree.compile(conv, (x,), target="vulkan-adreno")
    assert isinstance(vk.runner, LocalRunner)
    assert vk.runner.check("vulkan")  # names the Vulkan device, raises when there is none
    # An aarch64 module cannot be loaded by the x86-64 host runtime: proof it is aarch64 code.
    with pytest.raises(Rt3dError, match="cannot load"):
        LocalRunner().run(arm.vmfb, "forward", [x.numpy()], 1, "local-task")


# Found by the differential fuzzer (tests/passes/test_kgs_conv3d_fuzz.py) on lavapipe.
REGRESSIONS = {
    # Strided conv with more than one filter group: IREE's SPIR-V codegen got the permuted
    # [r, f, g, positions] result layout wrong; SPIR-V kernels now use the loop order.
    "strided_two_groups": (dict(in_channels=4, out_channels=32, kernel_size=3, stride=2, padding=1),
                           (1, 4, 4, 6, 6), (8, 4)),
    "strided_padded_groups": (dict(in_channels=1, out_channels=18, kernel_size=(1, 1, 2), stride=(1, 1, 2),
                                   bias=False), (1, 1, 1, 1, 2), (1, 1)),
    # One filter: IREE folds the unit filter loop (our tiling no longer fits) or picks a
    # subgroup reduction assuming Adreno's 64 lanes; the kernel now has no filter loop.
    "one_filter_one_position": (dict(in_channels=28, out_channels=1, kernel_size=(1, 4, 4), bias=False),
                                (1, 28, 1, 4, 4), (1, 1)),
    "one_filter_long_reduction": (dict(in_channels=14, out_channels=1, kernel_size=(4, 4, 6)),
                                  (1, 14, 4, 4, 6), (4, 3)),
    # Strided conv with a single output row or column: the unit position loop was folded
    # by IREE under our tiling. A single row / column is now the contiguous case.
    "stride_one_output": (dict(in_channels=28, out_channels=1, kernel_size=(1, 4, 4), stride=(1, 2, 1),
                               bias=False), (1, 28, 1, 4, 4), (1, 1)),
    # Several output frames and 64 columns: with the loop-order layout IREE collapsed (frames,
    # positions), dropped our tiling and chose a 64-lane subgroup reduction (wrong on lavapipe).
    "frames_and_64_columns": (dict(in_channels=4, out_channels=8, kernel_size=(1, 4, 4), bias=False),
                              (1, 4, 3, 7, 7), (8, 4)),
    # Strided with several output frames and many columns: (frames, oh, ow) loops were
    # collapsed and our tiling dropped; strided SPIR-V kernels now run one flattened loop.
    "strided_frames_many_columns": (dict(in_channels=64, out_channels=8, kernel_size=(1, 4, 4), stride=(1, 2, 2)),
                                    (1, 64, 5, 9, 9), (8, 4)),
    "strided_one_filter": (dict(in_channels=28, out_channels=1, kernel_size=(1, 4, 4), stride=(1, 1, 2),
                                bias=False), (1, 28, 1, 7, 7), (1, 1)),
    "strided_one_row": (dict(in_channels=8, out_channels=20, kernel_size=(1, 3, 1), stride=(1, 2, 2)),
                        (1, 8, 2, 3, 7), (8, 4)),
}


@pytest.mark.parametrize("case", list(REGRESSIONS))
def test_vulkan_adreno_regressions(case):
    kwargs, shape, group_size = REGRESSIONS[case]
    conv = nn.Conv3d(**kwargs).eval()
    x = torch.randn(*shape)
    compiled = rt3d_iree.compile(conv, (x,), target="vulkan-adreno", group_size=group_size)
    with torch.no_grad():
        ref = conv(x)
    err = max_rel_error(compiled(x), ref)
    assert err <= TOLERANCE, f"max rel error {err:.3g}"


def test_vulkan_conv_after_fully_pruned_conv():
    """Found by the fuzzer: the second conv's input is a constant (the first is all zeros), so
    IREE evaluates it on the host CPU at compile time, where a GPU tiling cannot lower."""
    first = nn.Conv3d(1, 4, 3, padding=1)
    with torch.no_grad():
        first.weight.zero_()
    model = nn.Sequential(first, nn.ReLU(), nn.Conv3d(4, 8, 3, padding=1))
    run_checked(model, torch.randn(1, 1, 3, 5, 5), "vulkan-adreno", expect_rewritten=2)
