"""The Python front door: callable results, vmfb bytes, extra flags and clear errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import rt3d_iree
from rt3d_iree import TARGETS, CompileError, Rt3dError
from rt3d_iree.bench import max_rel_error
from rt3d_iree.runners import LocalRunner


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(1, 3, 4, 6, 6)
    return model, x, rt3d_iree.compile(model, (x,))


def test_callable_on_torch_and_numpy(small):
    model, x, compiled = small
    ref = model(x).detach()
    out_t = compiled(x)
    assert isinstance(out_t, torch.Tensor) and max_rel_error(out_t, ref) <= 1e-4
    out_n = compiled(x.numpy())
    assert isinstance(out_n, np.ndarray) and max_rel_error(out_n, ref) <= 1e-4


def test_a_bare_tensor_string_flags_and_the_callers_mode():
    """compile(model, x) as iree-turbine users write it; one string of flags is split like a
    shell's; the caller's model keeps its training mode."""
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.Dropout(0.5)).train()
    x = torch.randn(1, 3, 4, 6, 6)
    compiled = rt3d_iree.compile(model, x, extra_flags="--iree-opt-level=O2 --mlir-disable-threading")
    assert model.training and model[1].training
    model.eval()
    assert max_rel_error(compiled(x), model(x).detach()) <= 1e-4
    with pytest.raises(Rt3dError, match="is a file, not a folder"):
        rt3d_iree.compile(model, x, save_to=__file__ + "/m.vmfb")
    with pytest.raises(Rt3dError, match="extra_flags must be strings"):
        rt3d_iree.compile(model, x, extra_flags=["--iree-opt-level=O2", 3])


def test_a_required_microkernel_names_the_flag_that_exists(small):
    model, x, _ = small
    with pytest.raises(Rt3dError, match="has no microkernel") as err:
        rt3d_iree.compile(model, x, target="vulkan", kernel="microkernel")
    assert "--kernel auto or --kernel codegen" in err.value.hint


def test_vmfb_bytes_and_save(small, tmp_path):
    _, x, compiled = small
    assert compiled.vmfb[:2] == b"PK" and b"IREE" in compiled.vmfb[:256]  # vmfb: zip-framed flatbuffer
    path = compiled.save(tmp_path / "sub" / "m.vmfb")
    assert path.read_bytes() == compiled.vmfb
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_extra_flags_reach_iree_compile(tmp_path):
    model = nn.Conv3d(2, 4, 3).eval()
    x = torch.randn(1, 2, 3, 5, 5)
    dump = tmp_path / "sources"
    rt3d_iree.compile(model, (x,), extra_flags=[f"--iree-hal-dump-executable-sources-to={dump}"])
    assert any(dump.iterdir())


def test_wrong_input_shape_and_dtype(small):
    _, x, compiled = small
    with pytest.raises(Rt3dError, match=r"input 0 has shape 1x3x4x6x7, the module was compiled for 1x3x4x6x6"):
        compiled(torch.randn(1, 3, 4, 6, 7))
    with pytest.raises(Rt3dError, match="dtype float64"):
        compiled(x.double())
    with pytest.raises(Rt3dError, match="takes 1 input"):
        compiled(x, x)
    with pytest.raises(Rt3dError, match="input 0 is a str, the module expects a tensor 1x3x4x6x6"):
        compiled("hello")
    for bad in (dict(threads=0), dict(repetitions=-1), dict(threads="2")):
        with pytest.raises(Rt3dError, match="must be a whole number >= 1"):
            compiled.benchmark(x, **bad)


def test_bad_example_args_and_save_paths(small, tmp_path):
    model, x, compiled = small
    with pytest.raises(Rt3dError, match="example_args must be a tensor or a tuple of tensors, got str"):
        rt3d_iree.compile(model, "hello")
    with pytest.raises(Rt3dError, match="example_args must hold tensors, got tuple"):
        rt3d_iree.compile(model, ((x,),))
    with pytest.raises(Rt3dError, match="is a folder"):
        compiled.save(tmp_path)
    (tmp_path / "f").write_text("")
    with pytest.raises(Rt3dError, match="is a file, not a folder"):
        compiled.save(tmp_path / "f" / "m.vmfb")
    with pytest.raises(Rt3dError, match="reproducer folder .* is a file, not a folder"):
        rt3d_iree.compile(model, (x,), reproducer_dir=tmp_path / "f")


def test_unknown_target_and_bad_group_size(small):
    model, x, _ = small
    with pytest.raises(Rt3dError, match="(?s)unknown target 'mali'.*choose one of: aarch64, .*host"):
        rt3d_iree.compile(model, (x,), target="mali")
    with pytest.raises(Rt3dError, match="bad group size 0x4"):
        rt3d_iree.compile(model, (x,), group_size=(0, 4))
    with pytest.raises(Rt3dError, match="two integers"):
        rt3d_iree.compile(model, (x,), group_size="big")


def test_model_without_conv3d_compiles_unchanged():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU()).eval()
    x = torch.randn(2, 6)
    compiled = rt3d_iree.compile(model, (x,))
    assert compiled.report.convs == []
    assert max_rel_error(compiled(x), model(x).detach()) <= 1e-4


def test_compile_failure_leaves_reproducer(tmp_path, small):
    model, x, _ = small
    with pytest.raises(CompileError) as info:
        rt3d_iree.compile(model, (x,), extra_flags=["--iree-no-such-flag"], reproducer_dir=tmp_path)
    err = info.value
    assert "iree-compile failed" in str(err) and err.command in str(err)
    folder = tmp_path / err.reproducer.split("/")[-1]
    assert (folder / "input.mlir").is_file()
    assert "--iree-no-such-flag" in (folder / "command.sh").read_text()


def test_untraceable_model_gets_clear_error():
    class Branchy(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.export refuses it
                return x
            return -x

    with pytest.raises(Rt3dError, match="torch.export could not export"):
        rt3d_iree.compile(Branchy(), (torch.randn(2, 2),))


class _CountingRunner(LocalRunner):
    """The local runner, counting what it is asked to do."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def run(self, vmfb, function, inputs, n_outputs, driver):
        self.calls.append(f"run {driver}")
        return super().run(vmfb, function, inputs, n_outputs, driver)

    def load(self, vmfb, function, driver):
        self.calls.append(f"load {driver}")
        return super().load(vmfb, function, driver)


