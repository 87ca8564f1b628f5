"""Runners: where a compiled module executes and is timed.

- ``local``: this machine, in-process for results and the wheel's iree-benchmark-module for
  timings (host CPU, or Vulkan where a driver exists; on Mesa's software driver the
  timings are of a CPU pretending to be a GPU).
- ``qemu``: aarch64 code under qemu-user with the official aarch64 IREE tools. Results are
  real; timings are of an emulator and are labelled as meaningless.
- ``adb``: a phone. Pushes the module, the inputs and the user's own aarch64
  iree-benchmark-module to /data/local/tmp and runs it there with a thread count and CPU
  affinity. Nothing here claims a phone was used unless adb actually ran one.

All timing goes through iree-benchmark-module with ``--benchmark_format=json``.

The caller's spin: IREE 3.13's synchronous wait (``hal.fence.await`` in a sync entry point)
busy-waits on the calling thread (a ``pause`` loop in ``iree_async_semaphore_multi_wait``)
while the task workers run the dispatches. With as many workers as cores that is one thread
more than there are cores, and the spinning caller takes a core's share from the workers
(measured on 2 cores: the reference layer took 3.3 ms instead of 2.2 ms, the caller burned
0.7 ms of CPU per call). The local runner therefore lowers the caller thread of
iree-benchmark-module to ``SCHED_IDLE`` once its workers exist: the spin then only uses time
no worker wants, and every IREE engine (stock, rt3d dense, rt3d KGS) runs on exactly
``threads`` busy threads, like PyTorch and ONNX Runtime. It also runs the tool under the
benchmark malloc settings (rt3d_iree/environment.py, ``ALLOCATOR_ENV``).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import process, tools
from .environment import allocator_env, runtime_tool
from .errors import Rt3dError
from .session import CPU_DRIVERS, Session

logger = logging.getLogger(__name__)

RUNNERS = ("local", "qemu", "adb")
DRIVERS = (*CPU_DRIVERS, "vulkan")  # the IREE drivers a module runs on here (iree-benchmark-module --device)


@dataclass(frozen=True)
class BenchResult:
    """Timings of one module on one runner (milliseconds)."""

    runner: str
    device: str
    driver: str
    threads: int
    repetitions: int
    median_ms: float
    times_ms: list[float] = field(default_factory=list)
    emulated: bool = False


def benchmark_args(
    module: str, function: str, inputs: Sequence[str], driver: str, threads: int, repetitions: int
) -> list[str]:
    """iree-benchmark-module arguments (after the binary) shared by every runner."""
    args = [
        f"--module={module}", f"--device={driver}", f"--function={function}",
        f"--benchmark_repetitions={repetitions}", "--benchmark_format=json",
        "--benchmark_min_warmup_time=0.1",
    ]
    if driver == "local-task":
        args.append(f"--task_topology_max_group_count={threads}")
    args += [f"--input=@{p}" for p in inputs]
    return args


def parse_benchmark_json(text: str) -> tuple[float, list[float]]:
    """(median ms, per-repetition ms) from iree-benchmark-module's JSON output."""
    try:
        start = text.index("{")
        data = json.loads(text[start:])
    except ValueError:
        raise Rt3dError(
            f"iree-benchmark-module printed no JSON: {text.strip()[-300:]!r}",
            "run the printed command by hand to see what went wrong",
        ) from None
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    runs, median = [], None
    for b in data.get("benchmarks", []):
        ms = b["real_time"] * scale[b.get("time_unit", "ns")]
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                median = ms
        else:
            runs.append(ms)
    if not runs and median is None:
        raise Rt3dError("iree-benchmark-module reported no benchmark", "check the --function name")
    return (median if median is not None else statistics.median(runs)), runs


def _write_inputs(folder: Path, inputs: Sequence[np.ndarray]) -> list[Path]:
    paths = []
    for i, arr in enumerate(inputs):
        path = folder / f"in{i}.npy"
        np.save(path, np.ascontiguousarray(arr))
        paths.append(path)
    return paths


