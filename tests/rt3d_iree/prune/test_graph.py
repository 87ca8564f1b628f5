"""Removed filters: which layers read their channels (torch.fx), the FLOPs credit, and the fold."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from rt3d_iree.models import build_model
from rt3d_iree.prune.importance import magnitude_scores, reference_rms, select_to_rate
from rt3d_iree.prune.structure import ModelUnits, Structure, check_structure


def _units(model: nn.Module, shape: tuple[int, ...], scheme: str = "filter", group: tuple[int, int] = (8, 4)):
    return ModelUnits(model, torch.zeros(1, *shape), Structure(scheme, group))


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Nonzero biases, BN affine and running statistics, so every constant is a real one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


def _filter_masks(units: ModelUnits, removed: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    masks = units.full_masks()
    for name, rows in removed.items():
        masks[name][rows] = False
    return masks


def test_c3d_chain_links_every_conv_to_the_next_and_the_last_to_the_classifier():
    units = _units(build_model("c3d", 8, 0.125, 16, 32), (3, 16, 32, 32))
    g = units.graph
    assert g.order == list(units.layers)
    for a, b in zip(g.order, g.order[1:], strict=False):
        assert [(lk.consumer, lk.kind) for lk in g.links[a]] == [(b, "conv")]
    last = g.links[g.order[-1]]
    # pool5 leaves 1 x 2 x 2 positions per channel at 32x32: 4 classifier inputs per channel
    assert [(lk.consumer, lk.kind, lk.spatial) for lk in last] == [("classifier.0", "linear", 4)]
    assert all(g.sealed.values())


def test_residual_adds_and_concatenations_get_no_credit():
    units = _units(build_model("r2plus1d", 8, 0.125, 16, 16), (3, 16, 16, 16))
    g = units.graph
    # the conv before a residual add: not linked, and its BN shift must stay
    assert g.links["layer1.0.conv2.0.3"] == [] and not g.sealed["layer1.0.conv2.0.3"]
    assert g.links["layer2.0.downsample.0"] == []
    # the stem feeds block 1's first conv (linked) and its identity shortcut (an add: not sealed)
    assert [lk.consumer for lk in g.links["stem.3"]] == ["layer1.0.conv1.0.0"] and not g.sealed["stem.3"]
    # inside a (2+1)D conv: spatial conv -> BN -> ReLU -> temporal conv
    assert [lk.consumer for lk in g.links["layer1.0.conv1.0.0"]] == ["layer1.0.conv1.0.3"]
    assert g.batchnorms["layer1.0.conv1.0.0"] == ["layer1.0.conv1.0.1"]
    assert g.bn_after["layer1.0.conv1.0.3"] == "layer1.0.conv1.1"
    s3d = _units(build_model("s3d", 8, 0.125, 8, 16), (3, 8, 16, 16)).graph
    # a mixed block's 1x1x1 branch goes straight into the concatenation
    assert s3d.links["features.mixed_3b.branch0.0"] == [] and not s3d.sealed["features.mixed_3b.branch0.0"]
    assert [lk.consumer for lk in s3d.links["features.mixed_3b.branch1.0.0"]] == ["features.mixed_3b.branch1.1.0"]


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv3d(2, 4, 1)
        self.b = nn.Conv3d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        if y.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            y = y * 2
        return self.b(y)


def test_an_untraceable_model_gets_no_credit_and_a_warning(caplog):
    model = _Untraceable()
    with caplog.at_level(logging.WARNING, logger="rt3d_iree.prune.graph"):
        units = _units(model, (2, 2, 4, 4))
    assert any(r.name == "rt3d_iree.prune.graph" and "cannot trace" in r.message for r in caplog.records)
    masks = _filter_masks(units, {"a": [1]})
    assert units.kept_macs(masks) == units.kept_macs(masks, credit=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    units.apply(masks)  # zeroes the filter, folds nothing
    after = model.state_dict()
    assert torch.equal(after["a.weight"][1], torch.zeros_like(before["a.weight"][1]))
    assert torch.equal(after["b.weight"], before["b.weight"]) and torch.equal(after["a.bias"], before["a.bias"])


class _Tiny(nn.Module):
    """C3D-like: biased convs and ReLUs, a pool, an unpadded 3x3x3 conv, flatten -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv3d(2, 4, 1)
        self.c2 = nn.Conv3d(4, 3, 1)
        self.c3 = nn.Conv3d(3, 2, 3)
        self.fc = nn.Linear(2 * 2 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool3d(torch.relu(self.c1(x)), 2)
        x = torch.relu(self.c3(torch.relu(self.c2(x))))
        return self.fc(torch.flatten(x, 1))


def test_credit_matches_a_hand_count():
    units = _units(_Tiny(), (2, 8, 8, 8))
    # c1: 8^3 positions x 4 x 2 = 4096; c2: 4^3 x 3 x 4 = 768; c3: 2^3 x 2 x 3 x 27 = 1296; fc: 16 x 5 = 80
    assert [lyr.macs for lyr in units.layers.values()] == [4096, 768, 1296]
    assert units.dense_macs == 4096 + 768 + 1296 + 80
    masks = _filter_masks(units, {"c1": [1], "c2": [0]})
    own = 4096 * 3 / 4 + 768 * 2 / 3 + 1296 + 80  # each conv charged for its own zeros
    assert units.kept_macs(masks, credit=False) == pytest.approx(own)
    # c2 loses input channel 1 of 4 as well; c3 loses input channel 0 of 3
    credited = 4096 * 3 / 4 + 768 * (2 / 3) * (3 / 4) + 1296 * 2 / 3 + 80
    assert units.kept_macs(masks) == pytest.approx(credited)
    # removing c3's filter 1 also frees its 8 flattened features in fc (8 x 5 MACs)
    masks["c3"][1] = False
    credited = 4096 * 3 / 4 + 768 * (2 / 3) * (3 / 4) + 1296 * (1 / 2) * (2 / 3) + 80 - 40
    assert units.kept_macs(masks) == pytest.approx(credited)
    report = {r["layer"]: r for r in units.layer_report(masks)}
    assert (report["c2"]["dead_inputs"], report["c3"]["dead_inputs"], report["c3"]["dead_outputs"]) == (1, 1, 1)


def test_removal_cascades_under_vanilla_groups():
    """A filter whose only kept weights read a removed channel is removed too."""
    units = _units(_Tiny(), (2, 8, 8, 8), "vanilla", (1, 1))  # units are single (filter, channel) kernels
    masks = units.full_masks()
    masks["c1"][0, :] = False  # c1 filter 0 removed: c2's channel 0 is dead
    masks["c2"][2, 1:] = False  # c2 filter 2 keeps only channel 0: dead as well
    dead = units.dead_channels(masks)
    assert dead["c1"].tolist() == [True, False, False, False]
    assert dead["c2"].tolist() == [False, False, True]
    # c3: 1296 MACs over 3 channels; channel 2 of 3 dead
    assert units.layer_report(masks)[2]["kept_macs"] == 1296 * 2 // 3


@pytest.mark.parametrize("scheme", ["filter", "kgs"])
def test_fold_is_exact_for_unpadded_consumers_and_the_classifier(scheme):
    model = _randomize(_Tiny(), 0)
    units = _units(model, (2, 8, 8, 8), scheme, (2, 1))
    masks = units.full_masks()
    if scheme == "filter":
        masks["c1"][[0, 1]] = False
        masks["c2"][2] = False
        masks["c3"][1] = False  # read by the classifier through flatten
    else:  # every KGS unit of a filter group: the group's filters are removed as well
        masks["c1"][0] = False  # rows 0-1
        masks["c2"][1] = False  # row 2 (the ragged last group)
    assert units.dead_channels(masks)["c1"].tolist() == [True, True, False, False]
    assert units.dead_channels(masks)["c2"].tolist() == [False, False, True]
    x = torch.randn(3, 2, 8, 8, 8)
    reference = _randomize(_Tiny(), 0)
    ModelUnits(reference, torch.zeros(1, 2, 8, 8, 8), Structure(scheme, (2, 1))).apply(masks, fold=False)
    units.apply(masks)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert torch.equal(model.c1.bias[:2], torch.zeros(2))  # the producer's constant is gone...
    assert torch.equal(model.c2.weight[:, :2], torch.zeros(3, 2, 1, 1, 1))  # ...and so are the columns reading it
    assert not torch.equal(model.c2.bias, reference.c2.bias)  # moved into the consumer's bias
    assert check_structure(model, Structure(scheme, (2, 1)), masks) == []
    # an optimizer step (Adam's momentum) moves folded entries: apply puts them back to zero,
    # without folding again (the masks did not change), as it does for pruned weights
    with torch.no_grad():
        folded = model(x)
        bias = model.c2.bias.clone()
        model.c1.bias[:2] += 1.0
        model.c2.weight[:, :2] += 0.1
        model.fc.weight[:, :] += 0.01 if scheme == "filter" else 0.0
        model.c2.weight.grad = torch.ones_like(model.c2.weight)
    units.apply(masks)
    assert torch.equal(model.c1.bias[:2], torch.zeros(2))
    assert torch.equal(model.c2.weight[:, :2], torch.zeros(3, 2, 1, 1, 1))
    assert torch.equal(model.c2.weight.grad[:, :2], torch.zeros(3, 2, 1, 1, 1))
    assert torch.equal(model.c2.bias, bias)
    if scheme == "filter":  # c3's filter 1 feeds fc features 8..15
        assert torch.equal(model.fc.weight[:, 8:], torch.zeros(5, 8))
        with torch.no_grad():
            model.fc.weight[:, :8] -= 0.01
    with torch.no_grad():
        assert torch.allclose(model(x), folded, atol=1e-5)


def _conv_bn_relu_conv(k: int, pad: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, 6, 3, padding=1, bias=False), nn.BatchNorm3d(6), nn.ReLU(),
        nn.Conv3d(6, 4, k, padding=pad, bias=False), nn.BatchNorm3d(4), nn.ReLU(),
    )


