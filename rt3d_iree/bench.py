"""Benchmarks: PyTorch eager, stock IREE, rt3d dense and rt3d KGS, timed in one run.

Times are medians; the machines are shared and noisy, so what we report are ratios taken
within one run. IREE modules are timed by iree-benchmark-module (JSON output), PyTorch by
wall clock around ``forward`` after warm-up, both with the same thread count.

Every engine runs under the same glibc malloc settings (``ALLOCATOR_ENV``). Why: IREE 3.13's
CPU device takes each call's transient memory from malloc, and glibc serves blocks over
32 MiB with a fresh mmap that it unmaps on free, so every call page-faults its activations
in anew (full-size C3D: about 26,000 faults and a quarter of the CPU time per call; PyTorch
eager pays the same way, less so). Keeping freed memory in the heap, backed by transparent
huge pages, removes that: measured on C3D, IREE 96 -> 75 ms, PyTorch 264 -> 239 ms,
ONNX Runtime (its own arena) 191 -> 186 ms. The timing commands re-execute themselves
under these settings (rt3d_iree/cli.py); iree-benchmark-module gets them in its environment.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .environment import ALLOCATOR_ENV, allocator_env, allocator_tuned, runtime_tool  # noqa: F401  (re-exported)
from .harness import TOLERANCE, Variant, max_rel_error, medians, time_interleaved, wall_times  # noqa: F401

logger = logging.getLogger(__name__)


def time_torch(model: nn.Module, inputs: Sequence[torch.Tensor], reps: int = 5, threads: int = 2) -> float:
    """Median wall-clock ms of ``model(*inputs)`` under torch.no_grad with ``threads`` threads."""
    return statistics.median(torch_times(model, inputs, reps, threads))


def torch_times(model: nn.Module, inputs: Sequence[torch.Tensor], reps: int = 5, threads: int = 2) -> list[float]:
    """Wall-clock ms of each of ``reps`` calls of ``model(*inputs)`` (after warm-up)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():  # 3 warm-up calls: oneDNN picks and caches kernels over the first calls
            return wall_times(lambda: model(*inputs), reps, warmup=3)
    finally:
        torch.set_num_threads(old)


def interleaved_medians(timers: dict[str, Callable[[], list[float]]], rounds: int,
                        on_round: Callable[[], None] | None = None) -> dict[str, float]:
    """Median ms per engine over ``rounds`` rounds that each time every engine once, in turn.

    Why: the machines are shared, and a slow spell that hits one engine's only timing run
    skews every ratio taken against it; taking turns spreads such spells over all engines.
    Each timer returns the times of its repetitions; the median is over all of them.
    (The harness's ``time_interleaved`` with plain timers; kept for callers of this name.)
    """
    return medians(time_interleaved([Variant(name, timer) for name, timer in timers.items()], rounds, on_round))


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of ``rows`` (dicts) with the given columns."""
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(out_dir: str | Path, name: str, payload: dict, table: str) -> tuple[Path, Path]:
    """JSON beside a markdown table, both written atomically."""
    from .files import atomic_write

    out = Path(out_dir)
    js = atomic_write(out / f"{name}.json", json.dumps(payload, indent=2, default=_json_default))
    md = atomic_write(out / f"{name}.md", table + "\n")
    return js, md


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(type(obj).__name__)
