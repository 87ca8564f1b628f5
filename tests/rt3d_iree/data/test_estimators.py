"""The parameter-free motion estimators: real (they read a plain moving object), and near
chance on the built-in benchmark (the calibration's first bar: at most 30%)."""

from __future__ import annotations

import numpy as np

from rt3d_iree.data.benchmark import motion_benchmark
from rt3d_iree.data.estimators import ESTIMATORS, compensated_motion, estimator_accuracy, global_motion


def _plain_clips(n: int, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    """What the old built-in task was: one bright disc drifting over a static textured
    background, class = its direction (clip i has class i mod 8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    clips = []
    for i in range(n):
        label = i % 8
        ang = 2 * np.pi * label / 8 + rng.uniform(-0.2, 0.2)
        v = rng.uniform(0.8, 1.6) * np.array([np.cos(ang), -np.sin(ang)])
        bg = np.kron(rng.random((4, 4)), np.ones((8, 8))).astype(np.float32) * 0.4 + 0.1
        x0, y0 = rng.uniform(0, 32, 2)
        frames = []
        for t in range(16):
            dx = (xx - x0 - v[0] * t + 16) % 32 - 16
            dy = (yy - y0 - v[1] * t + 16) % 32 - 16
            frames.append(np.where(dx * dx + dy * dy <= 25, 0.9, bg) + rng.normal(0, 0.08, bg.shape))
        clips.append((np.stack(frames)[None].repeat(3, 0).astype(np.float32), label))
    return clips


def test_estimators_read_a_plain_moving_object():
    """Background subtraction + phase correlation solves the old task (98% measured on it)."""
    clips = _plain_clips(96)
    assert np.mean([global_motion(x) == y for x, y in clips]) >= 0.9


def test_estimators_stay_near_chance_on_the_benchmark():
    acc = estimator_accuracy(motion_benchmark("val", n=240, cache=False))
    assert set(acc) == set(ESTIMATORS)
    assert all(a <= 0.30 for a in acc.values()), acc


def test_a_single_translating_texture():
    """A whole frame translating 2 px per frame upwards is class 2 (north) for the global
    estimator; the compensated one takes it as the camera and reports some other peak."""
    rng = np.random.default_rng(0)
    tex = rng.random((32, 32)).astype(np.float32)
    clip = np.stack([np.roll(tex, -2 * t, axis=0) for t in range(16)])[None].repeat(3, 0)
    clip = clip + 0.1 * rng.random(clip.shape).astype(np.float32)
    assert global_motion(clip) == 2
    assert 0 <= compensated_motion(clip) < 8
