"""`rt3d bench`: the iree-benchmark-module driver for every target and runner.

With no module given it benchmarks a built-in small C3D, dense and KGS, compiled for the
target, after checking both against PyTorch on the runner itself (so a qemu run proves the
aarch64 code correct even though its timings are of an emulator). Given a .vmfb it times
that; given a .pt2 / .mlir / .mlirbc it compiles it first (and, for .pt2, checks it).
Results go out as JSON and CSV beside a markdown table.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import api
from .bench import format_table
from .errors import Rt3dError
from .files import atomic_write
from .group_size import resolve_group_size
from .harness import ROUNDS, Variant, check_against, check_rounds, medians, time_interleaved
from .importer import load_program
from .models import C3D, count_macs, min_input
from .runners import Runner, get_runner
from .session import CPU_DRIVERS
from .sparsity import apply_kgs_magnitude
from .targets import NARROW_SUBGROUP_DEVICES, Target, get_target

logger = logging.getLogger(__name__)

_NP_TYPES = {"f32": np.float32, "f16": np.float16, "f64": np.float64, "i32": np.int32, "i64": np.int64,
             "i8": np.int8}
COLUMNS = ["model", "variant", "target", "runner", "device", "threads", "median_ms", "speedup_vs_dense",
           "python_call_ms", "python_call_time_ratio", "max_rel_error", "timing"]


@dataclass(frozen=True)
class BenchConfig:
    """What `rt3d bench` measures and how."""

    target: str = "host"
    runner: str | None = None  # None: the target's default (local, or qemu for aarch64)
    threads: int = 2
    repetitions: int = 5  # timed runs per variant per round
    rounds: int = ROUNDS  # every variant is timed once per round, in turn (median over all runs)
    group_size: tuple[int, int] | str | None = None  # None: a checkpoint's own, else the default; or "auto"
    rate: float = 3.6
    width: float = 0.125
    frames: int = 16
    size: int = 56
    device: str | None = None  # IREE driver override (local-sync, local-task, vulkan); None: the target's

    def __post_init__(self) -> None:
        check_rounds(self.rounds)  # before minutes of compiling
        frames, size = min_input("c3d")
        if not (self.width > 0 and self.frames >= frames and self.size >= size):
            raise Rt3dError(f"the built-in C3D needs width > 0 and clips of at least {frames} frames x {size}x{size} "
                            f"(got width {self.width}, {self.frames} x {self.size}x{self.size})",
                            "for example --width 0.125 --size 56, or --width 1 --size 112 for full size")


def _target(cfg: BenchConfig) -> Target:
    target = get_target(cfg.target)
    return replace(target, driver=cfg.device) if cfg.device else target


def parse_input(text: str) -> np.ndarray:
    """An input as iree tools spell it: ``@file.npy`` or ``1x3x16x112x112xf32=0.5``."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:
            raise Rt3dError(f"cannot read input {path}: {exc}", "pass a .npy file written by numpy.save") from None
    m = re.fullmatch(r"((?:\d+x)*)([a-z]+\d+)(?:=(.*))?", text.strip())
    if not m or m.group(2) not in _NP_TYPES:
        raise Rt3dError(
            f"cannot read input {text!r}",
            "write inputs as @file.npy or SHAPExTYPE=VALUE, for example 1x3x16x112x112xf32=0.5",
        )
    shape = tuple(int(d) for d in m.group(1).split("x") if d)
    try:
        value = float(m.group(3)) if m.group(3) else 0.0
    except ValueError:
        raise Rt3dError(f"input {text!r}: {m.group(3)!r} is not a number",
                        "give one fill value, or a .npy file for real data") from None
    return np.full(shape, value, dtype=_NP_TYPES[m.group(2)])


def _row(model: str, variant: str, target: Target, runner: Runner, result, dense_ms: float | None,
         err: float | None, python_ms: float | None = None) -> dict:
    """One table row. ``speedup_vs_dense``: the dense model's time / this one's (> 1 = faster);
    ``python_call_time_ratio``: a Python call's median / iree-benchmark-module's (1 = no overhead)."""
    timing = "emulated: meaningless" if result.emulated else "measured"
    return {
        "model": model, "variant": variant, "target": target.name, "runner": runner.name,
        "device": result.device, "median_ms": result.median_ms,
        # CPU task workers; a GPU driver schedules its own work and has no such count
        "threads": result.threads if result.driver in CPU_DRIVERS else "n/a (GPU)",
        "speedup_vs_dense": (dense_ms / result.median_ms) if dense_ms else 1.0,
        "python_call_ms": "n/a" if python_ms is None else python_ms,
        "python_call_time_ratio": "n/a" if python_ms is None else python_ms / result.median_ms,
        "max_rel_error": "n/a" if err is None else err, "timing": timing,
        "times_ms": result.times_ms,
    }