def test_target_object_and_runner_are_used_as_given():
    """A Target object (here with its driver replaced) and a runner go in; nobody patches the result."""
    model = nn.Conv3d(2, 4, 3, padding=1).eval()
    x = torch.randn(1, 2, 3, 5, 5)
    target = replace(TARGETS["host"], driver="local-sync")
    runner = _CountingRunner()
    compiled = rt3d_iree.compile(model, (x,), target=target, runner=runner)
    assert compiled.target is target and compiled.runner is runner
    assert max_rel_error(compiled(x), model(x).detach()) <= 1e-4
    compiled(x)
    assert runner.calls == ["load local-sync"]  # the given runner, with the given target's driver, loaded once


def test_wrong_target_or_runner_type_names_what_is_accepted(small):
    model, x, _ = small
    with pytest.raises(Rt3dError, match=r"target must be a target name \(str\) or an rt3d_iree.targets.Target, "
                       "got int") as err:
        rt3d_iree.compile(model, (x,), target=3)
    assert "host" in err.value.hint
    with pytest.raises(Rt3dError, match="runner must be an rt3d_iree.runners.Runner or None, got str") as err:
        rt3d_iree.compile(model, (x,), runner="qemu")
    assert "get_runner" in err.value.hint
    with pytest.raises(Rt3dError, match="target must be"):
        rt3d_iree.optimize(model, (x,), target=None)