def _run_module_tool(make_cmd, vmfb: bytes, function: str, inputs: Sequence[np.ndarray], n_outputs: int,
                     driver: str, what: str) -> list[np.ndarray]:
    """Run the entry function with an iree-run-module command line, through .npy files."""
    with tempfile.TemporaryDirectory(prefix="rt3d-run-") as tmp:
        path = Path(tmp) / "module.vmfb"
        path.write_bytes(vmfb)
        ins = _write_inputs(Path(tmp), inputs)
        outs = [Path(tmp) / f"out{i}.npy" for i in range(n_outputs)]
        args = [f"--module={path}", f"--device={driver}", f"--function={function}"]
        args += [f"--input=@{p}" for p in ins] + [f"--output=@{p}" for p in outs]
        cmd = make_cmd(args)
        logger.info("running: %s", shlex.join(cmd))
        proc = process.run(cmd, what, "run")
        process.check(proc, what, cmd, tmp)
        return [np.load(p) for p in outs]


def _has_workers(pid: int) -> bool:
    """Whether process ``pid`` has started an IREE task worker (a thread named iree-worker-*)."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="ascii", errors="replace") as f:
                if f.read().startswith("iree-worker"):
                    return True
    except OSError:  # the process or one of its threads ended meanwhile
        pass
    return False


def run_with_idle_caller(cmd: list[str], what: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """Run an IREE tool whose main thread only waits, lowering that thread to SCHED_IDLE once
    its task workers exist (see the module docstring: the wait spins).

    The executor starts all its workers together, so a short pause after the first one
    appears covers them all; they keep the normal policy, as threads created before the
    change do not inherit it. Where the change is impossible the tool runs as is.
    """

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=allocator_env())
    lowered = False
    if hasattr(os, "SCHED_IDLE"):
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            if _has_workers(proc.pid):
                time.sleep(0.01)
                try:
                    os.sched_setscheduler(proc.pid, os.SCHED_IDLE, os.sched_param(0))  # the main thread only
                    lowered = True
                except OSError as exc:
                    logger.warning("could not lower the benchmark's waiting thread (%s); timings include its spin", exc)
                break
            time.sleep(0.001)
    out, err = process.communicate(proc, what, "benchmark", cmd)
    if not lowered and proc.returncode == 0:
        logger.warning("the benchmark's waiting thread ran at normal priority; timings include its spin")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _benchmark_module_tool(make_cmd, vmfb: bytes, function: str, inputs: Sequence[np.ndarray], driver: str,
                           threads: int, repetitions: int, what: str,
                           idle_caller: bool = False) -> tuple[float, list[float]]:
    """Time the entry function with an iree-benchmark-module command line (median ms, runs).

    ``idle_caller``: run the tool's waiting thread at SCHED_IDLE (local CPU runs, see above).
    """
    with tempfile.TemporaryDirectory(prefix="rt3d-bench-") as tmp:
        path = Path(tmp) / "module.vmfb"
        path.write_bytes(vmfb)
        ins = _write_inputs(Path(tmp), inputs)
        cmd = make_cmd(benchmark_args(str(path), function, [str(p) for p in ins], driver, threads, repetitions))
        logger.info("running: %s", shlex.join(cmd))
        if idle_caller and driver == "local-task":
            proc = run_with_idle_caller(cmd, what)
        else:
            proc = process.run(cmd, what, "benchmark")
        process.check(proc, what, cmd, tmp)
    return parse_benchmark_json(proc.stdout)


class Runner(ABC):
    """Runs and times vmfb modules somewhere."""

    name = "runner"
    emulated = False

    @abstractmethod
    def check(self, driver: str) -> str:
        """Raise an Rt3dError naming what to install if this runner cannot run ``driver``;
        return a device description."""

    @abstractmethod
    def run(self, vmfb: bytes, function: str, inputs: Sequence[np.ndarray], n_outputs: int,
            driver: str) -> list[np.ndarray]:
        """Call ``function`` on ``inputs``; return its results as numpy arrays."""

    @abstractmethod
    def benchmark(self, vmfb: bytes, function: str, inputs: Sequence[np.ndarray], driver: str,
                  threads: int = 2, repetitions: int = 5) -> BenchResult:
        """Time ``function`` with iree-benchmark-module."""

    def load(self, vmfb: bytes, function: str, driver: str) -> Session | None:
        """The module loaded once for many calls, where this runner can (None: every call runs it afresh)."""
        return None


class LocalRunner(Runner):
    """This machine: the in-process IREE runtime and the wheel's iree-benchmark-module."""

    name = "local"

    def check(self, driver: str) -> str:
        if driver == "vulkan":
            return tools.check_vulkan()
        return "host CPU"

    def run(self, vmfb, function, inputs, n_outputs, driver):
        self.check(driver)
        if driver not in CPU_DRIVERS:
            # The Python binding's device-to-host copy imports host memory, which Vulkan
            # drivers may refuse (alignment); the runtime tool reads results back itself.
            return _run_module_tool(lambda args: [runtime_tool("iree-run-module"), *args], vmfb, function,
                                    inputs, n_outputs, driver, "iree-run-module")
        session = Session(vmfb, function, driver)
        try:
            return session(inputs)
        finally:
            session.close()

    def load(self, vmfb, function, driver):
        if driver not in CPU_DRIVERS:
            return None
        return Session(vmfb, function, driver)

    def benchmark(self, vmfb, function, inputs, driver, threads=2, repetitions=5):

        device = self.check(driver)
        median, runs = _benchmark_module_tool(lambda args: [runtime_tool("iree-benchmark-module"), *args], vmfb,
                                              function, inputs, driver, threads, repetitions, "iree-benchmark-module",
                                              idle_caller=True)
        return BenchResult(self.name, device, driver, threads, repetitions, median, runs,
                           emulated=driver == "vulkan" and "llvmpipe" in device)


