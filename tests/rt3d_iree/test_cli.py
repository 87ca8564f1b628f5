"""`rt3d compile` and `rt3d opt` on saved models, as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from iree.compiler.tools.binaries import find_tool
from torch import nn

import rt3d_iree
from rt3d_iree.bench import max_rel_error
from rt3d_iree.runtime import CompiledModule
from rt3d_iree.targets import TARGETS


def rt3d(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rt3d_iree.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, (1, 3, 3))).eval()
    x = torch.randn(1, 3, 4, 6, 6)
    path = tmp_path_factory.mktemp("models") / "model.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    return path, model, x


def run_vmfb(path, x):
    cm = CompiledModule(path.read_bytes(), TARGETS["host"], "forward", [])
    # run unchecked: this test checks the file, not the call-time checks
    return cm.runner.run(cm.vmfb, "forward", [x.numpy()], 1, "local-task")[0]


def test_compile_pt2_with_passthrough_flag(saved, tmp_path):
    path, model, x = saved
    out = tmp_path / "m.vmfb"
    dump = tmp_path / "dump"
    proc = rt3d("compile", str(path), "-o", str(out), f"--iree-hal-dump-executable-sources-to={dump}")
    assert proc.returncode == 0, proc.stderr
    assert "2 of 2 conv3d rewritten" in proc.stdout
    assert any(dump.iterdir())
    assert max_rel_error(run_vmfb(out, x), model(x).detach()) <= 1e-4


def test_opt_output_compiles_with_stock_iree_compile(saved, tmp_path):
    path, model, x = saved
    mlir = tmp_path / "kgs.mlir"
    proc = rt3d("opt", str(path), "-o", str(mlir))
    assert proc.returncode == 0, proc.stderr
    text = mlir.read_text()
    assert "linalg.conv_3d" not in text and "rt3d_kgs_conv3d_0" in text
    vmfb = tmp_path / "stock.vmfb"
    subprocess.run([find_tool("iree-compile"), str(mlir), *TARGETS["host"].flags, "-o", str(vmfb)], check=True)
    assert max_rel_error(run_vmfb(vmfb, x), model(x).detach()) <= 1e-4


@pytest.mark.parametrize("other", ["aarch64", "vulkan"])
def test_opt_output_under_stock_iree_compile_for_another_target_says_what_to_do(saved, tmp_path, other):
    """Host `rt3d opt` output given another target's flags: IREE's error names the fix, and the
    kernel bitcode (a resource, not inline hex) no longer floods it (443 KB of hex before)."""
    path, _, _ = saved
    mlir = tmp_path / "kgs.mlir"
    assert rt3d("opt", str(path), "-o", str(mlir)).returncode == 0
    proc = subprocess.run([find_tool("iree-compile"), str(mlir), *TARGETS[other].flags, "-o", str(tmp_path / "x.vmfb")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and not re.search("[0-9A-F]{200}", proc.stderr)
    first_error = next(line for line in proc.stderr.splitlines() if "error" in line.lower())
    assert "rt3d-kernels-built-for-" in proc.stderr and ".run-rt3d-opt-again-for-your-target" in proc.stderr
    if other == "vulkan":  # the error is raised inside a dispatch: its location says what to do
        assert first_error.startswith("rt3d opt --target host wrote this kernel dispatch; for another target run")
    else:  # a missing object whose name says what to do
        assert "run-rt3d-opt-again-for-your-target" in first_error


@pytest.mark.slow
def test_opt_for_aarch64_compiles_with_its_flags_and_refuses_another_target(saved, tmp_path):
    """What `rt3d opt --target T` prints is the command that compiles it; rt3d refuses it for another target."""
    path, model, x = saved
    mlir = tmp_path / "a64.mlir"
    proc = rt3d("opt", str(path), "-o", str(mlir), "--target", "aarch64")
    assert proc.returncode == 0, proc.stderr
    assert " ".join(TARGETS["aarch64"].flags) in proc.stdout and '{rt3d.target = "aarch64"}' in mlir.read_text()
    vmfb = tmp_path / "a64.vmfb"
    subprocess.run([find_tool("iree-compile"), str(mlir), *TARGETS["aarch64"].flags, "-o", str(vmfb)], check=True)
    assert max_rel_error(rt3d_iree.load_module(vmfb, target="aarch64")(x), model(x).detach()) <= 1e-4
    proc = rt3d("compile", str(mlir), "-o", str(tmp_path / "v.vmfb"), "--target", "vulkan")
    assert proc.returncode == 2 and "written by rt3d opt for target 'aarch64'" in proc.stderr
    assert "--target aarch64" in proc.stderr and len(proc.stderr) < 1000 and not (tmp_path / "v.vmfb").exists()


@pytest.mark.parametrize("flags, message", [
    (["--group_size", "8x4"], "unknown flag --group_size (did you mean --group-size?)"),
    (["--iree-hal-target-device=vulkan"], "--iree-hal-target-device=vulkan chooses the device"),
    (["--", "--iree-hal-target-backends=vulkan-spirv"], "--iree-hal-target-backends=vulkan-spirv chooses the device"),
])
def test_flags_for_iree_compile_are_checked_before_compiling(saved, tmp_path, flags, message):
    path, _, _ = saved
    proc = rt3d("compile", str(path), "-o", str(tmp_path / "x.vmfb"), *flags)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.vmfb").exists() and not (tmp_path / "rt3d-reproducers").exists()


@pytest.mark.parametrize("suffix", [".mlirbc", ".mlir"])  # .mlir: the kernel bitcode as a resource, inlined again
def test_compile_mlir_input(saved, tmp_path, suffix):
    path, model, x = saved
    mlir = tmp_path / f"kgs{suffix}"
    assert rt3d("opt", str(path), "-o", str(mlir)).returncode == 0
    out = tmp_path / "m.vmfb"
    proc = rt3d("compile", str(mlir), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert max_rel_error(run_vmfb(out, x), model(x).detach()) <= 1e-4


@pytest.mark.parametrize(
    "args, message",
    [
        (["compile", "missing.pt2", "-o", "x.vmfb"], "no such file: missing.pt2"),
        (["compile", "model.onnx", "-o", "x.vmfb"], "do not know how to read 'model.onnx'"),
        (["opt", "{model}", "-o", "x.mlir", "--target", "mali"], "unknown target 'mali'"),
        (["opt", "{model}", "-o", "x.mlir", "--group-size", "8by4"], "group size must look like 8x4"),
        (["demo", "--threads", "0"], "argument --threads: expected a whole number >= 1, got 0"),
        (["bench", "--threads", "-1"], "argument --threads: expected a whole number >= 1, got -1"),
        (["bench", "--repetitions", "0"], "argument --repetitions: expected a whole number >= 1, got 0"),
        (["demo", "--reps", "0"], "argument --repetitions/--reps: expected a whole number >= 1, got 0"),
        (["prune", "-o", "p.pt", "--lam", "-1"], "argument --lam: expected a number >= 0, got -1"),
        (["demo", "--width", "0"], "argument --width: expected a width multiplier in (0, 4]"),
        (["prune", "-o", "p.pt", "--rate", "0.5"], "expected a FLOPs reduction rate >= 1"),
        (["bench", "--size", "8"], "needs width > 0 and clips of at least 16 frames x 16x16"),
        (["compile", "{model}", "-o", "{model}/x.vmfb"], "model.pt2 is a file, not a folder"),
        (["opt", "{model}", "-o", "."], "the output . is a folder"),
        (["compile", "{model}", "-o", "/proc/rt3d/x.vmfb"], "/proc is not writable"),
        (["prune", "-o", "{model}/p.pt", "--size", "16"], "model.pt2 is a file, not a folder"),
        # every output folder and work folder is checked before the work, not when the results are written
        (["demo", "--out", "{model}"], "the output folder {model} is a file, not a folder"),
        (["prune-table", "--quick", "--out", "{model}"], "the output folder {model} is a file, not a folder"),
        (["calibrate", "--quick", "--out", "/proc/rt3d"], "/proc is not writable"),
        (["prune", "-o", "p.pt", "--workdir", "{model}"], "the work folder {model} is a file, not a folder"),
        (["compile", "{model}", "-o", "x.vmfb", "--reproducer-dir", "{model}"], "the reproducer folder"),
        (["opt", "{model}", "-o", "/dev/null"], "the output /dev/null exists and is not a regular file"),
        (["compile", "{model}", "-o", "{model}"], "is the input file"),
        (["compile", "{model}", "-o", ""], "the output path is empty"),
        (["compile", "{model}", "-o", "x.vmfb", "stray"], "unexpected argument 'stray'"),
        (["prune", "-o", "model.pt2"], "the checkpoint model.pt2 should end in .pt"),
        (["prune", "-o", "p.pt", "--size", "4"], "c3d needs clips of at least 16 frames x 16x16"),
        (["prune", "-o", "p.pt", "--seed", "-5"], "argument --seed: expected a seed in [0, 2**32)"),
        (["prune", "-o", "p.pt", "--distill", "2"], "argument --distill: expected a distillation weight in [0, 1]"),
        (["demo", "--size", "8"], "c3d needs clips of at least 16 frames x 16x16"),
        (["demo", "--width", "inf"], "argument --width: expected a width multiplier in (0, 4]"),
        (["report", "--models", "s3d,c3d", "--size", "8"], "c3d needs clips of at least 16 frames"),
        (["report", "--rates", "1,nan"], "argument --rates: expected FLOPs rates >= 1"),
        (["tune", "--candidates", "8x4,0x4"], "bad group size 0x4"),
        (["tune", "--candidates", "auto"], "argument --candidates: expected group sizes"),
        (["tune", "--set", "auto"], "--set needs a group size, not auto"),
        (["tune", "--target", "nosuch", "--set", "8x4"], "unknown target 'nosuch'"),
        (["fetch-tools", "--wheel", "missing.whl"], "no such wheel file: missing.whl"),
        (["bench", "--device", "nosuch"], "unknown IREE driver 'nosuch'"),
        (["bench", "{model}", "--input", "1x3x4x6x7xf32=0"],
         "model.pt2 takes inputs 1x3x4x6x6xf32, but --input gave 1x3x4x6x7xf32"),
        (["report", "--rates", "1,30", "--quick"], "a 30x whole-model FLOPs reduction cannot be reached"),
    ],
)
def test_bad_input_messages(saved, tmp_path, args, message):
    path, _, _ = saved
    args = [a.replace("{model}", str(path)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "rt3d_iree.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert message.replace("{model}", str(path)) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused command left files behind"


def test_version():
    proc = subprocess.run([sys.executable, "-m", "rt3d_iree.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("rt3d-iree ")


def test_corrupt_pt2_and_failed_compile(saved, tmp_path):
    path, _, _ = saved
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(path.read_bytes()[:100])
    proc = rt3d("compile", str(bad), "-o", str(tmp_path / "x.vmfb"))
    assert proc.returncode == 2 and "not a readable torch.export program" in proc.stderr
    assert "Traceback" not in proc.stderr  # torch's own logged traceback is silenced too
    out = tmp_path / "y.vmfb"
    proc = rt3d("compile", str(path), "-o", str(out), "--iree-no-such-flag", "--reproducer-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "reproducer:" in proc.stderr and "command:" in proc.stderr
    assert not out.exists()
    assert list((tmp_path / "r").glob("*/command.sh"))
