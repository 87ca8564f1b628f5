"""Units, masks and FLOPs of the three schemes (group sizes that do not divide a layer too), and
selection landing within 1% of a whole-model FLOPs rate."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rt3d_iree.errors import Rt3dError
from rt3d_iree.models import C3D, build_model
from rt3d_iree.prune.importance import magnitude_scores, reference_rms, select_to_rate
from rt3d_iree.prune.structure import SCHEMES, LayerUnits, ModelUnits, Structure, check_structure


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    f=st.integers(1, 20), c=st.integers(1, 12), k=st.sampled_from([(1, 1, 1), (3, 3, 3), (3, 1, 1), (1, 3, 3)]),
    gm=st.integers(1, 16), gn=st.integers(1, 8), scheme=st.sampled_from(["filter", "vanilla", "kgs"]),
    seed=st.integers(0, 1000),
)
def test_mask_zeros_exactly_the_pruned_units(f, c, k, gm, gn, scheme, seed):
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv3d(c, f, k, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    lyr = LayerUnits("conv", conv, Structure(scheme, (gm, gn)), macs=1000)
    mask = torch.rand(lyr.shape, generator=gen) < 0.5
    w = conv.weight.detach() * lyr.expand(mask)
    norms = lyr.squared_norms(w)
    assert torch.equal(norms > 0, mask)  # pruned units exactly zero, kept units untouched
    assert float(lyr.sizes.sum()) == conv.weight.numel()  # ragged groups counted by their real size
    assert torch.equal(lyr.unit_mask_of(w), mask)
    with torch.no_grad():
        conv.weight.copy_(w)
    assert check_structure(conv_model(conv), Structure(scheme, (gm, gn)), {"0": mask}) == []


def conv_model(conv: nn.Conv3d) -> nn.Module:
    return nn.Sequential(conv)


def test_partly_zero_unit_is_reported():
    conv = nn.Conv3d(8, 8, 3, bias=False)
    with torch.no_grad():
        conv.weight[0:8, 0:4, 0, 0, 0] = 0.0  # one whole KGS unit: fine
        conv.weight[0, 5, 1, 1, 1] = 0.0  # a single stray zero: not KGS structure
    problems = check_structure(conv_model(conv), Structure("kgs", (8, 4)))
    assert len(problems) == 1 and "1 of 54 units are partly zero" in problems[0]
    assert check_structure(conv_model(conv), Structure("filter", (8, 4)))[0].startswith("0: 8 of 8")


def test_norms_are_differentiable_on_the_live_weight():
    conv = nn.Conv3d(6, 10, 3)
    lyr = LayerUnits("c", conv, Structure("kgs", (8, 4)), 1)
    lyr.norms().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


@functools.cache
def _units(model: str, size: int, scheme: str) -> ModelUnits:
    """Shared by the selection tests, which only read the model."""
    torch.manual_seed(0)
    net = build_model(model, num_classes=8, width=0.125, frames=16, size=size)
    return ModelUnits(net, torch.zeros(1, 3, 16, size, size), Structure(scheme, (8, 4)))


def _assert_in_window(units: ModelUnits, masks: dict[str, torch.Tensor], rate: float) -> None:
    reached = units.rate(masks)
    assert rate <= reached <= rate * 1.01, (rate, reached)
    for n, m in masks.items():
        assert m.sum() >= 1, n  # no layer is cut off


GRID = [(m, s, scheme, r) for m in ("c3d", "r2plus1d") for s in (16, 32) for scheme in SCHEMES for r in (2.6, 3.6)]


@pytest.mark.parametrize("model,size,scheme,rate", GRID)
def test_magnitude_selection_lands_within_1pct_of_the_rate(model, size, scheme, rate):
    units = _units(model, size, scheme)
    _assert_in_window(units, select_to_rate(units, magnitude_scores(units, reference_rms(units)), rate), rate)


@settings(max_examples=24, deadline=None, derandomize=True)
@given(case=st.sampled_from(GRID), seed=st.integers(0, 2**31 - 1), dist=st.sampled_from(["uniform", "lognormal"]))
def test_random_scores_land_within_1pct_of_the_rate(case, seed, dist):
    model, size, scheme, rate = case
    units = _units(model, size, scheme)
    gen = torch.Generator().manual_seed(seed)
    scores = {}
    for n, lyr in units.layers.items():
        u = torch.rand(lyr.shape, generator=gen, dtype=torch.float64)
        scores[n] = u if dist == "uniform" else torch.exp(6 * (u - 0.5))  # spread over 2.6 decades
    _assert_in_window(units, select_to_rate(units, scores, rate), rate)


@pytest.mark.parametrize("seed", [4, 7])
def test_window_is_hit_when_every_unit_left_overshoots(seed):
    """With these scores the greedy pass stops at 3.10x of 3.6x: every layer but conv2 is at
    its floor, and a conv2 group is 6% of the model, six times the window. The repair has
    to prune one anyway and un-prune smaller units to climb back."""
    units = _units("c3d", 16, "vanilla")
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(lyr.shape, generator=gen, dtype=torch.float64) for n, lyr in units.layers.items()}
    _assert_in_window(units, select_to_rate(units, scores, 3.6), 3.6)


@pytest.mark.parametrize("scheme", ["filter", "vanilla", "kgs"])
@pytest.mark.parametrize("rate", [1.5, 2.6, 3.6])
def test_selection_reaches_the_whole_model_rate(scheme, rate):
    model = C3D(num_classes=8, width=0.25, frames=16, size=32)
    units = ModelUnits(model, torch.zeros(1, 3, 16, 32, 32), Structure(scheme, (8, 4)))
    masks = select_to_rate(units, magnitude_scores(units, reference_rms(units)), rate)
    _assert_in_window(units, masks, rate)
    reached = units.rate(masks)
    units.apply(masks)
    assert check_structure(model, Structure(scheme, (8, 4)), masks) == []
    assert abs(units.rate(units.masks_of()) - reached) < 1e-9  # the zeros say the same as the masks


@settings(max_examples=20, deadline=None, derandomize=True)
@given(case=st.sampled_from([("c3d", 16, s) for s in SCHEMES] + [("r2plus1d", 16, s) for s in SCHEMES]),
       seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 400))
def test_incremental_count_equals_a_fresh_count(case, seed, steps):
    """remove / restore in any order, cascades included, give the count of the masks from scratch."""
    units = _units(*case)
    gen = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(lyr.shape, generator=gen) < 0.7 for n, lyr in units.layers.items()}
    count = units.counter(masks)
    names = list(units.layers)
    for _ in range(steps):
        n = names[int(torch.randint(len(names), (1,), generator=gen))]
        u = int(torch.randint(masks[n].numel(), (1,), generator=gen))
        flat = masks[n].view(-1)
        (count.restore if not flat[u] else count.remove)(n, u)
        flat[u] = ~flat[u]
    fresh = units.counter(masks)
    assert count.kept == pytest.approx(fresh.kept, rel=1e-9)
    assert count.kept == pytest.approx(count.exact_kept(), rel=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(count.dead().values(), fresh.dead().values(), strict=True))
    assert units.kept_macs(masks, credit=False) >= fresh.kept


def test_a_window_too_narrow_for_the_units_is_a_clear_error():
    model = nn.Sequential(nn.Conv3d(1, 2, 1))  # two filters: rates 1x or 2x, nothing between
    units = ModelUnits(model, torch.zeros(1, 1, 2, 2, 2), Structure("filter", (8, 4)))
    scores = {"0": torch.tensor([0.1, 0.2])}
    assert units.rate(select_to_rate(units, scores, 2.0, min_keep=0.0)) == 2.0
    with pytest.raises(Rt3dError, match=r"cannot be hit within 1% with filter units .*ended at 2\.000x"):
        select_to_rate(units, scores, 1.5, min_keep=0.0)


def test_group_larger_than_a_layer_is_clamped_to_it():
    model = C3D(num_classes=8, width=0.125, frames=16, size=32)  # first conv: 8 filters x 3 channels
    units = ModelUnits(model, torch.zeros(1, 3, 16, 32, 32), Structure("kgs", (16, 8)))
    first = units.layers["features.0.0"]
    assert (first.gm, first.gn, first.shape) == (8, 3, (1, 1, 27))


def test_bad_structure_and_unreachable_rate_are_clear_errors():
    with pytest.raises(Rt3dError, match="unknown sparsity scheme 'block'"):
        Structure("block", (8, 4))
    with pytest.raises(Rt3dError, match="bad group size 0x4"):
        Structure("kgs", (0, 4))
    model = C3D(num_classes=8, width=0.125, frames=16, size=32)
    units = ModelUnits(model, torch.zeros(1, 3, 16, 32, 32), Structure("vanilla", (8, 4)))
    scores = magnitude_scores(units, reference_rms(units))
    with pytest.raises(Rt3dError, match=r"a 50x whole-model FLOPs reduction cannot be reached with vanilla units "
                       r"\(8x4 groups\): at most \d+\.\d\dx") as err:
        select_to_rate(units, scores, 50.0)
    assert "ask for a rate of at most" in str(err.value)
    with pytest.raises(Rt3dError, match="must be >= 1"):
        select_to_rate(units, scores, 0.5)
