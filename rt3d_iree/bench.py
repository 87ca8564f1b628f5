"""Benchmarks: PyTorch eager, stock IREE, rt3d dense and rt3d KGS, timed in one run.

Times are medians; the machines are shared and noisy, so what we report are ratios taken
within one run. IREE modules are timed by iree-benchmark-module (JSON output), PyTorch by
wall clock around ``forward`` after warm-up, both with the same thread count.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import Rt3dError
from .runtime import CompiledModule

logger = logging.getLogger(__name__)


def runtime_tool(name: str) -> str:
    """Path of a tool shipped in the iree-base-runtime wheel (iree-benchmark-module, ...)."""
    import iree._runtime_libs as libs

    path = Path(libs.__file__).parent / name
    if not path.is_file():
        raise Rt3dError(f"{name} is missing from the iree-base-runtime wheel", "reinstall iree-base-runtime==3.13.0")
    return str(path)


def time_torch(model: nn.Module, inputs: Sequence[torch.Tensor], reps: int = 5, threads: int = 2) -> float:
    """Median wall-clock ms of ``model(*inputs)`` under torch.no_grad with ``threads`` threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for _ in range(3):  # oneDNN picks and caches kernels over the first calls
                model(*inputs)
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                model(*inputs)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(old)
    return statistics.median(times)


def time_vmfb(compiled: CompiledModule, inputs: Sequence[np.ndarray], reps: int = 5, threads: int = 2) -> float:
    """Median ms of the module's entry function, measured by iree-benchmark-module on its runner."""
    return compiled.benchmark(*inputs, threads=threads, repetitions=reps).median_ms


def max_rel_error(out: np.ndarray | torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|: the project's numerics criterion (<= 1e-4 passes)."""
    ref_np = ref.detach().numpy()
    out_np = out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    return float(np.abs(out_np - ref_np).max() / max(np.abs(ref_np).max(), 1e-30))


TOLERANCE = 1e-4


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
