"""The `rt3d` command line: compile, opt, demo, bench-layer, bench, tune, fetch-tools.

Errors a user can act on print as one message with what to do, never a traceback.
Flags `rt3d compile` does not know are passed to iree-compile unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import Rt3dError
from .files import atomic_write
from .group_size import DEFAULT_GROUP_SIZE, DEFAULT_TEXT
from .harness import ROUNDS
from .runners import RUNNERS
from .targets import KERNELS, TARGETS
from .tuning_store import CANDIDATES_TEXT

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
        sp.add_argument("input", help="model: .pt2 (torch.export.save), an rt3d prune checkpoint (.pt), "
                        ".mlir or .mlirbc")
        sp.add_argument("-o", "--output", required=True, help="output file")
        sp.add_argument("--target", default="host", help=f"one of: {', '.join(sorted(TARGETS))}")
        sp.add_argument("--group-size", type=_group_size, default=None,
                        help=f"KGS gM x gN (default: a checkpoint's own, else {DEFAULT_TEXT}; auto = what `rt3d tune` "
                        "recorded for the target)")
        sp.add_argument("--kernel", choices=KERNELS, default="auto",
                        help="conv kernels: auto (hand-written microkernel where the target has one, else "
                        "code generation), microkernel (required) or codegen")

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
        sp.add_argument("--repetitions", type=int, default=5, help="timed repetitions per round (median reported)")
        sp.add_argument("--rounds", type=int, default=ROUNDS,
                        help="timing rounds: every variant is timed --repetitions times per round, in turn")
        sp.add_argument("--out", default="rt3d-out", help="folder for the JSON, CSV and markdown results")
        sp.add_argument("--adb-tool", help="adb runner: the phone's aarch64 iree-benchmark-module binary")
        sp.add_argument("--adb-serial", help="adb runner: device serial (default: the only device)")
        sp.add_argument("--cpu-mask", help="adb runner: taskset CPU mask, for example f0 for four big cores")

    be = sub.add_parser("bench", help="time modules with iree-benchmark-module on a runner (local, qemu, adb)")
    be.add_argument("module", nargs="?", help=".vmfb, .pt2, .mlir, .mlirbc or an rt3d prune checkpoint (.pt: "
                    "its dense and pruned models, both checked against PyTorch) (default: built-in small C3D, "
                    "dense and KGS, checked against PyTorch)")
    runner_args(be)
    be.add_argument("--input", action="append", default=[], help="@file.npy or SHAPExTYPE=VALUE (repeat per input)")
    be.add_argument("--function", default="forward")
    be.add_argument("--group-size", type=_group_size, default=None,
                    help=f"KGS gM x gN the pass exploits (default: a checkpoint's own, else {DEFAULT_TEXT}; "
                    "auto = what `rt3d tune` recorded)")
    be.add_argument("--rate", type=float, default=3.6, help="built-in model: whole-model FLOPs rate of the KGS model")
    be.add_argument("--width", type=float, default=0.125, help="built-in model: C3D width (1.0 = full size)")
    be.add_argument("--size", type=int, default=56, help="built-in model: frame height = width (112 = full size)")

    pr = sub.add_parser("prune", help="prune a 3D CNN to a whole-model FLOPs target (filter, vanilla or KGS)")
    pr.add_argument("-o", "--output", required=True, help="final checkpoint (.pt); rt3d compile reads it")
    pr.add_argument("--model", default="c3d", help="c3d, r2plus1d or s3d")
    pr.add_argument("--width", type=float, default=0.125, help="channel width multiplier (1.0 = published size)")
    pr.add_argument("--frames", type=int, default=16)
    pr.add_argument("--size", type=int, default=32, help="frame height = width")
    pr.add_argument("--scheme", default="kgs", help="filter, vanilla or kgs")
    pr.add_argument("--group-size", type=_group_size, default=DEFAULT_GROUP_SIZE,
                    help=f"gM filters x gN channels (default {DEFAULT_TEXT})")
    pr.add_argument("--algorithm", default="reweighted", help="heuristic, fixed or reweighted")
    pr.add_argument("--rate", type=float, default=2.6, help="whole-model FLOPs reduction target, e.g. 2.6")
    pr.add_argument("--data", default="synthetic", help="synthetic (built in), ucf101:FOLDER or hmdb51:FOLDER")
    pr.add_argument("--split", type=int, default=1, help="UCF101 / HMDB51 split (1-3)")
    pr.add_argument("--epochs", type=int, help="epochs for each of regularization and retraining")
    pr.add_argument("--reg-epochs", type=int, default=4)
    pr.add_argument("--retrain-epochs", type=int, default=4)
    pr.add_argument("--dense-epochs", type=int, default=8, help="dense training first (without --from-dense)")
    pr.add_argument("--from-dense", help="start from this dense checkpoint instead of training one")
    pr.add_argument("--rounds", type=int, default=3, help="reweighting rounds / heuristic pruning steps")
    pr.add_argument("--lam", type=float, help="regularization strength (default: the algorithm's)")
    pr.add_argument("--distill", type=float, default=0.0, help="knowledge distillation weight in retraining (0-1)")
    pr.add_argument("--train-clips", type=int, default=2000, help="synthetic data: training clips")
    pr.add_argument("--val-clips", type=int, default=500, help="synthetic data: validation clips")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--workdir", help="per-epoch checkpoints (default: OUTPUT.work)")
    pr.add_argument("--resume", action="store_true", help="continue from the work folder's last checkpoint")
    pr.add_argument("--quiet", action="store_true", help="no progress bars")

    ptab = sub.add_parser("prune-table", help="the paper's Table 1 on synthetic data (width-reduced models), "
                          "mean +- sd over seeds and McNemar tests of the paper's orderings")
    ptab.add_argument("--out", default="rt3d-out")
    ptab.add_argument("--models", help="comma-separated (default c3d,r2plus1d; --quick: c3d)")
    ptab.add_argument("--seeds", help="comma-separated seeds, each its own dense model and data (default 0,1; "
                      "--quick: 0)")
    ptab.add_argument("--full-grid", action="store_true",
                      help="all 4 (scheme, rate) rows x 3 algorithms instead of the paper's 6 cells per model")
    ptab.add_argument("--quick", action="store_true", help="tiny data and epochs (minutes; what CI runs)")
    ptab.add_argument("--epochs", type=int, help="epochs for each of regularization and retraining")
    ptab.add_argument("--reg-epochs", type=int)
    ptab.add_argument("--retrain-epochs", type=int)
    ptab.add_argument("--dense-epochs", type=int)
    ptab.add_argument("--rounds", type=int, help="reweighting rounds / heuristic pruning steps")
    ptab.add_argument("--train-clips", type=int)
    ptab.add_argument("--val-clips", type=int)
    ptab.add_argument("--width", type=float, help="channel width multiplier (default 0.125)")
    ptab.add_argument("--size", type=int, help="frame height = width (default 32; --quick: 16)")
    ptab.add_argument("--jobs", type=int, default=1,
                      help="train this many (model, seed) chains at once, in processes sharing the cores (default 1)")
    ptab.add_argument("--quiet", action="store_true", help="no progress bars")

    cal = sub.add_parser("calibrate", help="can the built-in benchmark tell pruning methods apart? parameter-free "
                         "estimators and dense C3D at the table's width and half of it")
    cal.add_argument("--out", default="rt3d-out")
    cal.add_argument("--seeds", help="comma-separated seeds (default 0,1)")
    cal.add_argument("--quick", action="store_true", help="tiny data and epochs (what CI runs)")
    cal.add_argument("--dense-epochs", type=int)
    cal.add_argument("--train-clips", type=int)
    cal.add_argument("--val-clips", type=int)
    cal.add_argument("--width", type=float, help="the table's width (default 0.125); half of it is compared")
    cal.add_argument("--size", type=int, help="frame height = width (default 32; --quick: 16)")
    cal.add_argument("--quiet", action="store_true", help="no progress bars")

    rep = sub.add_parser("report", help="whole models (C3D, R(2+1)D, S3D) on PyTorch, ONNX Runtime, stock IREE "
                         "and rt3d dense / KGS: the paper's Table 2 on this machine")
    rep.add_argument("--out", default="rt3d-out/report", help="folder for report.md/.json/.csv and the PNG")
    rep.add_argument("--models", default="c3d,r2plus1d,s3d")
    rep.add_argument("--reps", type=int, default=5, help="timed runs per engine (median; at least 5)")
    rep.add_argument("--rounds", type=int, default=ROUNDS,
                     help="timing rounds: every engine is timed --reps times per round, in turn")
    rep.add_argument("--threads", type=int, default=2)
    rep.add_argument("--frames", type=int, default=16)
    rep.add_argument("--size", type=int, default=112)
    rep.add_argument("--width", type=float, default=1.0, help="channel width (1.0 = the published models)")
    rep.add_argument("--rates", default="1,2,3,4,6", help="FLOPs rates of the latency plot (C3D)")
    rep.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out (it is an optional extra)")
    rep.add_argument("--no-stock", action="store_true", help="leave stock IREE out (about 20 s per C3D run)")
    rep.add_argument("--quick", action="store_true", help="width 0.125 at 16x32x32 (minutes; what CI runs)")

    t = sub.add_parser("tune", help="choose the KGS group size for a target by timing synthesized layers")
    runner_args(t)
    t.add_argument("--set", type=_group_size, help="record this group size for the target without timing")
    t.add_argument("--candidates", default=CANDIDATES_TEXT, help="group sizes to time")
    t.add_argument("--quick", action="store_true", help="one small layer instead of three (for CI)")
    return p


# Commands that time engines: they run under the benchmark malloc settings (environment.ALLOCATOR_ENV).
TIMING_COMMANDS = frozenset({"demo", "bench-layer", "bench", "report", "tune"})


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.cmd != "compile":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if argv is None and args.cmd in TIMING_COMMANDS:
        _reexec_with_allocator_env()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return _run(args, unknown)
    except Rt3dError as exc:
        print(f"rt3d: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rt3d: interrupted", file=sys.stderr)
        return 130


def _reexec_with_allocator_env() -> None:
    """Run this command again under the benchmark malloc settings, so that PyTorch and ONNX
    Runtime (timed in this process) get the same allocator as the IREE tools. glibc reads
    them only at start-up, hence the re-execution (once: the new process has them)."""
    from .environment import allocator_env, allocator_tuned

    if allocator_tuned() or os.environ.get("RT3D_NO_REEXEC"):
        return
    env = allocator_env()
    env["RT3D_NO_REEXEC"] = "1"  # never loop, whatever glibc makes of the settings
    os.execve(sys.executable, [sys.executable, "-m", "rt3d_iree.cli", *sys.argv[1:]], env)


def _run(args: argparse.Namespace, unknown: list[str]) -> int:
    from . import api

    if args.cmd == "compile":
        compiled = api.compile(
            Path(args.input), target=args.target, group_size=args.group_size, kgs=not args.no_kgs,
            kernel=args.kernel, extra_flags=unknown, reproducer_dir=args.reproducer_dir,
        )
        compiled.save(args.output)
        _summary(compiled.report)
        print(f"wrote {args.output} ({len(compiled.vmfb)} bytes)")
    elif args.cmd == "opt":
        module, report = api.optimize(Path(args.input), target=args.target, group_size=args.group_size,
                                      kernel=args.kernel)
        if Path(args.output).suffix == ".mlirbc":
            from .compiler import bytecode

            atomic_write(args.output, bytecode(module))
        else:
            atomic_write(args.output, str(module))
        _summary(report)
        print(f"wrote {args.output}")
    elif args.cmd == "report":
        from .report import ReportConfig, report

        try:
            rates = tuple(float(v) for v in args.rates.split(","))
        except ValueError:
            raise Rt3dError(f"bad --rates {args.rates!r}",
                            "give FLOPs rates separated by commas, e.g. 1,2,3,4,6") from None
        settings = dict(models=tuple(m.strip() for m in args.models.split(",")), reps=args.reps, rounds=args.rounds,
                        threads=args.threads, frames=args.frames, size=args.size, width=args.width,
                        sweep_rates=rates, onnx=not args.no_onnx, stock=not args.no_stock)
        if args.quick:
            settings.update(width=0.125, size=32)
        results, paths = report(ReportConfig(**settings), args.out)
        print((paths[0]).read_text())
        print("wrote " + ", ".join(str(p) for p in paths))
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
                          repetitions=args.repetitions, rounds=args.rounds, group_size=args.group_size,
                          rate=args.rate, width=args.width, size=args.size, device=args.device)
        opts = _adb_options(args)
        if args.module:
            rows = bench_file(Path(args.module), cfg, args.input, args.function, opts)
        else:
            rows = bench_builtin(cfg, opts)
        table, paths = write_bench(rows, args.out)
        print(table)
        print("\nwrote " + ", ".join(str(p) for p in paths))
    elif args.cmd == "prune":
        _prune(args)
    elif args.cmd == "prune-table":
        from .prune.table import prune_table

        res = prune_table(args.out, _table_settings(args), progress=not args.quiet, jobs=args.jobs)
        print(res["table"] + (f"\n\n{res['layer_table']}" if res["layer_table"] else ""))
        print(f"\nwrote {args.out}/prune_table.json, prune_table.csv, prune_table.md, prune_table.png")
    elif args.cmd == "calibrate":
        from .prune.calibrate import calibrate

        res = calibrate(args.out, _table_settings(args), progress=not args.quiet)
        print(res["table"])
        print(f"\nwrote {args.out}/calibration.json, calibration.md")
    elif args.cmd == "tune":
        from .tune import LAYERS, QUICK_LAYERS, record, tune, tune_table

        if args.set:
            where = record(args.target, args.set, "set by the user")
            print(f"recorded group size {args.set[0]}x{args.set[1]} for {args.target} in {where}")
            return 0
        cands = [_group_size(c) for c in args.candidates.split(",")]
        res = tune(args.target, args.runner, cands, layers=QUICK_LAYERS if args.quick else LAYERS,
                   threads=args.threads, repetitions=args.repetitions, runner_options=_adb_options(args),
                   rounds=args.rounds)
        from .bench import write_results

        table = tune_table(res)
        write_results(args.out, "tune", res, table)
        print(table)
    return 0


def _table_settings(args: argparse.Namespace):
    """TableSettings from `prune-table` / `calibrate` arguments (validated before any training)."""
    from dataclasses import replace

    from .prune.table import TableSettings

    settings = TableSettings.quick() if args.quick else TableSettings()
    over: dict = {k: getattr(args, k, None) for k in ("reg_epochs", "retrain_epochs", "dense_epochs", "rounds",
                                                       "train_clips", "val_clips", "width", "size")}
    over = {k: v for k, v in over.items() if v is not None}
    if getattr(args, "epochs", None) is not None:
        over.setdefault("reg_epochs", args.epochs)
        over.setdefault("retrain_epochs", args.epochs)
    if getattr(args, "models", None) is not None:
        over["models"] = tuple(m.strip().lower() for m in args.models.split(",") if m.strip())
    if args.seeds is not None:
        try:
            over["seeds"] = tuple(int(v) for v in args.seeds.split(",") if v.strip())
        except ValueError:
            raise Rt3dError(f"bad --seeds {args.seeds!r}", "give integers separated by commas, e.g. 0,1") from None
    return replace(settings, full_grid=getattr(args, "full_grid", False), **over)


def _prune(args: argparse.Namespace) -> None:
    import json

    from .bench import format_table
    from .prune import PruneConfig, prune

    if args.group_size == "auto":
        raise Rt3dError("--group-size auto is for compiling",
                        f"give the pruning group size, e.g. --group-size {DEFAULT_TEXT}")
    reg, retrain = (args.epochs, args.epochs) if args.epochs is not None else (args.reg_epochs, args.retrain_epochs)
    cfg = PruneConfig(
        model=args.model, width=args.width, frames=args.frames, size=args.size, scheme=args.scheme,
        group_size=args.group_size, algorithm=args.algorithm, rate=args.rate, data=args.data, split=args.split,
        train_clips=args.train_clips, val_clips=args.val_clips, dense_epochs=args.dense_epochs,
        reg_epochs=reg, retrain_epochs=retrain, rounds=args.rounds, lam=args.lam, distill=args.distill,
        batch_size=args.batch_size, seed=args.seed, from_dense=args.from_dense,
    )
    res = prune(cfg, args.output, args.workdir, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return
    rep = res.report
    rows = [{"layer": r["layer"], "weight": r["shape"], "kept units": f"{r['kept_units']}/{r['units']}",
             "MMAC": f"{r['macs'] / 1e6:.3g}", "kept MMAC": f"{r['kept_macs'] / 1e6:.3g}", "rate": f"{r['rate']:.2f}x"}
            for r in rep["layers"]]
    table = format_table(rows, list(rows[0]))
    dense = "-" if rep["dense_accuracy"] is None else f"{100 * rep['dense_accuracy']:.1f}%"
    summary = (f"{rep['model']} {rep['scheme']} {rep['group_size']} {rep['algorithm']}: whole-model FLOPs "
               f"{rep['macs_dense'] / 1e6:.4g} -> {rep['macs_pruned'] / 1e6:.4g} MMAC ({rep['rate']:.2f}x), params "
               f"{rep['params_dense']} -> {rep['params_pruned']}, top-1 {dense} dense -> {100 * rep['accuracy']:.1f}%")
    if rep["structure_problems"]:
        summary += "\nSTRUCTURE PROBLEMS: " + "; ".join(rep["structure_problems"])
    out = Path(args.output)
    atomic_write(out.with_suffix(".report.json"), json.dumps(rep, indent=2))
    atomic_write(out.with_suffix(".report.md"), summary + "\n\n" + table + "\n")
    print(table)
    print("\n" + summary)
    print(f"wrote {out} (compile it with: rt3d compile {out} -o model.vmfb), {out.with_suffix('.report.json')}, "
          f"{out.with_suffix('.report.md')}")


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
