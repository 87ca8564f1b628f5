"""The `rt3d` command line: compile, opt, demo, bench-layer.

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
from .targets import TARGETS

logger = logging.getLogger("rt3d_iree")


def _group_size(text: str) -> tuple[int, int]:
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
        sp.add_argument("--group-size", type=_group_size, default=(8, 4), help="KGS gM x gN (default 8x4)")

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
    return 0


def _summary(report) -> None:
    if report is None:
        return
    done = report.rewritten
    print(f"rt3d-kgs-conv3d: {done} of {len(report.convs)} conv3d rewritten")
    for conv in report.skipped:
        print(f"  left to IREE: {conv.location}: {conv.reason}")


if __name__ == "__main__":
    sys.exit(main())
