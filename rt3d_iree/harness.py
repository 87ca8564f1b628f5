"""The benchmark harness every timing command shares: check against PyTorch, then time in turns.

Why one harness: `rt3d demo`, `bench-layer`, `bench`, `report` and `tune` all compile some
variants, check each against PyTorch and time them; written out in each, the checks drifted
(one message per command, NaN passing silently) and `bench` and `tune` timed their variants
one after another, so a slow spell on these shared machines skewed every ratio taken against
the variant it hit. Here every variant is timed once per round, in the same order
(a, b, c, a, b, c, ...), and the median is taken over all rounds' runs; ratios are taken
within one such run.

Why this sits below bench.py (which re-exports ``max_rel_error`` and ``TOLERANCE``): bench.py's
``interleaved_medians`` is this harness with plain timers, and it must not import upwards.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .errors import Rt3dError
from .runners import BenchResult
from .runtime import CompiledModule

ROUNDS = 3  # timing rounds: every variant is timed once per round, in turn
TOLERANCE = 1e-4  # max |out - ref| / max |ref|: the project's numerics criterion
COMPILER_BUG = "this is a compiler bug: please report it with the model (rt3d compile leaves a reproducer)"

Timings = dict[str, list[list[float]]]  # variant -> per round, the ms of each repetition


def max_rel_error(out: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    """max |out - ref| / max |ref|: the project's numerics criterion (<= ``TOLERANCE`` passes)."""
    ref_np = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    out_np = out.detach().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    return float(np.abs(out_np - ref_np).max() / max(np.abs(ref_np).max(), 1e-30))


def check_against(reference: Any, outputs: Any, tol: float = TOLERANCE, *, name: str,
                  hint: str = COMPILER_BUG) -> float:
    """The max relative error of ``outputs`` against PyTorch's ``reference``; an Rt3dError naming
    the variant ``name`` when it exceeds ``tol`` (or is NaN: a NaN compares false and used to pass).

    Several outputs are compared pairwise; a single reference is compared with the first output
    (a module returning a tuple whose head is what the reference computes).
    """
    outs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    refs = list(reference) if isinstance(reference, (tuple, list)) else [reference]
    err = max(max_rel_error(o, r) for o, r in zip(outs, refs, strict=False))
    if not err <= tol:
        raise Rt3dError(f"{name} differs from PyTorch: max rel error {err:.3g} (tolerance {tol:g})", hint)
    return err


@dataclass
class Variant:
    """One thing to time: a name and a timer, which times it once and returns each repetition's ms.

    Variants made by ``benchmarked`` / ``module`` also keep what iree-benchmark-module reported
    each round (device, threads, emulation), merged by ``result``.
    """

    name: str
    timer: Callable[[], list[float]]
    results: list[BenchResult] = field(default_factory=list)

    @classmethod
    def benchmarked(cls, name: str, benchmark: Callable[[], BenchResult]) -> Variant:
        """A variant timed by a call returning a ``BenchResult`` (a runner or compiled module)."""
        variant = cls(name, list)

        def timer() -> list[float]:
            result = benchmark()
            variant.results.append(result)
            return list(result.times_ms) or [result.median_ms]

        variant.timer = timer
        return variant

    @classmethod
    def module(cls, name: str, module: CompiledModule, inputs: Sequence[Any], *, threads: int,
               repetitions: int) -> Variant:
        """A compiled module, timed on its own runner by iree-benchmark-module."""
        return cls.benchmarked(name, lambda: module.benchmark(*inputs, threads=threads, repetitions=repetitions))

    @classmethod
    def python_call(cls, name: str, module: CompiledModule, inputs: Sequence[Any], *, repetitions: int) -> Variant:
        """What a Python user sees: ``module(*inputs)`` timed with a wall clock, once per
        repetition, after one untimed call (which loads the module)."""
        return cls(name, lambda: wall_times(lambda: module(*inputs), repetitions, warmup=1))

    def result(self) -> BenchResult:
        """What iree-benchmark-module reported, over all rounds: every run, and their median."""
        if not self.results:
            raise ValueError(f"variant {self.name!r} has not been timed by iree-benchmark-module")
        if len(self.results) == 1:
            return self.results[0]
        times = [t for r in self.results for t in r.times_ms]
        median = statistics.median(times or [r.median_ms for r in self.results])
        return replace(self.results[0], median_ms=median, times_ms=times)


def wall_times(call: Callable[[], Any], repetitions: int, warmup: int = 1) -> list[float]:
    """Wall-clock ms of each of ``repetitions`` calls of ``call``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def time_interleaved(variants: Sequence[Variant], rounds: int = ROUNDS,
                     on_round: Callable[[], None] | None = None) -> Timings:
    """Time every variant once per round, in the given order, for ``rounds`` rounds.

    Returns, per variant name, the ms of each repetition of each round (round by round).
    ``on_round`` is called after each round (progress bars).
    """
    check_rounds(rounds)
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must differ: {names}")
    times: Timings = {name: [] for name in names}
    for _ in range(rounds):
        for variant in variants:
            times[variant.name].append(list(variant.timer()))
        if on_round is not None:
            on_round()
    return times


def check_rounds(rounds: int) -> None:
    """Refuse fewer than one round (callers check before compiling, not minutes later)."""
    if not isinstance(rounds, int) or rounds < 1:
        raise Rt3dError(f"rounds must be at least 1 (got {rounds})", f"for example --rounds {ROUNDS}")


def medians(times: Timings) -> dict[str, float]:
    """Per variant, the median over every run of every round (the README's reported medians)."""
    return {name: statistics.median([t for run in rounds for t in run]) for name, rounds in times.items()}
