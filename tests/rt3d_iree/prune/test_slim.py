"""Dropping conv channels nothing reads: exact outputs, the MACs the pruner credited, and the compiled model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import rt3d_iree
from rt3d_iree.models import build_model, count_macs
from rt3d_iree.prune.importance import magnitude_scores, reference_rms, select_to_rate
from rt3d_iree.prune.slim import dead_channels, drop_dead_channels
from rt3d_iree.prune.structure import ModelUnits, Structure

from .test_graph import _randomize


def _pruned(name: str, scheme: str, rate: float, shape: tuple[int, ...]) -> tuple[nn.Module, ModelUnits]:
    model = _randomize(build_model(name, 8, 0.125, shape[1], shape[2]), 0).eval()
    units = ModelUnits(model, torch.zeros(1, *shape), Structure(scheme, (8, 4)))
    units.apply(select_to_rate(units, magnitude_scores(units, reference_rms(units)), rate))
    return model.eval(), units


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()


def test_filter_pruned_c3d_becomes_the_dense_model_the_pruner_counted():
    """The slim model's dense MACs are exactly the credited MACs of the filter masks."""
    shape = (3, 16, 32, 32)
    model, units = _pruned("c3d", "filter", 2.6, shape)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        ref = model(x)
    slim = copy.deepcopy(model)
    report = drop_dead_channels(slim)
    assert report.dropped > 0 and "dead channels" in str(report)
    with torch.no_grad():
        _close(slim(x), ref)
    assert sum(count_macs(slim, x[:1]).values()) == units.kept_macs(units.masks_of())
    for name, (before, after) in report.channels.items():
        conv = dict(slim.named_modules())[name]
        assert (conv.out_channels, conv.weight.shape[0]) == (after, after) and after < before


def test_residual_outputs_and_untouched_models_keep_their_channels():
    shape = (3, 16, 16, 16)
    model, _ = _pruned("r2plus1d", "filter", 2.0, shape)
    slim = copy.deepcopy(model)
    report = drop_dead_channels(slim)
    # convs feeding a residual add are not sealed: their channels stay whatever their weights
    assert "layer1.0.conv2.0.3" not in report.channels and "stem.3" not in report.channels
    assert report.dropped > 0  # inside the (2+1)D convs: spatial conv -> BN -> ReLU -> temporal conv
    bn = dict(slim.named_modules())["layer1.0.conv1.0.1"]
    assert bn.num_features == bn.running_mean.numel() == bn.weight.numel()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        _close(slim(x), model(x))
    assert dead_channels(_randomize(build_model("c3d", 8, 0.125, 16, 32), 1).eval()) == {}  # a dense model


def test_grouped_convs_and_the_graph_output_are_left_alone():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv3d(2, 4, 1)
            self.dw = nn.Conv3d(4, 4, 3, padding=1, groups=4)
            self.b = nn.Conv3d(4, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.dw(self.a(x))))

    net = _randomize(Net(), 2).eval()
    with torch.no_grad():
        net.b.weight[:, 1] = 0  # dw's channel 1 unread, but dw is depthwise: kept
    assert dead_channels(net) == {}


def test_every_channel_unread_keeps_one():
    net = _randomize(nn.Sequential(nn.Conv3d(2, 4, 1), nn.ReLU(), nn.Conv3d(4, 3, 1)), 3).eval()
    with torch.no_grad():
        net[2].weight.zero_()
    x = torch.randn(1, 2, 4, 4, 4)
    ref = net(x)
    drop_dead_channels(net)
    assert net[0].out_channels == 1 and net[2].in_channels == 1
    _close(net(x), ref)


@pytest.mark.slow
def test_compiled_filter_pruned_model_is_exact_and_computes_fewer_channels():
    shape = (3, 16, 16, 16)
    model, _ = _pruned("c3d", "filter", 2.6, shape)
    x = torch.randn(1, *shape)
    with torch.no_grad():
        ref = model(x)
    slim = rt3d_iree.compile(model, (x,))
    full = rt3d_iree.compile(model, (x,), drop_dead_channels=False)
    for compiled in (slim, full):
        _close(torch.as_tensor(compiled(x)), ref)
    assert sum(c.dense_macs for c in slim.report.convs) < 0.7 * sum(c.dense_macs for c in full.report.convs)
    dense = build_model("c3d", 8, 0.125, 16, 16)
    assert [p.shape for p in model.parameters()] == [p.shape for p in dense.parameters()]  # the user's model untouched
