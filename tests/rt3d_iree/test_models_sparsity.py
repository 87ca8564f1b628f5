"""C3D's published size, and magnitude KGS masks reaching a whole-model FLOPs rate."""

from __future__ import annotations

import pytest
import torch

from rt3d_iree import Rt3dError
from rt3d_iree.models import C3D, count_macs
from rt3d_iree.sparsity import apply_kgs_magnitude, kgs_density


def test_c3d_matches_published_macs_and_params():
    model = C3D(num_classes=101)
    macs = count_macs(model, torch.zeros(1, 3, 16, 112, 112))
    assert round(sum(macs.values()) / 1e9, 1) == 38.5
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 78.4


def test_magnitude_kgs_reaches_whole_model_rate():
    model = C3D(num_classes=10, width=0.125, frames=16, size=56).eval()
    x = torch.zeros(1, 3, 16, 56, 56)
    total = sum(count_macs(model, x).values())
    layers = apply_kgs_magnitude(model, x, 3.0, (8, 4))
    removed = sum(lyr.dense_macs - lyr.kept_macs for lyr in layers)
    assert total / (total - removed) >= 3.0 * 0.98
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Conv3d):
            assert kgs_density(mod.weight, (8, 4)) < 0.6, name


def test_unreachable_rate_is_a_clear_error():
    model = C3D(num_classes=10, width=0.125, frames=16, size=56)
    with pytest.raises(Rt3dError, match="cannot be reached"):
        apply_kgs_magnitude(model, torch.zeros(1, 3, 16, 56, 56), 100.0)
    with pytest.raises(Rt3dError, match="FLOPs rate must be >= 1"):
        apply_kgs_magnitude(model, torch.zeros(1, 3, 16, 56, 56), 0.5)
