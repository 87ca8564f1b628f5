"""Bad input gets one clear message naming the problem and what to do (no traceback)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rt3d_iree
from rt3d_iree.bench import max_rel_error
from rt3d_iree.errors import Rt3dError
from rt3d_iree.runners import LocalRunner

from .test_runners import rt3d


def export(model: nn.Module, x: torch.Tensor, path):
    torch.export.save(torch.export.export(model.eval(), (x,)), str(path))
    return path


def test_grouped_conv3d_is_split_per_group_and_rewritten(tmp_path):
    """torch-mlir cannot lower grouped 3-D convs; rt3d_iree/decompose.py splits them into one
    conv per group (each rewritten, named after the layer) before import."""
    model = nn.Sequential(nn.Conv3d(8, 8, 3, padding=1, groups=2), nn.ReLU(), nn.Conv3d(8, 4, 1)).eval()
    x = torch.randn(1, 8, 3, 5, 5)
    compiled = rt3d_iree.compile(model, (x,))
    assert compiled.report.rewritten == 3 and not compiled.report.skipped
    assert [c.location for c in compiled.report.convs] == [
        'loc("0 group 0 (Conv3d)":1:0)', 'loc("0 group 1 (Conv3d)":1:0)', 'loc("2 (Conv3d)":1:0)']
    assert max_rel_error(compiled(x), model(x)) <= 1e-4
    proc = rt3d("compile", str(export(model, x, tmp_path / "g.pt2")), "-o", str(tmp_path / "g.vmfb"))
    assert proc.returncode == 0, proc.stderr
    assert "3 of 3 conv3d rewritten" in proc.stdout and "left to IREE" not in proc.stdout


def test_model_without_conv3d_says_so(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    path = export(model, torch.randn(1, 3, 2, 2), tmp_path / "mlp.pt2")
    proc = rt3d("compile", str(path), "-o", str(tmp_path / "mlp.vmfb"))
    assert proc.returncode == 0, proc.stderr
    assert "has no conv3d" in proc.stdout


@pytest.fixture(scope="module")
def good_vmfb(tmp_path_factory):
    conv = nn.Conv3d(2, 4, 3, padding=1).eval()
    x = torch.randn(1, 2, 3, 4, 4)
    path = tmp_path_factory.mktemp("v") / "good.vmfb"
    rt3d_iree.compile(conv, (x,), save_to=path)
    return path, x


def test_truncated_vmfb_is_a_clear_error(good_vmfb, tmp_path):
    path, x = good_vmfb
    data = path.read_bytes()
    with pytest.raises(Rt3dError, match="cannot load the compiled module") as exc:
        LocalRunner().run(data[: len(data) // 3], "forward", [x.numpy()], 1, "local-task")
    assert "compile it again" in exc.value.hint
    bad = tmp_path / "truncated.vmfb"
    bad.write_bytes(data[: len(data) // 3])
    proc = rt3d("bench", str(bad), "--input", "1x2x3x4x4xf32=1", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "iree-benchmark-module failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # no partial results


def test_wrong_rank_at_call_time(good_vmfb):
    path, x = good_vmfb
    conv = nn.Conv3d(2, 4, 3, padding=1).eval()
    compiled = rt3d_iree.compile(conv, (x,))
    with pytest.raises(Rt3dError, match="input 0 has shape 2x3x4x4, the module was compiled for 1x2x3x4x4"):
        compiled(x[0])


def test_bad_group_size_and_rate_on_the_cli(tmp_path, good_vmfb):
    proc = rt3d("bench", "--group-size", "0x4", "--out", str(tmp_path))
    assert proc.returncode == 2 and "bad group size 0x4" in proc.stderr
    proc = rt3d("bench", "--rate", "0.5", "--out", str(tmp_path))
    assert proc.returncode == 2 and "expected a FLOPs reduction rate >= 1" in proc.stderr
    proc = rt3d("bench", "--group-size", "eight", "--out", str(tmp_path))
    assert proc.returncode == 2 and "group size must look like 8x4" in proc.stderr


class _Svd(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svd(x)[1]


def test_a_depthwise_conv3d_with_a_channel_multiplier_compiles_and_matches():
    """X3D / CSN style: groups = channels (here with 2 outputs per channel, stride 2), which
    torch-mlir rejected ("cannot lower torch.aten.convolution"); now one multiply-add per kernel
    position over strided slices, fused by IREE."""
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.Conv3d(4, 8, 3, stride=(1, 2, 2), padding=1, groups=4)).eval()
    x = torch.randn(1, 3, 4, 6, 6)
    compiled = rt3d_iree.compile(model, x)
    assert compiled.report.rewritten == 1  # the 1x1x1 conv; the depthwise one is no longer a conv
    assert max_rel_error(compiled(x), model(x)) <= 1e-4


def test_operator_torch_mlir_rejects_is_named(tmp_path):
    with pytest.raises(Rt3dError, match="it cannot lower the operator torch.aten._linalg_svd") as err:
        rt3d_iree.compile(_Svd(), (torch.randn(1, 3, 4, 4),))
    assert "what to do:" in str(err.value)
    proc = rt3d("compile", str(export(_Svd(), torch.randn(1, 3, 4, 4), tmp_path / "svd.pt2")),
                "-o", str(tmp_path / "svd.vmfb"))
    assert proc.returncode == 2 and "torch.aten._linalg_svd" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "svd.vmfb").exists()
