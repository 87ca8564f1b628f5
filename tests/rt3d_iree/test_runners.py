"""Runner plumbing: benchmark JSON, adb command lines, and the errors for missing pieces."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rt3d_iree import tools
from rt3d_iree.driver import parse_input
from rt3d_iree.errors import Rt3dError
from rt3d_iree.runners import AdbRunner, QemuRunner, benchmark_args, get_runner, parse_benchmark_json


def rt3d(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "rt3d_iree.cli", *args], capture_output=True, text=True, env=full)


BENCH_JSON = {
    "context": {"date": "x"},
    "benchmarks": [
        {"name": "BM_forward", "run_type": "iteration", "real_time": 2.0e6, "time_unit": "ns"},
        {"name": "BM_forward", "run_type": "iteration", "real_time": 4.0e6, "time_unit": "ns"},
        {"name": "BM_forward", "run_type": "iteration", "real_time": 3.0e6, "time_unit": "ns"},
        {"name": "BM_forward_mean", "run_type": "aggregate", "aggregate_name": "mean", "real_time": 3.0,
         "time_unit": "ms"},
        {"name": "BM_forward_median", "run_type": "aggregate", "aggregate_name": "median", "real_time": 3.0,
         "time_unit": "ms"},
    ],
}


def test_parse_benchmark_json_takes_median_and_runs():
    median, runs = parse_benchmark_json("some log line\n" + json.dumps(BENCH_JSON))
    assert median == pytest.approx(3.0)
    assert runs == pytest.approx([2.0, 4.0, 3.0])


def test_parse_benchmark_json_without_json_is_clear():
    with pytest.raises(Rt3dError, match="printed no JSON"):
        parse_benchmark_json("segfault")


def test_benchmark_args_thread_flag_only_for_task_driver():
    cpu = benchmark_args("m.vmfb", "forward", ["in0.npy"], "local-task", 4, 7)
    assert "--task_topology_max_group_count=4" in cpu
    assert "--benchmark_format=json" in cpu and "--benchmark_repetitions=7" in cpu
    assert cpu[-1] == "--input=@in0.npy"
    gpu = benchmark_args("m.vmfb", "forward", [], "vulkan", 4, 7)
    assert not any("topology" in a for a in gpu)


def test_adb_commands_push_and_run_with_affinity(tmp_path, monkeypatch):
    monkeypatch.setenv("RT3D_ADB", "/opt/adb")
    tool = tmp_path / "iree-benchmark-module"
    runner = AdbRunner(benchmark_tool=str(tool), serial="R58M", cpu_mask="f0")
    cmds = runner.commands(tmp_path / "module.vmfb", [tmp_path / "in0.npy"], "forward", "local-task", 4, 5)
    d = "/data/local/tmp/rt3d"
    assert cmds[0] == ["/opt/adb", "-s", "R58M", "shell", "mkdir", "-p", d]
    assert cmds[1] == ["/opt/adb", "-s", "R58M", "push", str(tool), f"{d}/iree-benchmark-module"]
    assert cmds[2][-1] == f"{d}/module.vmfb" and cmds[3][-1] == f"{d}/in0.npy"
    shell = cmds[-1][-1]
    assert cmds[-1][:4] == ["/opt/adb", "-s", "R58M", "shell"]
    assert shell.startswith(f"chmod +x {d}/iree-benchmark-module && taskset f0 {d}/iree-benchmark-module ")
    for flag in (f"--module={d}/module.vmfb", "--device=local-task", "--function=forward",
                 "--task_topology_max_group_count=4", "--benchmark_repetitions=5", "--benchmark_format=json",
                 f"--input=@{d}/in0.npy"):
        assert flag in shell


def test_adb_commands_without_serial_or_mask(monkeypatch):
    monkeypatch.setenv("RT3D_ADB", "adb")
    cmds = AdbRunner(benchmark_tool="/x/iree-benchmark-module").commands(
        Path("m.vmfb"), [], "forward", "local-task", 2, 3)
    assert cmds[0][:2] == ["adb", "shell"]
    assert "taskset" not in cmds[-1][-1]


def fake_adb(tmp_path: Path, state_output: str, code: int) -> Path:
    script = tmp_path / "adb"
    script.write_text(f"#!/bin/sh\necho '{state_output}' >&2\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_adb_device_not_connected_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("RT3D_ADB", str(fake_adb(tmp_path, "error: no devices/emulators found", 1)))
    tool = tmp_path / "iree-benchmark-module"
    tool.write_bytes(b"\x7fELF")
    with pytest.raises(Rt3dError, match="no device connected") as exc:
        AdbRunner(benchmark_tool=str(tool)).check("local-task")
    assert "USB debugging" in exc.value.hint


def test_adb_needs_a_phone_binary():
    with pytest.raises(Rt3dError, match="needs an iree-benchmark-module"):
        AdbRunner().check("local-task")


def test_adb_missing_names_platform_tools(monkeypatch):
    monkeypatch.delenv("RT3D_ADB", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Rt3dError, match="adb is not installed") as exc:
        tools.adb()
    assert "platform-tools" in exc.value.hint


def test_adb_runner_does_not_claim_results():
    with pytest.raises(Rt3dError, match="only benchmarks"):
        AdbRunner(benchmark_tool="x").run(b"", "forward", [], 1, "local-task")


def test_missing_qemu_names_the_package(monkeypatch):
    monkeypatch.setenv("RT3D_QEMU", "/nonexistent/qemu-aarch64")
    with pytest.raises(Rt3dError, match="qemu-user") as exc:
        QemuRunner().check("local-task")
    assert "apt-get install qemu-user" in exc.value.hint


def test_missing_aarch64_tools_say_how_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("RT3D_AARCH64_TOOLS", str(tmp_path / "none"))
    with pytest.raises(Rt3dError, match="iree-run-module is not installed") as exc:
        QemuRunner().check("local-task")
    assert "rt3d fetch-tools" in exc.value.hint


def test_qemu_runner_refuses_vulkan():
    with pytest.raises(Rt3dError, match="CPU modules only"):
        QemuRunner().check("vulkan")


def test_missing_vulkan_driver_via_cli(tmp_path):
    proc = rt3d("bench", "--target", "vulkan-adreno", "--out", str(tmp_path),
                env={"VK_ICD_FILENAMES": "/nonexistent.json", "VK_DRIVER_FILES": "/nonexistent.json"})
    assert proc.returncode == 2
    assert "no usable Vulkan driver" in proc.stderr and "mesa-vulkan-drivers" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_missing_qemu_via_cli(tmp_path):
    proc = rt3d("bench", "--target", "aarch64", "--out", str(tmp_path), env={"RT3D_QEMU": "/nonexistent"})
    assert proc.returncode == 2 and "qemu-user" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_runner():
    with pytest.raises(Rt3dError, match="unknown runner"):
        get_runner("phone")


def test_fetch_tools_rejects_a_wheel_without_tools(tmp_path):
    wheel = tmp_path / "iree_base_runtime-3.13.0-cp311-cp311-manylinux_2_28_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("iree/_runtime_libs/version.py", "")
    with pytest.raises(Rt3dError, match="has no iree/_runtime_libs/iree-run-module"):
        tools.fetch_aarch64_tools(tmp_path / "tools", wheel=wheel)
    assert not (tmp_path / "tools").exists()


def test_fetch_tools_unpacks_executables(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for tool in tools.AARCH64_TOOLS:
            zf.writestr(f"iree/_runtime_libs/{tool}", b"\x7fELF")
    dest = tools.fetch_aarch64_tools(tmp_path / "tools", wheel=wheel)
    for tool in tools.AARCH64_TOOLS:
        assert os.access(dest / tool, os.X_OK)


def test_parse_input_forms(tmp_path):
    a = parse_input("1x3x4xf32=0.5")
    assert a.shape == (1, 3, 4) and a.dtype == np.float32 and float(a[0, 0, 0]) == 0.5
    np.save(tmp_path / "x.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert parse_input(f"@{tmp_path / 'x.npy'}").shape == (2, 3)
    for bad in ("1x3xfoo=1", "abc", "1x2xf32=x"):
        with pytest.raises(Rt3dError):
            parse_input(bad)
    with pytest.raises(Rt3dError, match="cannot read input"):
        parse_input(f"@{tmp_path / 'missing.npy'}")


_FAKE_TOOL = r"""
import ctypes, os, threading, time
libc = ctypes.CDLL(None)
policies = {}
def worker(i):
    libc.prctl(15, f"iree-worker-{i}".encode(), 0, 0, 0)  # PR_SET_NAME, as IREE names its workers
    time.sleep(1.0)
    policies[i] = os.sched_getscheduler(0)
threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
for t in threads: t.start()
time.sleep(1.0)
for t in threads: t.join()
print(os.sched_getscheduler(0), policies[0], policies[1], os.environ.get("MALLOC_MMAP_MAX_"))
"""


def test_idle_caller_lowers_only_the_waiting_thread():
    """The tool's main thread (IREE's spinning waiter) goes to SCHED_IDLE, its workers do not."""
    import os
    import sys

    from rt3d_iree.runners import run_with_idle_caller

    proc = run_with_idle_caller([sys.executable, "-c", _FAKE_TOOL], "fake tool")
    assert proc.returncode == 0, proc.stderr
    main, w0, w1, mmap_max = proc.stdout.split()
    assert int(main) == os.SCHED_IDLE
    assert int(w0) == int(w1) == os.SCHED_OTHER
    assert mmap_max == "0"  # and it runs under the benchmark malloc settings


def test_local_benchmark_times_a_real_module():
    """iree-benchmark-module through the idle-caller path: a real module, real timings."""
    import torch

    import rt3d_iree

    compiled = rt3d_iree.compile(torch.nn.Conv3d(4, 8, 3, padding=1).eval(), (torch.randn(1, 4, 4, 8, 8),))
    res = compiled.benchmark(torch.randn(1, 4, 4, 8, 8).numpy(), threads=2, repetitions=3)
    assert res.runner == "local" and len(res.times_ms) == 3
    assert all(t > 0 for t in res.times_ms) and res.median_ms > 0
