"""Regularizers (computed on the live weights, reweighted penalties track the FLOPs kept), and
selection under earlier pruning and the per-layer floor."""

from __future__ import annotations

import torch

from rt3d_iree.models import C3D
from rt3d_iree.prune.importance import GroupLasso, Reweighted, magnitude_scores, reference_rms, select_to_rate
from rt3d_iree.prune.structure import ModelUnits, Structure


def _units(scheme: str = "kgs") -> ModelUnits:
    model = C3D(num_classes=8, width=0.125, frames=16, size=32)
    return ModelUnits(model, torch.zeros(1, 3, 16, 32, 32), Structure(scheme, (8, 4)))


def test_reweighted_penalty_approximates_the_conv_flops_fraction_kept():
    units = _units()
    reg = Reweighted(units, eps=1e-6)
    assert abs(float(reg().detach()) - 1.0) < 1e-3  # every unit alive: the whole conv FLOPs
    # Zero half of the units of the biggest layer, reweight: the penalty drops by half its share.
    name = max(units.layers, key=lambda n: units.layers[n].macs)
    lyr = units.layers[name]
    mask = torch.ones(lyr.shape, dtype=torch.bool)
    mask.view(-1)[: mask.numel() // 2] = False
    with torch.no_grad():
        lyr.conv.weight.mul_(lyr.expand(mask))
    reg.reweight()
    expected = 1.0 - reg.flops_share[name] * (1 - float(mask.float().mean()))
    assert abs(float(reg().detach()) - expected) < 1e-3
    assert reg.rounds == 2


def test_regularizers_push_gradients_into_the_live_weights():
    for reg_cls in (Reweighted, GroupLasso):
        units = _units("vanilla")
        reg_cls(units)().backward()
        for n, lyr in units.layers.items():
            g = lyr.conv.weight.grad
            assert g is not None and g.abs().sum() > 0, (reg_cls.__name__, n)
            # the gradient points along the weight (shrinks it)
            assert float((g * lyr.conv.weight.detach()).sum()) > 0


def test_reweighted_weights_layers_by_flops():
    units = _units()
    reg = Reweighted(units)
    shares = reg.flops_share
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    biggest = max(units.layers, key=lambda n: units.layers[n].macs)
    assert shares[biggest] == max(shares.values())


def test_penalty_state_round_trips():
    units = _units()
    a = Reweighted(units)
    a.reweight()
    b = Reweighted(units)
    b.load_state_dict(a.state_dict())
    assert b.rounds == a.rounds and all(torch.equal(a.penalty[n], b.penalty[n]) for n in a.penalty)


def test_selection_keeps_earlier_pruning_and_the_floor_and_lands_in_the_window():
    for scheme in ("filter", "vanilla", "kgs"):
        units = _units(scheme)
        first = select_to_rate(units, magnitude_scores(units, reference_rms(units)), 1.8)
        gen = torch.Generator().manual_seed(3)
        scores = {n: torch.rand(lyr.shape, generator=gen, dtype=torch.float64) for n, lyr in units.layers.items()}
        second = select_to_rate(units, scores, 3.0, keep=first, min_keep=0.1)
        assert 3.0 <= units.rate(second) <= 3.03, (scheme, units.rate(second))
        for n, m in second.items():
            assert not bool((m & ~first[n]).any()), (scheme, n)  # what was pruned stays pruned
            floor = min(int(first[n].sum()), max(1, round(0.1 * m.numel())))
            assert int(m.sum()) >= floor, (scheme, n)
