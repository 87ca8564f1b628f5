"""Import, KGS-rewrite and compile a C3D, reporting time per stage and peak memory.

    .venv/bin/python samples/c3d_compile_stats.py            # full size: 78M params, 16x112x112
    .venv/bin/python samples/c3d_compile_stats.py --width 0.25 --rate 3.6

Peak memory is the max resident set of this process and, separately, of iree-compile.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from rt3d_iree.compiler import apply_kgs, compile_mlir, kgs_options
from rt3d_iree.group_size import DEFAULT_GROUP_SIZE
from rt3d_iree.importer import import_torch
from rt3d_iree.models import C3D
from rt3d_iree.sparsity import apply_kgs_magnitude
from rt3d_iree.targets import get_target


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--rate", type=float, default=0.0, help="KGS magnitude masks at this FLOPs rate (0: dense)")
    args = p.parse_args(argv)
    model = C3D(width=args.width, size=args.size).eval()
    x = torch.randn(1, 3, 16, args.size, args.size)
    if args.rate:
        apply_kgs_magnitude(model, x, args.rate)
    target = get_target("host")
    stats: dict = {"width": args.width, "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    t0 = time.perf_counter()
    module = import_torch(model, (x,))
    t1 = time.perf_counter()
    report = apply_kgs(module, kgs_options(DEFAULT_GROUP_SIZE, target))
    t2 = time.perf_counter()
    vmfb = compile_mlir(module, target)
    t3 = time.perf_counter()
    stats.update(
        import_s=round(t1 - t0, 2), pass_s=round(t2 - t1, 2), compile_s=round(t3 - t2, 2),
        total_s=round(t3 - t0, 2), convs_rewritten=report.rewritten, vmfb_mb=round(len(vmfb) / 2**20, 1),
        peak_rss_python_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        peak_rss_iree_compile_gb=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
    )
    print(json.dumps(stats, indent=2))
    return stats


if __name__ == "__main__":
    main()