@pytest.mark.parametrize("k,pad,train_mode", [(1, 0, False), (1, 0, True), (3, 1, False)])
def test_fold_through_batchnorm(k, pad, train_mode):
    """conv -> BN -> ReLU -> conv (no bias) -> BN: the constant goes into the second BN.

    (A padded consumer in training mode is not compared: the borders, which differ, also
    enter the BN's batch statistics, so no position is exact.)
    """
    model = _randomize(_conv_bn_relu_conv(k, pad), 1).train(train_mode)
    reference = _randomize(_conv_bn_relu_conv(k, pad), 1).train(train_mode)
    units = _units(model, (3, 4, 6, 6))
    assert units.graph.bn_after["3"] == "4" and units.graph.sealed["0"]
    masks = _filter_masks(units, {"0": [1, 4]})
    ModelUnits(reference, torch.zeros(1, 3, 4, 6, 6), Structure("filter", (8, 4))).apply(masks, fold=False)
    units.apply(masks)
    x = torch.randn(2, 3, 4, 6, 6)
    with torch.no_grad():
        got, want = model(x), reference(x)
    if pad:  # zero padding, not the constant, at the borders: exact in the interior only
        got, want = got[..., 1:-1, 1:-1, 1:-1], want[..., 1:-1, 1:-1, 1:-1]
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.equal(model[1].weight[[1, 4]], torch.zeros(2)) and torch.equal(model[1].bias[[1, 4]], torch.zeros(2))
    assert model[3].bias is None  # a BN followed: no bias was created
    assert units.kept_macs(masks) == pytest.approx(units.fixed_macs + units.layers["0"].macs * 4 / 6
                                                   + units.layers["3"].macs * 4 / 6)


