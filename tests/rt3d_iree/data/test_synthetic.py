"""The synthetic motion data set: seeded, balanced, and only separable through time."""

from __future__ import annotations

import pytest
import torch

from rt3d_iree.data.synthetic import MotionClips
from rt3d_iree.prune import PruneConfig, load_checkpoint, model_from_checkpoint, train_dense


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


@pytest.mark.slow
def test_small_c3d_learns_it_in_minutes_and_reads_the_order_of_frames(tmp_path):
    """`rt3d prune`'s dense phase (C3D w0.125, 16x32x32, 2000 clips, 8 epochs: about two minutes
    here) passes 90%. Played backwards, a clip moves the opposite way: the trained model then
    names the opposite direction, so it reads the order of frames, not single frames."""
    cfg = PruneConfig(val_clips=400)
    res = train_dense(cfg, tmp_path / "dense.pt", progress=False)
    assert res.accuracy >= 0.90
    state = load_checkpoint(tmp_path / "dense.pt")
    model, _ = model_from_checkpoint(state)
    val = MotionClips(400, seed=2000 + cfg.seed)
    opposite = same = 0
    with torch.no_grad():
        for i in range(0, len(val), 100):
            x = torch.stack([val[j][0] for j in range(i, i + 100)])
            y = torch.tensor([val.label(j) for j in range(i, i + 100)])
            pred = model(x.flip(2)).argmax(1)  # time reversed
            opposite += int((pred == (y + 4) % 8).sum())
            same += int((pred == y).sum())
    assert opposite / len(val) >= 0.8 and same / len(val) <= 0.1, (opposite, same)