class QemuRunner(Runner):
    """aarch64 modules under qemu-user, with the aarch64 tools of the same IREE release."""

    name = "qemu"
    emulated = True

    def check(self, driver: str) -> str:
        if driver not in CPU_DRIVERS:
            raise Rt3dError(f"the qemu runner runs CPU modules only, not driver {driver!r}",
                            "use --runner local for Vulkan modules")
        tools.qemu_aarch64()
        tools.aarch64_tool("iree-run-module")
        return "aarch64 under qemu-user (emulated)"

    def _cmd(self, tool: str, args: list[str]) -> list[str]:
        exe, qargs = tools.qemu_aarch64()
        return [exe, *qargs, str(tools.aarch64_tool(tool)), *args]

    def run(self, vmfb, function, inputs, n_outputs, driver):
        self.check(driver)
        return _run_module_tool(lambda args: self._cmd("iree-run-module", args), vmfb, function, inputs,
                                n_outputs, driver, "iree-run-module under qemu")

    def benchmark(self, vmfb, function, inputs, driver, threads=2, repetitions=5):
        device = self.check(driver)
        median, runs = _benchmark_module_tool(lambda args: self._cmd("iree-benchmark-module", args), vmfb, function,
                                              inputs, driver, threads, repetitions, "iree-benchmark-module under qemu")
        return BenchResult(self.name, device, driver, threads, repetitions, median, runs, emulated=True)


