"""The synthetic motion data set: seeded, balanced, and only separable through time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rt3d_iree.data.synthetic import MotionClips
from rt3d_iree.models import C3D


def test_clips_are_reproducible_balanced_and_cached_identically():
    a, b = MotionClips(16, seed=3), MotionClips(16, seed=3, cache=False)
    for i in range(16):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert ya == yb == i % 8 and xa.shape == (3, 16, 32, 32) and xa.dtype == torch.float32
        assert torch.allclose(xa, xb.half().float())  # cached clips are the float16 of the rendered ones
        assert torch.equal(a[i][0], xa)  # second read comes from the cache, same values
    assert not torch.equal(MotionClips(1, seed=4)[0][0], a[0][0])
    with pytest.raises(IndexError):
        a[16]
    with pytest.raises(ValueError, match="num_classes must be 2-8"):
        MotionClips(4, num_classes=9)


def test_single_frames_carry_no_label():
    """Per-class mean images agree: the object's position is uniform in every frame."""
    data = MotionClips(800, seed=5, cache=False)
    means = torch.zeros(8, 3, 32, 32)
    for i in range(len(data)):
        x, y = data[i]
        means[y] += x.mean(1) / 100
    spread = (means - means.mean(0)).abs().mean()
    assert spread < 0.15 * means.abs().mean()


def _train(ordered: bool, epochs: int = 7) -> float:
    torch.manual_seed(0)
    train, val = MotionClips(1200, seed=11), MotionClips(400, seed=12)
    model = C3D(num_classes=8, width=0.125, frames=16, size=32)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    loader = torch.utils.data.DataLoader(train, 32, shuffle=True, drop_last=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * len(loader))
    gen = torch.Generator().manual_seed(0)

    def view(x: torch.Tensor) -> torch.Tensor:
        return x if ordered else x[:, :, torch.randperm(x.shape[2], generator=gen)]

    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(view(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(view(x)).argmax(1) == y).sum()) for x, y in torch.utils.data.DataLoader(val, 100))
    return correct / len(val)


@pytest.mark.slow
def test_small_c3d_learns_it_and_needs_the_order_of_frames():
    """A small C3D passes 90% within minutes; with the frames shuffled it stays near chance."""
    assert _train(ordered=True) >= 0.90
    assert _train(ordered=False) <= 0.35