def test_a_bias_free_consumer_without_batchnorm_gets_a_bias():
    model = _randomize(nn.Sequential(nn.Conv3d(2, 3, 1), nn.Sigmoid(), nn.Conv3d(3, 2, 1, bias=False)), 2)
    reference = _randomize(nn.Sequential(nn.Conv3d(2, 3, 1), nn.Sigmoid(), nn.Conv3d(3, 2, 1, bias=False)), 2)
    units = _units(model, (2, 2, 3, 3))
    masks = _filter_masks(units, {"0": [0]})
    ModelUnits(reference, torch.zeros(1, 2, 2, 3, 3), Structure("filter", (8, 4))).apply(masks, fold=False)
    units.apply(masks)
    assert isinstance(model[2].bias, nn.Parameter)
    x = torch.randn(2, 2, 2, 3, 3)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-6)


def test_c3d_filter_masks_fold_and_keep_their_structure():
    model = build_model("c3d", 8, 0.125, 16, 16)
    units = _units(model, (3, 16, 16, 16))
    masks = select_to_rate(units, magnitude_scores(units, reference_rms(units)), 2.6)
    units.apply(masks)
    assert check_structure(model, Structure("filter", (8, 4)), masks) == []
    assert units.rate(units.masks_of()) == pytest.approx(units.rate(masks), rel=1e-12)
    assert units.rate(masks) > units.rate(masks, credit=False) * 1.2  # the credit is not small for filters


def test_apply_folds_again_when_the_masks_change():
    """Heuristic pruning removes filters round by round: each new one is folded when it dies."""
    model, reference = _randomize(_Tiny(), 4), _randomize(_Tiny(), 4)
    units = _units(model, (2, 8, 8, 8))
    masks = _filter_masks(units, {"c1": [0]})
    units.apply(masks)
    masks["c2"][1] = False  # changed in place
    units.apply(masks)
    later = {n: m.clone() for n, m in masks.items()}
    later["c3"][0] = False  # new tensors
    units.apply(later)
    ModelUnits(reference, torch.zeros(1, 2, 8, 8, 8), Structure("filter", (8, 4))).apply(later, fold=False)
    x = torch.randn(2, 2, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert torch.equal(model.c3.weight[:, 1], torch.zeros(2, 3, 3, 3)) and float(model.c2.bias[1].detach()) == 0.0
