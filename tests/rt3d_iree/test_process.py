"""Running tools: time limits, the error line found in long stderr, reproducers that outlive the call."""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import rt3d_iree
from rt3d_iree import process
from rt3d_iree.errors import Rt3dError
from rt3d_iree.runners import get_runner


def test_the_error_is_found_under_hundreds_of_notes():
    stderr = "input.mlir:3:5: error: failed to legalize operation 'foo'\n" + "note: called from\n" * 300
    assert process.key_lines(stderr) == "input.mlir:3:5: error: failed to legalize operation 'foo'"
    long = "x: INCOMPATIBLE; " + "+avx," * 400 + "\nmore\nend"
    picked = process.key_lines(long).splitlines()
    assert picked[0].startswith("x: INCOMPATIBLE") and picked[0].endswith("[...]") and len(picked[0]) < 420


def test_a_hung_tool_is_stopped_with_a_message(monkeypatch):
    monkeypatch.setenv("RT3D_TIMEOUT_FACTOR", str(0.5 / process.TIMEOUTS_S["run"]))
    with pytest.raises(Rt3dError, match=r"sleepy did not finish within 0.5 s and was stopped") as err:
        process.run([sys.executable, "-c", "import time; time.sleep(30)"], "sleepy", "run")
    assert "RT3D_TIMEOUT_FACTOR" in err.value.hint
    monkeypatch.setenv("RT3D_TIMEOUT_FACTOR", "fast")
    with pytest.raises(Rt3dError, match="RT3D_TIMEOUT_FACTOR must be a number"):
        process.timeout_s("run")


def test_a_failed_call_keeps_its_files_and_names_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "in0.npy"
        data.write_bytes(b"123")
        cmd = [sys.executable, "-c", "import sys; sys.stderr.write('error: boom\\n'); sys.exit(3)", str(data)]
        with pytest.raises(Rt3dError) as err:
            process.check(process.run(cmd, "tool", "run"), "tool", cmd, tmp)
    assert "tool failed (exit 3):\nerror: boom" in err.value.message
    kept = next((tmp_path / "rt3d-reproducers").iterdir())
    assert (kept / "in0.npy").read_bytes() == b"123" and (kept / "stderr.txt").read_text() == "error: boom\n"
    assert str(kept / "in0.npy") in err.value.hint and tmp not in err.value.hint
    assert shlex.split((kept / "command.sh").read_text().splitlines()[-1])[-1] == str(kept / "in0.npy")


@pytest.mark.slow
def test_a_host_module_under_qemu_says_which_device_it_needs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = torch.randn(1, 3, 4, 8, 8)
    compiled = rt3d_iree.compile(torch.nn.Conv3d(3, 4, 3), x, runner=get_runner("qemu"))
    with pytest.raises(Rt3dError, match="INCOMPATIBLE") as err:
        compiled(x)
    assert "compiled for another device" in err.value.hint and "--target aarch64" in err.value.hint
    assert (tmp_path / "rt3d-reproducers").is_dir()


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("module {}\n", "the MLIR has no public function with a body"),
    ("func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {\n  %y = arith.addf %x, %x : tensor<2xf32\n}\n",
     ".mlir:2:40: expected '>' in tensor type"),
])
def test_mlir_files_that_cannot_be_compiled(tmp_path, text, message):
    path = tmp_path / "m.mlir"
    path.write_text(text)
    with pytest.raises(Rt3dError, match=message.replace("(", r"\(")):
        rt3d_iree.compile(path)
