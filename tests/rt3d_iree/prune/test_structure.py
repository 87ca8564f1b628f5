"""Units, masks and FLOPs of the three schemes, including group sizes that do not divide a layer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rt3d_iree.errors import Rt3dError
from rt3d_iree.models import C3D
from rt3d_iree.prune.importance import magnitude_scores, reference_rms, select_to_rate
from rt3d_iree.prune.structure import LayerUnits, ModelUnits, Structure, check_structure


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


@pytest.mark.parametrize("scheme", ["filter", "vanilla", "kgs"])
@pytest.mark.parametrize("rate", [1.5, 2.6, 3.6])
def test_selection_reaches_the_whole_model_rate(scheme, rate):
    model = C3D(num_classes=8, width=0.25, frames=16, size=32)
    units = ModelUnits(model, torch.zeros(1, 3, 16, 32, 32), Structure(scheme, (8, 4)))
    masks = select_to_rate(units, magnitude_scores(units, reference_rms(units)), rate)
    reached = units.rate(masks)
    assert rate <= reached <= rate * 1.12, reached
    for n, m in masks.items():
        assert m.sum() >= 1, n  # no layer is cut off
    units.apply(masks)
    assert check_structure(model, Structure(scheme, (8, 4)), masks) == []
    assert abs(units.rate(units.masks_of()) - reached) < 1e-9  # the zeros say the same as the masks


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