def bench_builtin(cfg: BenchConfig, runner_options: dict | None = None, seed: int = 0) -> list[dict]:
    """Small C3D, dense and KGS, compiled for ``cfg.target``, checked and timed on the runner."""
    target = _target(cfg)
    runner = get_runner(cfg.runner or target.runner, **(runner_options or {}))
    device = runner.check(target.driver)  # fail before minutes of compiling if the runner cannot work
    torch.manual_seed(seed)
    dense = C3D(num_classes=10, width=cfg.width, frames=cfg.frames, size=cfg.size).eval()
    x = torch.randn(1, 3, cfg.frames, cfg.size, cfg.size)
    sparse = C3D(num_classes=10, width=cfg.width, frames=cfg.frames, size=cfg.size).eval()
    sparse.load_state_dict(dense.state_dict())
    gm, gn = resolve_group_size(cfg.group_size, target=target)
    layers = apply_kgs_magnitude(sparse, x, cfg.rate, (gm, gn))
    total = sum(count_macs(dense, x).values())
    kept = total - sum(lyr.dense_macs - lyr.kept_macs for lyr in layers)
    name = f"C3D w{cfg.width} 1x3x{cfg.frames}x{cfg.size}x{cfg.size}"
    if cfg.target == "vulkan-adreno" and any(d in device for d in NARROW_SUBGROUP_DEVICES):
        # IREE's Adreno FC kernels need 64-lane subgroups this device lacks (see targets.py):
        # time the conv trunk, which is all our kernels, and say so.
        logger.warning("%s has narrow subgroups: benchmarking the C3D conv trunk without its FC layers", device)
        dense, sparse = dense.features, sparse.features
        name += " conv trunk (no FC: device subgroups < 64)"
    variants = (("dense", dense), (f"KGS {gm}x{gn} {total / kept:.2f}x", sparse))
    return _bench_variants(name, variants, x, cfg, (gm, gn), target, runner)


def _bench_variants(name: str, variants: Sequence[tuple[str, torch.nn.Module] | tuple[str, torch.nn.Module, dict]],
                    x: torch.Tensor, cfg: BenchConfig, group_size: tuple[int, int], target: Target,
                    runner: Runner) -> list[dict]:
    """Compile each model for the target (a third tuple item: more ``api.compile`` options) and
    check it against PyTorch on the runner, then time them all in interleaved rounds
    (harness.time_interleaved): ratios come from one run."""
    timed: list[Variant] = []
    calls: dict[str, Variant] = {}  # variant -> its Python call, where one runs here on the CPU
    errors: list[float | None] = []
    steps = tqdm(total=len(variants) + cfg.rounds, desc=f"bench {cfg.target}", unit="step")
    with torch.no_grad():
        for variant, model, *more in variants:
            steps.set_postfix_str(f"compile {variant}")
            compiled = api.compile(model, (x,), target=target, group_size=group_size, runner=runner,
                                   **(more[0] if more else {}))
            # The adb runner only times; check such code with the qemu runner (same aarch64 code).
            err = None if runner.name == "adb" else check_against(model(x), compiled(x),
                                                                  name=f"{variant} on {target.name}")
            errors.append(err)
            timed.append(Variant.module(variant, compiled, (x,), threads=cfg.threads, repetitions=cfg.repetitions))
            if runner.name == "local" and target.driver in CPU_DRIVERS:
                calls[variant] = Variant.python_call(f"{variant}, Python call", compiled, (x,),
                                                     repetitions=cfg.repetitions)
            steps.update()
    steps.set_postfix_str(f"time every variant, in turn, {cfg.rounds} rounds")
    ms = medians(time_interleaved([v for t in timed for v in (t, calls.get(t.name)) if v is not None],
                                  cfg.rounds, on_round=steps.update))
    steps.close()
    rows: list[dict] = []
    dense_ms = None
    for variant, err in zip(timed, errors, strict=True):
        result = variant.result()
        dense_ms = dense_ms or result.median_ms
        call = calls.get(variant.name)
        rows.append(_row(name, variant.name, target, runner, result, dense_ms, err,
                         ms[call.name] if call else None))
    return rows


def bench_checkpoint(path: Path, cfg: BenchConfig, runner_options: dict | None = None, seed: int = 0) -> list[dict]:
    """An `rt3d prune` checkpoint: its dense starting point and the pruned model, both compiled
    with the KGS pass, checked against PyTorch and timed in one run (the speedup pruning bought)."""
    from .prune.checkpoint import load_checkpoint, model_from_checkpoint
    from .prune.slim import dead_channels

    target = _target(cfg)
    runner = get_runner(cfg.runner or target.runner, **(runner_options or {}))
    runner.check(target.driver)
    state = load_checkpoint(path)
    pruned, example = model_from_checkpoint(state)
    group_size = resolve_group_size(cfg.group_size, model=state, target=target)
    rep = state.get("report") or {}
    variants: list[tuple] = []
    if state.get("dense_state") is not None:
        dense, _ = model_from_checkpoint({**state, "state_dict": state["dense_state"]})
        variants.append(("dense (before pruning)", dense))
    label = f"{rep.get('scheme', 'pruned')} {rep.get('algorithm', '')} {rep.get('rate', 1.0):.2f}x FLOPs".strip()
    variants.append((label, pruned))
    if dead_channels(pruned):  # what dropping the channels nothing reads buys (prune/slim.py)
        variants.append((f"{label}, dead channels kept", pruned, {"drop_dead_channels": False}))
    torch.manual_seed(seed)
    x = torch.randn(example.shape)
    spec = state["model_spec"]
    name = f"{spec['name']} w{spec['width']} 1x3x{spec['frames']}x{spec['size']}x{spec['size']}"
    return _bench_variants(name, variants, x, cfg, group_size, target, runner)


