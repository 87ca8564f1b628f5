"""The `rt3d` command line: compile, opt, demo, bench-layer, bench, tune, fetch-tools.

Errors a user can act on print as one message with what to do, never a traceback.
Flags `rt3d compile` does not know are passed to iree-compile unchanged.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import Rt3dError
from .files import atomic_write
from .runners import RUNNERS
from .targets import TARGETS

logger = logging.getLogger("rt3d_iree")


def _group_size(text: str) -> tuple[int, int] | str:
    if text == "auto":
        return text
    try:
        gm, gn = text.lower().split("x")
        return int(gm), int(gn)
    except ValueError:
        raise argparse.ArgumentTypeError(f"group size must look like 8x4 (filters x channels), got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rt3d", description="KGS-pruned 3D CNNs compiled with MLIR and IREE")
    p.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    sub = p.add_subparsers(dest="cmd", required=True)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("input", help="model: .pt2 (torch.export.save), .mlir or .mlirbc")
        sp.add_argument("-o", "--output", required=True, help="output file")
        sp.add_argument("--target", default="host", help=f"one of: {', '.join(sorted(TARGETS))}")
        sp.add_argument("--group-size", type=_group_size, default=(8, 4),
                        help="KGS gM x gN (default 8x4; auto = what `rt3d tune` recorded for the target)")

    c = sub.add_parser("compile", help="compile a model to a .vmfb (unknown flags go to iree-compile)")
    model_args(c)
    c.add_argument("--no-kgs", action="store_true", help="skip the KGS pass (stock IREE lowering)")
    c.add_argument("--reproducer-dir", default="rt3d-reproducers", help="where failed compiles leave a reproducer")

    o = sub.add_parser("opt", help="write the KGS-rewritten MLIR (stock iree-compile compiles it)")
    model_args(o)

    d = sub.add_parser("demo", help="the main job: C3D-style model, KGS, compile, check, benchmark")
    d.add_argument("--out", default="rt3d-out", help="folder for demo.json, demo.md, demo.png")
    d.add_argument("--width", type=float, default=0.25, help="C3D width multiplier (1.0 = full size)")
    d.add_argument("--frames", type=int, default=16)
    d.add_argument("--size", type=int, default=112)
    d.add_argument("--rate", type=float, default=3.6, help="whole-model FLOPs reduction of the KGS model")
    d.add_argument("--reps", type=int, default=5, help="timed runs per engine (median reported)")
    d.add_argument("--threads", type=int, default=2)

    b = sub.add_parser("bench-layer", help="benchmark the reference conv3d layer on every engine")
    b.add_argument("--out", default="rt3d-out")
    b.add_argument("--reps", type=int, default=5)
    b.add_argument("--threads", type=int, default=2)
    sub.add_parser("targets", help="list the targets and the iree-compile flags each implies")

    f = sub.add_parser("fetch-tools", help="download the aarch64 IREE tools (run aarch64 modules under qemu)")
    f.add_argument("--wheel", help="use this iree-base-runtime aarch64 wheel instead of downloading it")

    def runner_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--target", default="host", help=f"one of: {', '.join(sorted(TARGETS))}")
        sp.add_argument("--runner", choices=RUNNERS, help="local, qemu or adb (default: the target's own)")
        sp.add_argument("--device", help="IREE driver: local-task, local-sync or vulkan (default: the target's)")
        sp.add_argument("--threads", type=int, default=2, help="CPU threads (iree task topology groups)")
        sp.add_argument("--repetitions", type=int, default=5, help="timed repetitions (median reported)")
        sp.add_argument("--out", default="rt3d-out", help="folder for the JSON, CSV and markdown results")
        sp.add_argument("--adb-tool", help="adb runner: the phone's aarch64 iree-benchmark-module binary")
        sp.add_argument("--adb-serial", help="adb runner: device serial (default: the only device)")
        sp.add_argument("--cpu-mask", help="adb runner: taskset CPU mask, for example f0 for four big cores")

    be = sub.add_parser("bench", help="time modules with iree-benchmark-module on a runner (local, qemu, adb)")
    be.add_argument("module", nargs="?", help=".vmfb, .pt2, .mlir or .mlirbc (default: built-in small C3D, "
                    "dense and KGS, checked against PyTorch)")
    runner_args(be)
    be.add_argument("--input", action="append", default=[], help="@file.npy or SHAPExTYPE=VALUE (repeat per input)")
    be.add_argument("--function", default="forward")
    be.add_argument("--group-size", type=_group_size, default=(8, 4))
    be.add_argument("--rate", type=float, default=3.6, help="built-in model: whole-model FLOPs rate of the KGS model")

    t = sub.add_parser("tune", help="choose the KGS group size for a target by timing synthesized layers")
    runner_args(t)
    t.add_argument("--set", type=_group_size, help="record this group size for the target without timing")
    t.add_argument("--candidates", default="4x4,8x4,16x4,8x8,4x8", help="group sizes to time")
    t.add_argument("--quick", action="store_true", help="one small layer instead of three (for CI)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.cmd != "compile":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return _run(args, unknown)
    except Rt3dError as exc:
        print(f"rt3d: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rt3d: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, unknown: list[str]) -> int:
    from . import api

    if args.cmd == "compile":
        compiled = api.compile(
            Path(args.input), target=args.target, group_size=args.group_size, kgs=not args.no_kgs,
            extra_flags=unknown, reproducer_dir=args.reproducer_dir,
        )
        compiled.save(args.output)
        _summary(compiled.report)
        print(f"wrote {args.output} ({len(compiled.vmfb)} bytes)")
    elif args.cmd == "opt":
        module, report = api.optimize(Path(args.input), target=args.target, group_size=args.group_size)
        if Path(args.output).suffix == ".mlirbc":
            from .compiler import bytecode

            atomic_write(args.output, bytecode(module))
        else:
            atomic_write(args.output, str(module))
        _summary(report)
        print(f"wrote {args.output}")
    elif args.cmd == "demo":
        from .demo import demo

        res = demo(args.out, args.width, args.frames, args.size, args.rate, args.reps, args.threads)
        print(res["table"])
        print(f"\nwrote {args.out}/demo.json, demo.md, demo.png")
    elif args.cmd == "bench-layer":
        from .demo import bench_layer

        res = bench_layer(args.out, args.reps, args.threads)
        print(res["table"])
        print(f"\nwrote {args.out}/bench_layer.json, bench_layer.md")
    elif args.cmd == "targets":
        for t in TARGETS.values():
            print(f"{t.name}: {t.description}\n  runs with: {t.runner} runner, IREE driver {t.driver}\n"
                  f"  iree-compile {' '.join(t.flags)}")
    elif args.cmd == "fetch-tools":
        from .tools import fetch_aarch64_tools

        where = fetch_aarch64_tools(wheel=Path(args.wheel) if args.wheel else None)
        print(f"aarch64 IREE tools in {where}")
    elif args.cmd == "bench":
        from .driver import BenchConfig, bench_builtin, bench_file, write_bench

        cfg = BenchConfig(target=args.target, runner=args.runner, threads=args.threads,
                          repetitions=args.repetitions, group_size=args.group_size, rate=args.rate,
                          device=args.device)
        opts = _adb_options(args)
        if args.module:
            rows = bench_file(Path(args.module), cfg, args.input, args.function, opts)
        else:
            rows = bench_builtin(cfg, opts)
        table, paths = write_bench(rows, args.out)
        print(table)
        print("\nwrote " + ", ".join(str(p) for p in paths))
    elif args.cmd == "tune":
        from .tune import LAYERS, QUICK_LAYERS, record, tune

        if args.set:
            where = record(args.target, args.set, "set by the user")
            print(f"recorded group size {args.set[0]}x{args.set[1]} for {args.target} in {where}")
            return 0
        cands = [_group_size(c) for c in args.candidates.split(",")]
        res = tune(args.target, args.runner, cands, layers=QUICK_LAYERS if args.quick else LAYERS,
                   threads=args.threads, repetitions=args.repetitions, runner_options=_adb_options(args))
        from .bench import format_table, write_results

        rows = [{"group_size": f"{t['group_size'][0]}x{t['group_size'][1]}", "total_ms": t["total_ms"],
                 "per_layer_ms": " ".join(f"{v:.3g}" for v in t["per_layer_ms"])} for t in res["timings"]]
        table = format_table(rows, ["group_size", "total_ms", "per_layer_ms"])
        table += f"\n\nbest for {args.target}: {res['best'][0]}x{res['best'][1]} (recorded in {res['file']})"
        write_results(args.out, "tune", res, table)
        print(table)
    return 0


def _adb_options(args: argparse.Namespace) -> dict:
    if getattr(args, "runner", None) != "adb":
        return {}
    return {"benchmark_tool": args.adb_tool, "serial": args.adb_serial, "cpu_mask": args.cpu_mask}


def _summary(report) -> None:
    if report is None:
        return
    done = report.rewritten
    if not report.convs:
        print("rt3d-kgs-conv3d: the model has no conv3d, so there is nothing to speed up "
              "(compiled with IREE's stock lowering)")
        return
    print(f"rt3d-kgs-conv3d: {done} of {len(report.convs)} conv3d rewritten")
    for conv in report.skipped:
        print(f"  left to IREE: {conv.location}: {conv.reason}")


if __name__ == "__main__":
    sys.exit(main())
