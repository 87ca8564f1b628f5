"""The main job (`rt3d demo`) and the single-layer benchmark (`rt3d bench-layer`).

Both build a model, give it KGS structure, compile it dense and sparse with rt3d and with
stock IREE, check every compiled result against PyTorch, and time all engines in one run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import api
from .bench import format_table, torch_times, write_results
from .group_size import DEFAULT_GROUP_SIZE
from .harness import ROUNDS, Variant, check_against, medians, time_interleaved
from .models import C3D, count_macs
from .sparsity import apply_kgs_magnitude, kgs_prune_positions

logger = logging.getLogger(__name__)

# speedup_vs_X: X's median time / this engine's (> 1 = faster than X).
COLUMNS = ["engine", "median_ms", "speedup_vs_pytorch", "speedup_vs_rt3d_dense", "max_rel_error"]


def _run_engines(name, dense: nn.Module, sparse: nn.Module, x: torch.Tensor, reps: int, threads: int,
                 group_size: tuple[int, int], out_dir: Path, sparse_rate: float, rounds: int = ROUNDS) -> dict:
    steps = tqdm(total=4 + rounds, desc=name, unit="step")  # references, 3 compiles, rounds
    results = {}
    ref_dense = dense(x).detach()
    ref_sparse = sparse(x).detach()
    steps.update()
    variants = [Variant("PyTorch eager", lambda: torch_times(dense, (x,), reps, threads))]
    errors = {}
    for label, model, kgs in (("stock IREE", dense, False), ("rt3d dense", dense, True), ("rt3d KGS", sparse, True)):
        steps.set_postfix_str(f"compile {label}")
        compiled = api.compile(model, (x,), group_size=group_size, kgs=kgs, reproducer_dir=out_dir / "reproducers")
        ref = ref_sparse if label == "rt3d KGS" else ref_dense
        errors[label] = check_against(ref, compiled(x), name=label,
                                      hint="this is a compiler bug: please report it with the reproducer")
        variants.append(Variant.module(label, compiled, (x.numpy(),), threads=threads, repetitions=reps))
        steps.update()
    steps.set_postfix_str(f"time every engine, in turn, {rounds} rounds")
    medians_ms = medians(time_interleaved(variants, rounds, on_round=steps.update))
    rows = [{"engine": "PyTorch eager", "median_ms": medians_ms["PyTorch eager"], "max_rel_error": 0.0}]
    rows += [{"engine": label, "median_ms": medians_ms[label], "max_rel_error": err} for label, err in errors.items()]
    steps.close()
    base = {r["engine"]: r["median_ms"] for r in rows}
    for r in rows:
        r["speedup_vs_pytorch"] = base["PyTorch eager"] / r["median_ms"]
        r["speedup_vs_rt3d_dense"] = base["rt3d dense"] / r["median_ms"]
    results["rows"] = rows
    results["ratios"] = {
        "rt3d_dense_over_pytorch_time": base["rt3d dense"] / base["PyTorch eager"],
        "stock_over_rt3d_dense_time": base["stock IREE"] / base["rt3d dense"],
        "rt3d_dense_over_kgs_time": base["rt3d dense"] / base["rt3d KGS"],
        "kgs_flops_rate": sparse_rate,
    }
    return results


def bench_layer(out_dir: str | Path = "rt3d-out", reps: int = 5, threads: int = 2, seed: int = 0) -> dict:
    """The issue's reference layer: 1x64x8x28x28 -> 128 filters, 3x3x3, padding 1; KGS 8x4 keeping 9/27."""
    torch.manual_seed(seed)
    gm, gn = DEFAULT_GROUP_SIZE
    out = Path(out_dir)
    dense = nn.Conv3d(64, 128, 3, padding=1).eval()
    sparse = nn.Conv3d(64, 128, 3, padding=1).eval()
    sparse.load_state_dict(dense.state_dict())
    kgs_prune_positions(sparse, keep=9, group_size=DEFAULT_GROUP_SIZE, seed=seed)
    x = torch.randn(1, 64, 8, 28, 28)
    res = _run_engines("layer", dense, sparse, x, reps, threads, DEFAULT_GROUP_SIZE, out, 3.0)
    res["layer"] = f"1x64x8x28x28 -> 128, 3x3x3, pad 1; KGS gM={gm} gN={gn} keeps 9 of 27 positions"
    table = format_table(res["rows"], COLUMNS)
    r = res["ratios"]
    table += (
        f"\n\nrt3d dense takes {r['rt3d_dense_over_pytorch_time']:.2f}x PyTorch's time"
        f"\nrt3d dense is {r['stock_over_rt3d_dense_time']:.2f}x faster than stock IREE"
        f"\nrt3d KGS is {r['rt3d_dense_over_kgs_time']:.2f}x faster than rt3d dense"
    )
    write_results(out, "bench_layer", res, table)
    return {**res, "table": table}


def demo(out_dir: str | Path = "rt3d-out", width: float = 0.25, frames: int = 16, size: int = 112,
         rate: float = 3.6, reps: int = 5, threads: int = 2, seed: int = 0) -> dict:
    """C3D-style model, magnitude KGS masks at a whole-model FLOPs rate, all engines compared."""
    torch.manual_seed(seed)
    gm, gn = DEFAULT_GROUP_SIZE
    out = Path(out_dir)
    dense = C3D(num_classes=101, width=width, frames=frames, size=size).eval()
    x = torch.randn(1, 3, frames, size, size)
    sparse = C3D(num_classes=101, width=width, frames=frames, size=size).eval()
    sparse.load_state_dict(dense.state_dict())
    layers = apply_kgs_magnitude(sparse, x, rate, DEFAULT_GROUP_SIZE)
    macs = count_macs(dense, x)
    total = sum(macs.values())
    kept = total - sum(layer.dense_macs - layer.kept_macs for layer in layers)
    res = _run_engines("demo", dense, sparse, x, reps, threads, DEFAULT_GROUP_SIZE, out, total / kept)
    res["model"] = f"C3D width {width}, input 1x3x{frames}x{size}x{size}, {total / 1e9:.2f} GMAC dense"
    res["layers"] = [{"name": lyr.name, "dense_macs": lyr.dense_macs, "kept_macs": lyr.kept_macs,
                      "rate": lyr.rate} for lyr in layers]
    table = format_table(res["rows"], COLUMNS)
    table = f"{res['model']}; KGS {gm}x{gn} magnitude masks at {total / kept:.2f}x whole-model FLOPs\n\n" + table
    write_results(out, "demo", res, table)
    _plot(res["rows"], out / "demo.png", res["model"])
    return {**res, "table": table}


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    times = [r["median_ms"] for r in rows]
    ax.barh([r["engine"] for r in rows], times, color="#4477aa")
    if max(times) > 10 * min(times):  # stock IREE next to rt3d spans orders of magnitude
        ax.set_xscale("log")
    ax.set_xlabel("median latency (ms, log scale where times span 10x), lower is better")
    ax.set_title(title, fontsize=8)
    ax.invert_yaxis()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
