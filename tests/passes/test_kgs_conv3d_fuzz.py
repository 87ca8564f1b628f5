"""Differential fuzzing of the KGS conv3d pass against PyTorch, on every target.

Hypothesis draws random conv3d configurations (channels 1-64, kernel dims 1-7, stride 1-3,
padding 0-3, dilation 1-3, bias or not, batch 1-2, inputs down to the kernel size), random
KGS masks with their own group size (fully pruned groups, fully pruned layers, all-zero
weights included), pass group sizes that need not divide F or C, and chains of two convs
with a ReLU. Several cases share one compiled module (one input and one output per case),
so a few hundred cases fit in CI's time. Every output must match PyTorch within
max abs error <= 1e-4 x max |reference|.

Grouped and depthwise convs (groups 2, 4 or C, kernels up to 3) are fuzzed as well.

Counts: ``--fuzz-scale N`` multiplies the number of examples (nightly: 10 or more). Cases
run per target are written to rt3d-out/fuzz_counts.json.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import rt3d_iree
from rt3d_iree.bench import TOLERANCE

pytestmark = pytest.mark.slow

CASES_PER_MODULE = 5
MAX_MACS = 3_000_000  # per case, so a module compiles and runs in seconds (also under qemu)
COUNTS: Counter = Counter()


@dataclass
class ConvCase:
    """One conv3d (or a conv-ReLU-conv chain) with its input shape and weight mask kind."""

    cin: int
    cout: int
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    dilation: tuple[int, int, int]
    bias: bool
    batch: int
    spatial: tuple[int, int, int]
    mask: str  # "dense", "kgs", "pruned_groups", "pruned_layer", "zero_weight"
    mask_group: tuple[int, int]
    keep: int
    seed: int
    chain_cout: int | None  # a second 3x3x3 (padding 1) conv after a ReLU
    groups: int = 1  # > 1: grouped; = cin: depthwise (rt3d_iree/decompose.py rewrites both)

    def out_spatial(self) -> tuple[int, ...]:
        return tuple(
            (n + 2 * p - (k - 1) * d - 1) // s + 1
            for n, p, k, d, s in zip(self.spatial, self.padding, self.kernel, self.dilation, self.stride, strict=True)
        )

    def macs(self) -> int:
        outs = int(np.prod(self.out_spatial()))
        m = self.batch * self.cout * outs * (self.cin // self.groups) * int(np.prod(self.kernel))
        if self.chain_cout:
            m += self.batch * self.chain_cout * outs * self.cout * 27
        return m


@st.composite
def conv_cases(draw, grouped: bool = False) -> ConvCase:
    # grouped: kernels up to 3 (X3D's and CSN's depthwise 3x3x3; a depthwise conv becomes one
    # multiply-add per kernel position), groups 2, 4 or C, channel multipliers 1-2
    kernel = tuple(draw(st.integers(1, 3 if grouped else 7)) for _ in range(3))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(3))
    padding = tuple(draw(st.integers(0, 3)) for _ in range(3))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(3))
    # Inputs from the smallest that still gives one output position up to a few more; half the
    # dims at the smallest, so 1x1 output planes and single frames are drawn often (issue 18:
    # Vulkan was wrong exactly there, and the uniform draw never reached it in 30 cases).
    spatial = tuple(
        max(1, (k - 1) * d + 1 - 2 * p) + (0 if draw(st.booleans()) else draw(st.integers(0, 5)))
        for k, d, p in zip(kernel, dilation, padding, strict=True)
    )
    cin = draw(st.integers(1, 64))
    cout = draw(st.integers(1, 64))
    groups = 1
    if grouped:
        kind = draw(st.sampled_from([2, 4, 0]))  # 0: depthwise
        per_group = draw(st.integers(1, 32)) if kind == 0 else draw(st.integers(1, 8))
        groups = per_group if kind == 0 else kind
        cin = per_group if kind == 0 else kind * per_group
        cout = groups * (draw(st.integers(1, 2)) if kind == 0 else draw(st.integers(1, 8)))
    case = ConvCase(
        cin=cin, cout=cout, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
        bias=draw(st.booleans()), batch=draw(st.integers(1, 2)), spatial=spatial,
        mask=draw(st.sampled_from(["dense", "kgs", "kgs", "pruned_groups", "pruned_layer", "zero_weight"])),
        mask_group=(draw(st.integers(1, 9)), draw(st.integers(1, 9))),
        keep=draw(st.integers(1, 27)), seed=draw(st.integers(0, 2**16)),
        chain_cout=draw(st.one_of(st.none(), st.integers(1, 16))), groups=groups,
    )
    # Shrink channels (never below 1) until the case is cheap enough to run everywhere.
    while case.macs() > MAX_MACS and (case.cin > 1 or case.cout > 1) and groups == 1:
        case.cin, case.cout = max(1, case.cin // 2), max(1, case.cout // 2)
    if case.macs() > MAX_MACS:
        case.spatial = tuple(max(1, (k - 1) * d + 1 - 2 * p) for k, d, p in zip(kernel, dilation, padding, strict=True))
    return case


def apply_mask(conv: nn.Conv3d, case: ConvCase) -> None:
    """Zero weights in a KGS pattern of the case's own group size (not the pass's)."""
    rng = np.random.default_rng(case.seed)
    w = conv.weight.data
    f, c = w.shape[:2]
    kvol = int(np.prod(w.shape[2:]))
    flat = w.view(f, c, kvol)
    gm, gn = case.mask_group
    with torch.no_grad():
        if case.mask == "zero_weight":
            w.zero_()
            if conv.bias is not None:
                conv.bias.zero_()
        elif case.mask == "pruned_layer":
            w.zero_()
        elif case.mask in ("kgs", "pruned_groups"):
            for gi, g in enumerate(range(0, f, gm)):
                if case.mask == "pruned_groups" and gi % 2 == 0:
                    flat[g:g + gm] = 0
                    continue
                for b in range(0, c, gn):
                    drop = np.ones(kvol, dtype=bool)
                    drop[rng.choice(kvol, min(case.keep, kvol), replace=False)] = False
                    flat[g:g + gm, b:b + gn, torch.from_numpy(drop)] = 0


def build(case: ConvCase) -> nn.Module:
    conv = nn.Conv3d(case.cin, case.cout, case.kernel, case.stride, case.padding, case.dilation, groups=case.groups,
                     bias=case.bias)
    apply_mask(conv, case)
    if not case.chain_cout:
        return conv
    second = nn.Conv3d(case.cout, case.chain_cout, 3, padding=1)
    apply_mask(second, ConvCase(**{**case.__dict__, "seed": case.seed + 1, "mask": "kgs"}))
    return nn.Sequential(conv, nn.ReLU(), second)


class Batch(nn.Module):
    """Independent cases side by side: one input and one output each."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(m(x) for m, x in zip(self.models, xs, strict=True))


