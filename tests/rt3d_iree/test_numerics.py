"""Every conv form the pass claims to handle, compiled for the host and checked against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rt3d_iree
from rt3d_iree.bench import TOLERANCE, max_rel_error


def kgs_mask(conv: nn.Conv3d, gm: int, gn: int, keep_per_group: list[int], seed: int = 0) -> None:
    """Random KGS zeros; group i keeps keep_per_group[i % len] kernel positions per channel block."""
    rng = np.random.default_rng(seed)
    w = conv.weight.data
    f, c = w.shape[:2]
    kvol = int(np.prod(w.shape[2:]))
    flat = w.view(f, c, kvol)
    for gi, g in enumerate(range(0, f, gm)):
        keep = keep_per_group[gi % len(keep_per_group)]
        for b in range(0, c, gn):
            drop = np.ones(kvol, dtype=bool)
            drop[rng.choice(kvol, min(keep, kvol), replace=False)] = False
            flat[g:g + gm, b:b + gn, torch.from_numpy(drop)] = 0


def check(model: nn.Module, x: torch.Tensor, group_size=(8, 4), expect_rewritten: int | None = None):
    model = model.eval()
    compiled = rt3d_iree.compile(model, (x,), group_size=group_size)
    with torch.no_grad():
        ref = model(x)
    err = max_rel_error(compiled(x), ref)
    assert err <= TOLERANCE, f"max rel error {err:.3g}"
    if expect_rewritten is not None:
        assert compiled.report.rewritten == expect_rewritten, compiled.report
    return compiled


CASES = {
    "dense_3x3x3": (dict(in_channels=8, out_channels=16, kernel_size=3, padding=1), (1, 8, 4, 10, 10)),
    "stride2": (dict(in_channels=4, out_channels=8, kernel_size=3, stride=2, padding=1), (1, 4, 6, 9, 9)),
    "stride_d_only": (dict(in_channels=4, out_channels=8, kernel_size=3, stride=(2, 1, 1)), (1, 4, 7, 8, 8)),
    "dilation2": (dict(in_channels=4, out_channels=8, kernel_size=3, dilation=2, padding=2), (1, 4, 6, 9, 9)),
    "no_bias_pad0": (dict(in_channels=5, out_channels=8, kernel_size=3, bias=False), (1, 5, 5, 7, 7)),
    "k1x3x3": (dict(in_channels=8, out_channels=8, kernel_size=(1, 3, 3), padding=(0, 1, 1)), (1, 8, 3, 8, 8)),
    "k3x1x1": (dict(in_channels=8, out_channels=16, kernel_size=(3, 1, 1), padding=(1, 0, 0)), (1, 8, 4, 6, 6)),
    "k3x7x7_stem": (dict(in_channels=3, out_channels=8, kernel_size=(3, 7, 7), stride=(1, 2, 2),
                         padding=(1, 3, 3)), (1, 3, 4, 14, 14)),
    "batch2": (dict(in_channels=4, out_channels=8, kernel_size=3, padding=1), (2, 4, 3, 6, 6)),
    "ragged_F_and_C": (dict(in_channels=6, out_channels=12, kernel_size=3, padding=1), (1, 6, 3, 7, 7)),
    "k1x1x1": (dict(in_channels=8, out_channels=8, kernel_size=1), (1, 8, 2, 5, 5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_forms_dense(name):
    kwargs, shape = CASES[name]
    check(nn.Conv3d(**kwargs), torch.randn(*shape), expect_rewritten=1)


@pytest.mark.parametrize("name", ["dense_3x3x3", "stride2", "ragged_F_and_C", "batch2"])
def test_conv_forms_kgs_unbalanced(name):
    kwargs, shape = CASES[name]
    conv = nn.Conv3d(**kwargs)
    kgs_mask(conv, 8, 4, keep_per_group=[3, 11])  # groups keep different column counts
    check(conv, torch.randn(*shape), expect_rewritten=1)


def test_fully_pruned_groups():
    conv = nn.Conv3d(8, 24, 3, padding=1)
    with torch.no_grad():
        conv.weight[8:16] = 0
    kgs_mask(conv, 8, 4, keep_per_group=[9])
    check(conv, torch.randn(1, 8, 4, 6, 6), expect_rewritten=1)


def test_fully_pruned_layer_is_bias():
    conv = nn.Conv3d(4, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
    check(conv, torch.randn(1, 4, 3, 5, 5), expect_rewritten=1)


def test_other_group_sizes():
    conv = nn.Conv3d(8, 16, 3, padding=1)
    kgs_mask(conv, 4, 2, keep_per_group=[5, 13])
    check(conv, torch.randn(1, 8, 3, 6, 6), group_size=(4, 2), expect_rewritten=1)


def test_conv_bn_relu_chain():
    model = nn.Sequential(
        nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
        nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(8, 16, (3, 1, 1), padding=(1, 0, 0)),
    )
    for m in model:
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    kgs_mask(model[3], 8, 4, keep_per_group=[4])
    check(model, torch.randn(1, 3, 4, 8, 8), expect_rewritten=3)
