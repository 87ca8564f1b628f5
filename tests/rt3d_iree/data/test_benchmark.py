"""The built-in video benchmark: seeded, balanced, labelled by the target's motion, and not
solvable by the parameter-free motion estimators that solved the old task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rt3d_iree.data.benchmark import DIRECTIONS, PanningClips, motion_benchmark, symmetry
from rt3d_iree.prune import PruneConfig, load_checkpoint, model_from_checkpoint, train_dense


def test_clips_are_reproducible_balanced_and_cached_identically():
    a, b = PanningClips(16, seed=3), PanningClips(16, seed=3, cache=False)
    for i in range(16):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert ya == yb == i % 8 and xa.shape == (3, 16, 32, 32) and xa.dtype == torch.float32
        assert torch.allclose(xa, xb.half().float())  # cached clips are the float16 of the rendered ones
        assert torch.equal(a[i][0], xa)  # second read comes from the cache, same values
    assert not torch.equal(PanningClips(1, seed=4)[0][0], a[0][0])
    with pytest.raises(IndexError):
        a[16]
    with pytest.raises(ValueError, match="size >= 8"):
        PanningClips(4, size=4)


def test_splits_and_seeds_never_share_a_clip():
    clips = {(split, seed): motion_benchmark(split, n=2, seed=seed, cache=False)[1][0]
             for split in ("train", "val", "test") for seed in (0, 1)}
    values = list(clips.values())
    assert all(not torch.equal(values[i], values[j]) for i in range(len(values)) for j in range(i))
    assert len(motion_benchmark("val")) == 1000 and len(motion_benchmark("train")) == 2000
    with pytest.raises(ValueError, match="split must be one of"):
        motion_benchmark("validation")


def test_label_is_the_targets_direction_in_the_frame_while_the_camera_pans():
    data = PanningClips(64, seed=7, cache=False)
    for i in range(len(data)):
        m = data.motion(i)
        v = m["screen"][0]
        angle = np.degrees(np.arctan2(-v[1], v[0])) % 360
        offset = (angle - 45 * data.label(i) + 180) % 360 - 180
        assert abs(offset) <= data.jitter * float(m["difficulty"]) + 1e-6  # exact on the easiest clips
        assert np.linalg.norm(m["camera"]) >= 1.2  # the camera always pans
        assert len(m["screen"]) == 1 + int(m["difficulty"] * (data.distractors + 1))  # none to `distractors`
        np.testing.assert_allclose(m["relative"], m["screen"] + m["camera"])


def test_only_the_conjunction_of_colour_and_pattern_marks_the_target():
    """Every distractor differs from the target (a red checker) in hue or pattern, and lures
    share one of the two, so neither colour nor pattern alone finds the target."""
    data = PanningClips(400, seed=9, cache=False)
    lures = others = 0
    for i in range(len(data)):
        _, p = data._draw(np.random.default_rng([data.seed, i]), data.label(i))
        assert p["hue"][0] == 0.0 and not p["stripes"][0]
        for hue, stripes in zip(p["hue"][1:], p["stripes"][1:], strict=True):
            red = hue == 0.0
            assert stripes or not red  # never a second red checker
            assert red or np.radians(data.hue_gap) <= hue <= 2 * np.pi - np.radians(data.hue_gap)
            lure = red or not stripes
            lures, others = lures + lure, others + 1
    assert abs(lures / others - (data.lures + (1 - data.lures) / 2)) < 0.08, lures / others


def test_symmetries_move_a_dot_the_way_their_label_says():
    """Each of the 16 symmetries, applied to a dot moving in each class's direction, moves the
    dot in the direction of the mapped label (rows grow southwards)."""
    steps = [(0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1)]  # (row, column) per class
    for c in range(len(DIRECTIONS)):
        dot = torch.zeros(1, 4, 9, 9)
        for t in range(4):
            dot[0, t, 4 + steps[c][0] * t, 4 + steps[c][1] * t] = 1
        seen = set()
        for code in range(16):
            moved, label = symmetry(dot, c, code)
            (r0, c0), (r1, c1) = (divmod(int(moved[0, t].argmax()), 9) for t in (0, 1))
            assert (r1 - r0, c1 - c0) == steps[label], (c, code)
            seen.add(label)
        # the square's symmetries keep axis directions axis and diagonals diagonal
        assert seen == {k for k in range(8) if k % 2 == c % 2}


def test_training_split_is_augmented_per_epoch_and_reproducibly():
    train, val = motion_benchmark("train", n=32), motion_benchmark("val", n=32)
    assert train.augment and not val.augment
    first = [train[i] for i in range(32)]
    again = [train[i] for i in range(32)]
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again, strict=True))
    train.set_epoch(1)
    second = [train[i] for i in range(32)]
    assert sum(not torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True)) >= 24
    assert sum(a[1] != train.label(i) for i, a in enumerate(first)) >= 16  # labels follow the symmetry


def test_single_frames_carry_no_label():
    """Per-class mean frames differ no more than those of randomly relabelled clips: no
    position, colour or texture in a frame tells the class."""
    data = PanningClips(800, seed=5, cache=False)
    frames = torch.stack([data[i][0].mean(1) for i in range(len(data))])  # [N, 3, H, W]
    labels = torch.tensor([data.label(i) for i in range(len(data))])

    def spread(lab: torch.Tensor) -> float:
        means = torch.stack([frames[lab == c].mean(0) for c in range(8)])
        return float((means - means.mean(0)).abs().mean())

    shuffled = [spread(labels[torch.randperm(len(labels))]) for _ in range(5)]
    assert spread(labels) < 1.3 * max(shuffled), (spread(labels), shuffled)


@pytest.mark.slow
def test_dense_c3d_learns_it_and_reads_the_order_of_frames(tmp_path):
    """The table's dense recipe (C3D w0.125, 16x32x32, 2000 clips, 12 epochs: about four minutes
    here) learns the benchmark (calibrated at 75-90%; `rt3d calibrate`). Played backwards, a
    clip's target moves the opposite way: the model then names the opposite direction, so it
    reads the order of frames, not single frames."""
    cfg = PruneConfig(val_clips=400, dense_epochs=12)
    res = train_dense(cfg, tmp_path / "dense.pt", progress=False)
    assert res.accuracy >= 0.70
    model, _ = model_from_checkpoint(load_checkpoint(tmp_path / "dense.pt"))
    val = motion_benchmark("val", n=400, seed=cfg.seed)
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.tensor([val.label(i) for i in range(len(val))])
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 100].flip(2)).argmax(1) for i in range(0, len(x), 100)])
    opposite, same = float((pred == (y + 4) % 8).float().mean()), float((pred == y).float().mean())
    assert opposite >= 0.6 and same <= 0.1, (opposite, same)