def check_batch(cases: list[ConvCase], target: str, group_size: tuple[int, int], kind: str = "") -> None:
    torch.manual_seed(cases[0].seed)
    model = Batch([build(c) for c in cases]).eval()
    xs = tuple(torch.randn(c.batch, c.cin, *c.spatial) for c in cases)
    with torch.no_grad():
        refs = model(*xs)
    compiled = rt3d_iree.compile(model, xs, target=target, group_size=group_size)
    outs = compiled(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    for i, (case, out, ref) in enumerate(zip(cases, outs, refs, strict=True)):
        scale = float(ref.abs().max())
        err = float((out - ref).abs().max())
        assert out.shape == ref.shape, (i, case)
        assert err <= TOLERANCE * scale, f"case {i} on {target}, group {group_size}: abs err {err:.3g} " \
                                         f"vs max|ref| {scale:.3g}\n{case}"
    # Every conv must have gone through the pass (none left to IREE's default lowering).
    assert not compiled.report.skipped, compiled.report.skipped
    COUNTS[kind + target] += len(cases)


batches = st.lists(conv_cases(), min_size=CASES_PER_MODULE, max_size=CASES_PER_MODULE)
grouped_batches = st.lists(conv_cases(grouped=True), min_size=CASES_PER_MODULE, max_size=CASES_PER_MODULE)
group_sizes = st.tuples(st.integers(1, 16), st.integers(1, 8))


def fuzz(target: str, examples: int, nightly: bool = False):
    # CI runs a fixed, reproducible sequence; a nightly run (--fuzz-scale > 1) explores new cases.
    @settings(max_examples=examples, deadline=None, derandomize=not nightly, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(cases=batches, group_size=group_sizes)
    def run(cases, group_size):
        check_batch(cases, target, group_size)

    run()


def fuzz_grouped(target: str, examples: int, nightly: bool = False):
    # A function of its own: the derandomized sequence is keyed on the test function's source,
    # so fuzz()'s CI sequence stays the one it was.
    @settings(max_examples=examples, deadline=None, derandomize=not nightly, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(cases=grouped_batches, group_size=group_sizes)
    def run(cases, group_size):
        check_batch(cases, target, group_size, "grouped ")

    run()


@pytest.fixture(scope="module", autouse=True)
def record_counts():
    yield
    out = Path("rt3d-out")
    out.mkdir(exist_ok=True)
    path = out / "fuzz_counts.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(COUNTS)
    path.write_text(json.dumps(old, indent=2))


def _case(cin, cout, kernel, padding, batch, spatial, mask="dense") -> ConvCase:
    return ConvCase(cin=cin, cout=cout, kernel=kernel, stride=(1, 1, 1), padding=padding, dilation=(1, 1, 1),
                    bias=True, batch=batch, spatial=spatial, mask=mask, mask_group=(8, 4), keep=1, seed=7,
                    chain_cout=None)


# Issue 18's minimal cases (a 1x1 output plane, batch x output frames > 1), where Vulkan returned
# garbage (relative error 1.0) while stock IREE was right; and a KGS-masked, a single-row and a
# chained variant.
ONE_BY_ONE = [
    _case(64, 64, (1, 1, 1), (0, 0, 0), 1, (4, 1, 1)),
    _case(64, 64, (1, 1, 1), (0, 0, 0), 2, (1, 1, 1)),
    _case(64, 64, (3, 1, 1), (1, 0, 0), 1, (4, 1, 1)),
    _case(32, 24, (3, 3, 3), (1, 1, 1), 2, (3, 1, 1), mask="kgs"),
    _case(16, 8, (1, 3, 3), (0, 0, 0), 1, (1, 3, 3), mask="kgs"),
]


@pytest.mark.parametrize("target", ["host", "aarch64", "vulkan-adreno"])
def test_one_by_one_output_planes(target):
    check_batch(ONE_BY_ONE, target, (8, 4))


def test_fuzz_host(fuzz_scale):
    fuzz("host", 60 * fuzz_scale, fuzz_scale > 1)  # 300 cases
    assert COUNTS["host"] >= 300 * fuzz_scale


def test_fuzz_aarch64(fuzz_scale):
    fuzz("aarch64", 6 * fuzz_scale, fuzz_scale > 1)  # 30 cases under qemu
    assert COUNTS["aarch64"] >= 30 * fuzz_scale


def test_fuzz_vulkan_adreno(fuzz_scale):
    fuzz("vulkan-adreno", 6 * fuzz_scale, fuzz_scale > 1)  # 30 cases on lavapipe
    assert COUNTS["vulkan-adreno"] >= 30 * fuzz_scale


# Issue 18: grouped (2, 4) and depthwise (groups = C, multipliers 1-2) convs, imported through
# rt3d_iree/decompose.py; at least 100 / 15 / 15 cases per CI run.
def test_fuzz_grouped_host(fuzz_scale):
    fuzz_grouped("host", 20 * fuzz_scale, fuzz_scale > 1)
    assert COUNTS["grouped host"] >= 100 * fuzz_scale


def test_fuzz_grouped_aarch64(fuzz_scale):
    fuzz_grouped("aarch64", 3 * fuzz_scale, fuzz_scale > 1)
    assert COUNTS["grouped aarch64"] >= 15 * fuzz_scale


def test_fuzz_grouped_vulkan_adreno(fuzz_scale):
    fuzz_grouped("vulkan-adreno", 3 * fuzz_scale, fuzz_scale > 1)
    assert COUNTS["grouped vulkan-adreno"] >= 15 * fuzz_scale
