"""The `rt3d` command line's arguments: every subcommand, its flags and their checks.

Why a module of its own: the parser is most of the command line's text and changes for other
reasons than what the commands do (cli.py). Numbers are checked here, as argparse types, so a
bad value (``--threads 0``, ``--lam -1``) is refused with one line before any work starts.
"""

from __future__ import annotations

import argparse
import math

from .group_size import DEFAULT_GROUP_SIZE, DEFAULT_TEXT
from .harness import ROUNDS
from .runners import DRIVERS, RUNNERS
from .targets import KERNELS, TARGETS

__all__ = ["TIMING_COMMANDS", "build_parser", "check_args", "group_size_arg"]
from .tuning_store import CANDIDATES_TEXT


def group_size_arg(text: str) -> tuple[int, int] | str:
    if text == "auto":
        return text
    try:
        gm, gn = text.lower().split("x")
        size = int(gm), int(gn)
    except ValueError:
        raise argparse.ArgumentTypeError(f"group size must look like 8x4 (filters x channels), got {text!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"bad group size {text}: filters and channels per group must be at least 1")
    return size


def _number(kind: type, low: float, strict: bool, what: str, high: float = math.inf):
    """An argparse type: a finite number of ``kind`` above ``low`` (or at least it) and at most
    ``high``, refused before any work."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > low if strict else value >= low) or not value <= high or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value
    return parse


_count = _number(int, 1, False, "a whole number >= 1")
_epochs = _number(int, 0, False, "a whole number >= 0")
_non_negative = _number(float, 0.0, False, "a number >= 0")
_rate = _number(float, 1.0, False, "a FLOPs reduction rate >= 1 (for example 2.6)")
# Width 4 is already 16x the published models' MACs: anything wider is a typo, not a model.
_width = _number(float, 0.0, True, "a width multiplier in (0, 4] (1.0 = the published model)", 4.0)
_seed = _number(int, 0, False, "a seed in [0, 2**32)", 2**32 - 1)
_distill = _number(float, 0.0, False, "a distillation weight in [0, 1]", 1.0)


def _group_sizes(text: str) -> list[tuple[int, int]]:
    """``--candidates``: group sizes separated by commas, each checked now (not after timing the first)."""
    sizes = [group_size_arg(t.strip()) for t in text.split(",") if t.strip()]
    if not sizes or "auto" in sizes:
        raise argparse.ArgumentTypeError(f"expected group sizes such as {CANDIDATES_TEXT}, got {text!r}")
    return sizes  # type: ignore[return-value]


def _rates(text: str) -> tuple[float, ...]:
    """``--rates``: FLOPs rates separated by commas, each finite and >= 1."""
    try:
        return tuple(_rate(t.strip()) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected FLOPs rates >= 1 separated by commas (for example 1,2,3,4,6), "
                                         f"got {text!r}") from None


def _models(text: str) -> tuple[str, ...]:
    """``--models``: model names separated by commas (looked up case-insensitively, as build_model does)."""
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected model names separated by commas, got {text!r}")
    return names


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"rt3d-iree {version('rt3d-iree')}"
    except PackageNotFoundError:
        return "rt3d-iree (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rt3d", description="KGS-pruned 3D CNNs compiled with MLIR and IREE")
    p.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="cmd", required=True)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("input", help="model: .pt2 (torch.export.save), an rt3d prune checkpoint (.pt), "
                        ".mlir or .mlirbc")
        sp.add_argument("-o", "--output", required=True, help="output file")
        sp.add_argument("--target", default="host", help=f"one of: {', '.join(sorted(TARGETS))}")
        sp.add_argument("--group-size", type=group_size_arg, default=None,
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
    d.add_argument("-o", "--out", default="rt3d-out", help="folder for demo.json, demo.md, demo.png")
    d.add_argument("--width", type=_width, default=0.25, help="C3D width multiplier (1.0 = full size)")
    d.add_argument("--frames", type=_count, default=16)
    d.add_argument("--size", type=_count, default=112)
    d.add_argument("--rate", type=_rate, default=3.6, help="whole-model FLOPs reduction of the KGS model")
    d.add_argument("--repetitions", "--reps", dest="reps", type=_count, default=5,
                   help="timed runs per engine (median reported)")
    d.add_argument("--threads", type=_count, default=2)

    b = sub.add_parser("bench-layer", help="benchmark the reference conv3d layer on every engine")
    b.add_argument("-o", "--out", default="rt3d-out")
    b.add_argument("--repetitions", "--reps", dest="reps", type=_count, default=5)
    b.add_argument("--threads", type=_count, default=2)
    sub.add_parser("targets", help="list the targets and the iree-compile flags each implies")

    f = sub.add_parser("fetch-tools", help="download the aarch64 IREE tools (run aarch64 modules under qemu)")
    f.add_argument("--wheel", help="use this iree-base-runtime aarch64 wheel instead of downloading it")

    def runner_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--target", default="host", help=f"one of: {', '.join(sorted(TARGETS))}")
        sp.add_argument("--runner", choices=RUNNERS, help="local, qemu or adb (default: the target's own)")
        sp.add_argument("--device", help="IREE driver: local-task, local-sync or vulkan (default: the target's)")
        sp.add_argument("--threads", type=_count, default=2, help="CPU threads (iree task topology groups)")
        sp.add_argument("--repetitions", type=_count, default=5, help="timed repetitions per round (median reported)")
        sp.add_argument("--rounds", type=_count, default=ROUNDS,
                        help="timing rounds: every variant is timed --repetitions times per round, in turn")
        sp.add_argument("-o", "--out", default="rt3d-out", help="folder for the JSON, CSV and markdown results")
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
    be.add_argument("--group-size", type=group_size_arg, default=None,
                    help=f"KGS gM x gN the pass exploits (default: a checkpoint's own, else {DEFAULT_TEXT}; "
                    "auto = what `rt3d tune` recorded)")
    be.add_argument("--rate", type=_rate, default=3.6, help="built-in model: whole-model FLOPs rate of the KGS model")
    be.add_argument("--width", type=_width, default=0.125, help="built-in model: C3D width (1.0 = full size)")
    be.add_argument("--size", type=_count, default=56, help="built-in model: frame height = width (112 = full size)")

    pr = sub.add_parser("prune", help="prune a 3D CNN to a whole-model FLOPs target (filter, vanilla or KGS)")
    pr.add_argument("-o", "--output", required=True, help="final checkpoint (.pt); rt3d compile reads it")
    pr.add_argument("--model", default="c3d", help="c3d, r2plus1d or s3d")
    pr.add_argument("--width", type=_width, default=0.125, help="channel width multiplier (1.0 = published size)")
    pr.add_argument("--frames", type=_count, default=16)
    pr.add_argument("--size", type=_count, default=32, help="frame height = width")
    pr.add_argument("--scheme", default="kgs", help="filter, vanilla or kgs")
    pr.add_argument("--group-size", type=group_size_arg, default=DEFAULT_GROUP_SIZE,
                    help=f"gM filters x gN channels (default {DEFAULT_TEXT})")
    pr.add_argument("--algorithm", default="reweighted", help="heuristic, fixed or reweighted")
    pr.add_argument("--rate", type=_rate, default=2.6, help="whole-model FLOPs reduction target, e.g. 2.6")
    pr.add_argument("--data", default="synthetic", help="synthetic (built in), ucf101:FOLDER or hmdb51:FOLDER")
    pr.add_argument("--split", type=int, default=1, help="UCF101 / HMDB51 split (1-3)")
    pr.add_argument("--epochs", type=_count, help="epochs for each of regularization and retraining")
    pr.add_argument("--reg-epochs", type=_epochs, default=4, help="0: prune at once (one-shot), then retrain")
    pr.add_argument("--retrain-epochs", type=_count, default=4)
    pr.add_argument("--dense-epochs", type=_epochs, default=8, help="dense training first (without --from-dense)")
    pr.add_argument("--from-dense", help="start from this dense checkpoint instead of training one")
    pr.add_argument("--rounds", type=_count, default=3, help="reweighting rounds / heuristic pruning steps")
    pr.add_argument("--lam", type=_non_negative, help="regularization strength (default: the algorithm's)")
    pr.add_argument("--distill", type=_distill, default=0.0, help="knowledge distillation weight in retraining (0-1)")
    pr.add_argument("--train-clips", type=_count, default=2000, help="synthetic data: training clips")
    pr.add_argument("--val-clips", type=_count, default=500, help="synthetic data: validation clips")
    pr.add_argument("--batch-size", type=_count, default=32)
    pr.add_argument("--seed", type=_seed, default=0)
    pr.add_argument("--workdir", help="per-epoch checkpoints (default: OUTPUT.work)")
    pr.add_argument("--resume", action="store_true", help="continue from the work folder's last checkpoint")
    pr.add_argument("--quiet", action="store_true", help="no progress bars")

    ptab = sub.add_parser("prune-table", help="the paper's Table 1 on synthetic data (width-reduced models), "
                          "mean +- sd over seeds and McNemar tests of the paper's orderings")
    ptab.add_argument("-o", "--out", default="rt3d-out")
    ptab.add_argument("--models", type=_models, help="comma-separated (default c3d,r2plus1d; --quick: c3d)")
    ptab.add_argument("--seeds", help="comma-separated seeds, each its own dense model and data (default 0,1; "
                      "--quick: 0)")
    ptab.add_argument("--full-grid", action="store_true",
                      help="all 4 (scheme, rate) rows x 3 algorithms instead of the paper's 6 cells per model")
    ptab.add_argument("--quick", action="store_true", help="tiny data and epochs (minutes; what CI runs)")
    ptab.add_argument("--epochs", type=_count, help="epochs for each of regularization and retraining")
    ptab.add_argument("--reg-epochs", type=_count)
    ptab.add_argument("--retrain-epochs", type=_count)
    ptab.add_argument("--dense-epochs", type=_count)
    ptab.add_argument("--rounds", type=_count, help="reweighting rounds / heuristic pruning steps")
    ptab.add_argument("--train-clips", type=_count)
    ptab.add_argument("--val-clips", type=_count)
    ptab.add_argument("--width", type=_width, help="channel width multiplier (default 0.125)")
    ptab.add_argument("--size", type=_count, help="frame height = width (default 32; --quick: 16)")
    ptab.add_argument("--jobs", type=_count, default=1,
                      help="train this many (model, seed) chains at once, in processes sharing the cores (default 1)")
    ptab.add_argument("--quiet", action="store_true", help="no progress bars")

    cal = sub.add_parser("calibrate", help="can the built-in benchmark tell pruning methods apart? parameter-free "
                         "estimators and dense C3D at the table's width and half of it")
    cal.add_argument("-o", "--out", default="rt3d-out")
    cal.add_argument("--seeds", help="comma-separated seeds (default 0,1)")
    cal.add_argument("--quick", action="store_true", help="tiny data and epochs (what CI runs)")
    cal.add_argument("--dense-epochs", type=_count)
    cal.add_argument("--train-clips", type=_count)
    cal.add_argument("--val-clips", type=_count)
    cal.add_argument("--width", type=_width, help="the table's width (default 0.125); half of it is compared")
    cal.add_argument("--size", type=_count, help="frame height = width (default 32; --quick: 16)")
    cal.add_argument("--quiet", action="store_true", help="no progress bars")

    rep = sub.add_parser("report", help="whole models (C3D, R(2+1)D, S3D, X3D-S) on PyTorch, ONNX Runtime, stock "
                         "IREE and rt3d dense / KGS: the paper's Table 2 on this machine")
    rep.add_argument("-o", "--out", default="rt3d-out/report", help="folder for report.md/.json/.csv and the PNG")
    rep.add_argument("--models", type=_models, help="comma-separated (default c3d,r2plus1d,s3d,x3d-s; --quick: "
                     "c3d,r2plus1d,s3d; X3D-S runs at its published 13x160x160 unless --quick)")
    rep.add_argument("--reps", type=_count, default=5, help="timed runs per engine (median; at least 5)")
    rep.add_argument("--rounds", type=_count, default=ROUNDS,
                     help="timing rounds: every engine is timed --reps times per round, in turn")
    rep.add_argument("--threads", type=_count, default=2)
    rep.add_argument("--frames", type=_count, default=16)
    rep.add_argument("--size", type=_count, help="frame height = width (default 112; --quick: 32)")
    rep.add_argument("--width", type=_width, help="channel width (default 1.0 = the published models; --quick: 0.125)")
    rep.add_argument("--rates", type=_rates, default=(1.0, 2.0, 3.0, 4.0, 6.0),
                     help="FLOPs rates of the latency plot (C3D), for example 1,2,3,4,6")
    rep.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out (it is an optional extra)")
    rep.add_argument("--no-stock", action="store_true", help="leave stock IREE out (about 20 s per C3D run)")
    rep.add_argument("--quick", action="store_true", help="width 0.125 at 16x32x32 unless given (CI runs it)")

    t = sub.add_parser("tune", help="choose the KGS group size for a target by timing synthesized layers")
    runner_args(t)
    t.add_argument("--set", type=group_size_arg, help="record this group size for the target without timing")
    t.add_argument("--candidates", type=_group_sizes, default=CANDIDATES_TEXT, help="group sizes to time")
    t.add_argument("--quick", action="store_true", help="one small layer instead of three (for CI)")
    p.subcommands = sub.choices  # name -> its parser (the CLI suggests close flag names from it)
    return p


# Commands that time engines: they run under the benchmark malloc settings (environment.ALLOCATOR_ENV).
TIMING_COMMANDS = frozenset({"demo", "bench-layer", "bench", "report", "tune"})


def check_args(args: argparse.Namespace) -> None:
    """Checks that need the file system or more than one flag, done before any work starts, so a
    bad value fails in a second, not after an hour of training or minutes of compiling."""
    from pathlib import Path

    from .errors import Rt3dError
    from .files import check_folder, check_writable
    from .models import check_clip

    if getattr(args, "output", None) is not None:
        check_writable(args.output)
        if getattr(args, "input", None) and Path(args.input).resolve() == Path(args.output).resolve():
            raise Rt3dError(f"the output {args.output} is the input file", "write the result to another file")
    for name, what in (("out", "output folder"), ("workdir", "work folder"), ("reproducer_dir", "reproducer folder")):
        if getattr(args, name, None) is not None:
            check_folder(getattr(args, name), what)
    if args.cmd == "prune":
        if Path(args.output).suffix not in (".pt", ".pth"):
            raise Rt3dError(f"the checkpoint {args.output} should end in .pt", "for example -o c3d_kgs.pt "
                            "(rt3d compile reads it by that suffix)")
        check_clip(args.model, args.frames, args.size, args.data == "synthetic")
    if args.cmd == "demo":
        check_clip("c3d", args.frames, args.size, False)
    if args.cmd == "report":
        from .report import ReportConfig, quick_config

        defaults = quick_config() if args.quick else ReportConfig()
        size = args.size or defaults.size
        for model in args.models or defaults.models:
            check_clip(model, args.frames, size, False)
    if args.cmd == "fetch-tools" and args.wheel is not None and not Path(args.wheel).is_file():
        raise Rt3dError(f"no such wheel file: {args.wheel}", "give the path of an iree-base-runtime "
                        "manylinux aarch64 .whl, or leave --wheel out to download it")
    if getattr(args, "device", None) is not None and args.device not in DRIVERS:
        raise Rt3dError(f"unknown IREE driver {args.device!r}", f"use one of: {', '.join(DRIVERS)}")
    if args.cmd == "tune":
        from .targets import resolve_target

        resolve_target(args.target)
        if args.set == "auto":
            raise Rt3dError("--set needs a group size, not auto", "for example --set 8x4")


