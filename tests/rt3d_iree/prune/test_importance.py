"""Regularizers: computed on the live weights, reweighted penalties track the FLOPs kept."""

from __future__ import annotations

import torch

from rt3d_iree.models import C3D
from rt3d_iree.prune.importance import GroupLasso, Reweighted
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