@dataclass
class AdbRunner(Runner):
    """A phone over adb, timed by an aarch64 iree-benchmark-module the user supplies.

    Attributes:
        benchmark_tool: local path of an Android/aarch64 iree-benchmark-module binary.
        serial: adb device serial (``adb devices``); None uses the only connected device.
        device_dir: working folder on the phone.
        cpu_mask: hexadecimal CPU mask for ``taskset`` (for example ``f0`` = the four big
            cores of a 4+4 SoC); None leaves placement to the scheduler.
    """

    benchmark_tool: str | None = None
    serial: str | None = None
    device_dir: str = "/data/local/tmp/rt3d"
    cpu_mask: str | None = None
    name = "adb"

    def _adb(self) -> list[str]:
        base = [tools.adb()]
        return base + (["-s", self.serial] if self.serial else [])

    def check(self, driver: str) -> str:
        if not self.benchmark_tool:
            raise Rt3dError(
                "the adb runner needs an iree-benchmark-module built for the phone",
                "pass --adb-tool PATH (an Android aarch64 iree-benchmark-module from IREE's release or your build)",
            )
        if not Path(self.benchmark_tool).is_file():
            raise Rt3dError(f"{self.benchmark_tool} does not exist",
                            "pass the path of the phone's iree-benchmark-module")
        cmd = [*self._adb(), "get-state"]
        proc = process.run(cmd, "adb get-state", "adb")
        if proc.returncode != 0 or proc.stdout.strip() != "device":
            who = f"device {self.serial}" if self.serial else "no device"
            raise Rt3dError(
                f"adb reports {who} connected ({(proc.stderr or proc.stdout).strip()[:200]})",
                "connect the phone with USB debugging enabled and check `adb devices`; pass --adb-serial to pick one",
            )
        model = process.run([*self._adb(), "shell", "getprop", "ro.product.model"], "adb getprop",
                            "adb").stdout.strip()
        return f"phone over adb: {model or 'unknown model'}"

    def commands(self, module: Path, inputs: Sequence[Path], function: str, driver: str, threads: int,
                 repetitions: int) -> list[list[str]]:
        """The adb command lines that push everything and run the benchmark (in order)."""
        adb = self._adb()
        d = self.device_dir
        tool = Path(self.benchmark_tool or "iree-benchmark-module")
        cmds = [[*adb, "shell", "mkdir", "-p", d]]
        for local in [tool, module, *inputs]:
            cmds.append([*adb, "push", str(local), f"{d}/{local.name}"])
        remote_inputs = [f"{d}/{p.name}" for p in inputs]
        bench = [f"{d}/{tool.name}",
                 *benchmark_args(f"{d}/{module.name}", function, remote_inputs, driver, threads, repetitions)]
        if self.cpu_mask:
            bench = ["taskset", self.cpu_mask, *bench]
        shell = f"chmod +x {shlex.quote(f'{d}/{tool.name}')} && {shlex.join(bench)}"
        cmds.append([*adb, "shell", shell])
        return cmds

    def run(self, vmfb, function, inputs, n_outputs, driver):
        raise Rt3dError("the adb runner only benchmarks; it does not return results",
                        "check numerics with the qemu runner (same aarch64 code) before timing on the phone")

    def benchmark(self, vmfb, function, inputs, driver, threads=2, repetitions=5):
        device = self.check(driver)
        with tempfile.TemporaryDirectory(prefix="rt3d-adb-") as tmp:
            path = Path(tmp) / "module.vmfb"
            path.write_bytes(vmfb)
            ins = _write_inputs(Path(tmp), inputs)
            out = ""
            cmds = self.commands(path, ins, function, driver, threads, repetitions)
            for i, cmd in enumerate(cmds):
                logger.info("running: %s", shlex.join(cmd))
                proc = process.run(cmd, "adb", "benchmark" if i == len(cmds) - 1 else "adb")  # the last one times
                process.check(proc, "adb", cmd, tmp)
                out = proc.stdout
        median, runs = parse_benchmark_json(out)
        return BenchResult(self.name, device, driver, threads, repetitions, median, runs, emulated=False)


def check_runner_type(runner: object) -> None:
    """Refuse, before any work, a runner argument that is not a Runner (a name, say)."""
    if runner is not None and not isinstance(runner, Runner):
        raise Rt3dError(
            f"runner must be an rt3d_iree.runners.Runner or None, got {type(runner).__name__}",
            "pass rt3d_iree.runners.get_runner(name) with name local, qemu or adb, or leave it out "
            "for the target's own",
        )


def get_runner(name: str, **options) -> Runner:
    """A runner by name (``local``, ``qemu``, ``adb``); ``options`` go to the adb runner."""
    if name == "local":
        return LocalRunner()
    if name == "qemu":
        return QemuRunner()
    if name == "adb":
        return AdbRunner(**options)
    raise Rt3dError(f"unknown runner {name!r}", f"choose one of: {', '.join(RUNNERS)}")
