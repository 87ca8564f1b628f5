"""The `rt3d` command line: compile, opt, demo, bench-layer, bench, tune, fetch-tools.

Errors a user can act on print as one message with what to do, never a traceback.
Flags `rt3d compile` does not know are passed to iree-compile unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from .cli_args import TIMING_COMMANDS, build_parser, check_args
from .errors import Rt3dError
from .files import atomic_write
from .group_size import DEFAULT_TEXT
from .targets import TARGETS, resolve_target

logger = logging.getLogger("rt3d_iree")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    from_console = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, theirs = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args, unknown = parser.parse_known_args(ours)
    if unknown and args.cmd != "compile":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _check_passthrough(parser, args.cmd, unknown)
    unknown += theirs
    if from_console and args.cmd in TIMING_COMMANDS:
        _reexec_with_allocator_env()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        check_args(args)  # paths and cross-flag checks, before any work
        return _run(args, unknown)
    except Rt3dError as exc:
        print(f"rt3d: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rt3d: interrupted", file=sys.stderr)
        return 130


def _check_passthrough(parser: argparse.ArgumentParser, cmd: str, unknown: list[str]) -> None:
    """Flags `rt3d compile` does not know go to iree-compile only if they are plainly IREE's or MLIR's
    (``--iree-*``, ``--mlir-*``) or come after ``--``: a misspelled flag of ours (``--group_size``)
    is caught here, not by iree-compile minutes later."""
    import difflib

    ours = [o for a in parser.subcommands[cmd]._actions for o in a.option_strings]
    previous = ""
    for flag in unknown:
        after_iree_flag = previous.startswith(("--iree-", "--mlir-")) and "=" not in previous
        previous = flag
        if flag.startswith(("--iree-", "--mlir-")) or (after_iree_flag and not flag.startswith("-")):
            continue
        if not flag.startswith("-"):
            parser.error(f"unexpected argument {flag!r}: rt3d {cmd} takes one input file; flags for iree-compile "
                         "go after --")
        name = flag.split("=", 1)[0]
        near = difflib.get_close_matches(name.replace("_", "-"), ours, n=1)
        parser.error(f"unknown flag {name}" + (f" (did you mean {near[0]}?)" if near else "")
                     + "; flags for iree-compile go after --, for example: rt3d compile m.pt2 -o m.vmfb -- --flag")


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
        target = resolve_target(args.target)
        module, report = api.optimize(Path(args.input), target=args.target, group_size=args.group_size,
                                      kernel=args.kernel)
        if Path(args.output).suffix == ".mlirbc":
            from .compiler import bytecode

            atomic_write(args.output, bytecode(module))
        else:
            from .passes.kgs.ukernel_ir import opt_text

            atomic_write(args.output, opt_text(str(module), target.name))
        _summary(report)
        flags = " ".join(shlex.quote(f) for f in target.flags)
        print(f"wrote {args.output}; stock IREE compiles it with the target's flags:\n"
              f"  iree-compile {shlex.quote(str(args.output))} {flags} -o model.vmfb")
    elif args.cmd == "report":
        from .report import ReportConfig, quick_config, report

        settings = dict(reps=args.reps, rounds=args.rounds,
                        threads=args.threads, frames=args.frames, sweep_rates=args.rates, onnx=not args.no_onnx,
                        stock=not args.no_stock)
        settings.update({k: v for k, v in (("size", args.size), ("width", args.width), ("models", args.models))
                         if v is not None})
        config = quick_config(**settings) if args.quick else ReportConfig(**settings)  # given flags win
        results, paths = report(config, args.out)
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
        res = tune(args.target, args.runner, args.candidates, layers=QUICK_LAYERS if args.quick else LAYERS,
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
        over["models"] = args.models
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
    from .compiler import where

    for conv in report.skipped:
        print(f"  left to IREE: {where(conv.location)}: {conv.reason}")


if __name__ == "__main__":
    sys.exit(main())
