"""Parameter-free motion estimators: what a benchmark clip gives away without learning.

A video benchmark that these solve cannot tell pruning methods apart (the old built-in
task: one bright object over a static background, 98% by background subtraction and
phase correlation). Both estimators return, per clip, the compass class (0-7, as in
:mod:`rt3d_iree.data.benchmark`) nearest to the motion they find:

- :func:`global_motion`: subtract the per-pixel temporal median (the background), then
  phase-correlate frames ``lag`` apart and take the correlation peak;
- :func:`compensated_motion`: phase-correlate the raw frames, take the strongest peak as
  the camera's motion and the strongest peak away from it as the moving object's; the
  class is the object's motion relative to the camera's.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset


def _gray(clip: np.ndarray) -> np.ndarray:
    """[3, T, H, W] -> [T, H, W]."""
    return clip.mean(0)


def _correlation(frames: np.ndarray, lag: int) -> np.ndarray:
    """Phase correlation surface of frames ``lag`` apart, summed over all such pairs
    (index [dy, dx] = the shift that carries frame t onto frame t + lag)."""
    spec = np.fft.fft2(frames - frames.mean(axis=(1, 2), keepdims=True))
    cross = spec[lag:] * np.conj(spec[:-lag])
    cross /= np.abs(cross) + 1e-9
    return np.real(np.fft.ifft2(cross.sum(0)))


def _peak(surface: np.ndarray, exclude: tuple[float, float] | None = None, radius: float = 1.5) -> np.ndarray:
    """(dx, dy) of the surface's maximum (signed shifts), optionally away from ``exclude``."""
    h, w = surface.shape
    sy = (np.arange(h) + h // 2) % h - h // 2
    sx = (np.arange(w) + w // 2) % w - w // 2
    surf = surface.copy()
    if exclude is not None:
        near = (sx[None, :] - exclude[0]) ** 2 + (sy[:, None] - exclude[1]) ** 2 <= radius ** 2
        surf[near] = -np.inf
    iy, ix = np.unravel_index(int(np.argmax(surf)), surf.shape)
    return np.array([sx[ix], sy[iy]], dtype=np.float64)


def _direction_class(v: np.ndarray) -> int:
    """Nearest of 8 compass directions to a velocity (x right, y down); 0 = east, 2 = north."""
    ang = np.arctan2(-v[1], v[0])
    return int(np.round(ang / (2 * np.pi / 8))) % 8


def global_motion(clip: np.ndarray, lag: int = 4) -> int:
    """Background subtraction, then phase correlation of the foreground."""
    g = _gray(clip)
    fg = g - np.median(g, axis=0, keepdims=True)
    return _direction_class(_peak(_correlation(fg, lag)))


def compensated_motion(clip: np.ndarray, lag: int = 4) -> int:
    """The strongest motion other than the camera's, relative to the camera's."""
    surf = _correlation(_gray(clip), lag)
    cam = _peak(surf)
    obj = _peak(surf, exclude=(cam[0], cam[1]))
    return _direction_class(obj - cam)


ESTIMATORS = {"global motion (background subtraction + phase correlation)": global_motion,
              "camera-compensated motion (second phase-correlation peak)": compensated_motion}


def estimator_accuracy(dataset: Dataset, clips: int | None = None) -> dict[str, float]:
    """Top-1 accuracy of every estimator on the first ``clips`` clips of ``dataset``."""
    n = len(dataset) if clips is None else min(clips, len(dataset))  # type: ignore[arg-type]
    hits = dict.fromkeys(ESTIMATORS, 0)
    for i in range(n):
        x, y = dataset[i]
        clip = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        for name, fn in ESTIMATORS.items():
            hits[name] += int(fn(clip) == y)
    return {name: h / max(n, 1) for name, h in hits.items()}
