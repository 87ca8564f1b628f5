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