def bench_file(path: Path, cfg: BenchConfig, inputs: Sequence[str] = (), function: str | None = None,
               runner_options: dict | None = None) -> list[dict]:
    """Time a .vmfb (inputs required), or compile a .pt2 / .mlir / .mlirbc for the target first."""
    target = _target(cfg)
    runner = get_runner(cfg.runner or target.runner, **(runner_options or {}))
    if not path.is_file():
        raise Rt3dError(f"{path} does not exist", "pass a .vmfb, .pt2, .mlir or .mlirbc file or a .pt checkpoint")
    if path.suffix in (".pt", ".pth"):
        return bench_checkpoint(path, cfg, runner_options)
    runner.check(target.driver)
    arrays = [parse_input(t) for t in inputs]
    err = None
    if path.suffix == ".vmfb":
        if not arrays:
            raise Rt3dError("a .vmfb needs its inputs",
                            "add --input SHAPExTYPE=VALUE or --input @file.npy per argument")
        # A bare vmfb carries no signature we read here; iree-benchmark-module checks the inputs.
        vmfb = path.read_bytes()
        variant = Variant.benchmarked("as given", lambda: runner.benchmark(
            vmfb, function or "forward", arrays, target.driver, cfg.threads, cfg.repetitions))
    else:
        program = load_program(path) if path.suffix == ".pt2" else None  # read once: inputs, compile, reference
        if arrays:
            _check_inputs(path, program, arrays)  # before minutes of compiling
        compiled = api.compile(program or path, target=target, group_size=cfg.group_size, runner=runner)
        if not arrays:
            rng = np.random.default_rng(0)
            arrays = [rng.standard_normal(s.shape).astype(s.dtype) for s in compiled.inputs]
        if program is not None and runner.name != "adb":
            with torch.no_grad():
                ref = program.module()(*[torch.from_numpy(a) for a in arrays])
            err = check_against(ref, compiled(*arrays), name=f"{path.name} on {target.name}")
        variant = Variant.module("as given", compiled, arrays, threads=cfg.threads, repetitions=cfg.repetitions)
    time_interleaved([variant], cfg.rounds)
    return [_row(path.name, variant.name, target, runner, variant.result(), None, err)]


def _check_inputs(path: Path, program: Any, arrays: list[np.ndarray]) -> None:
    """Refuse --input arrays that do not match the entry point of a .pt2 (``program``) / .mlir file."""
    from .importer import load_mlir
    from .runtime import entry_point

    if program is not None:
        names = set(program.graph_signature.user_inputs)
        vals = [n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder" and n.name in names]
        want = [(tuple(v.shape), np.dtype(str(v.dtype).removeprefix("torch."))) for v in vals]
    else:
        want = [(tuple(t.shape), np.dtype(t.dtype)) for t in entry_point(load_mlir(path))[1]]
    got = [(tuple(a.shape), a.dtype) for a in arrays]
    if got != want:
        names_of = {np.dtype(v): k for k, v in _NP_TYPES.items()}

        def spell(specs: list) -> str:
            return " ".join("x".join(map(str, s)) + "x" + names_of.get(d, d.name) for s, d in specs) or "none"
        raise Rt3dError(f"{path.name} takes inputs {spell(want)}, but --input gave {spell(got)}",
                        "give one --input per argument, of those shapes and types, or leave --input out "
                        "for random inputs")


def write_bench(rows: list[dict], out_dir: str | Path, name: str = "bench") -> tuple[str, list[Path]]:
    """Markdown table + JSON + CSV, each written atomically; returns the table and the paths."""
    import json

    out = Path(out_dir)
    table = format_table(rows, COLUMNS)
    if any(r["timing"].startswith("emulated") for r in rows):
        table += "\n\nTimings marked emulated come from qemu or a software GPU: they say nothing about a phone."
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    paths = [
        atomic_write(out / f"{name}.md", table + "\n"),
        atomic_write(out / f"{name}.json", json.dumps({"rows": rows}, indent=2)),
        atomic_write(out / f"{name}.csv", buf.getvalue()),
    ]
    return table, paths
