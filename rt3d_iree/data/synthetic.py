"""A built-in, procedural video action data set that only motion separates.

Nothing can be downloaded at run time, and pruning experiments need a task where 3D
convolutions matter. Every clip shows textured objects drifting over a textured
background on a torus (positions wrap around the frame edges); the class is the
direction the main object moves in (8 compass directions, random speed). Because
positions wrap, the object's position in any single frame is uniform whatever the class:
one frame, or a bag of frames in any order, carries no information about the label.
Only the order of frames does, so a model must look across time.

Clips are generated from (seed, index) alone, so a data set is reproducible, needs no
storage, and train and validation sets never share a clip (they use different seeds).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

DIRECTIONS = ("east", "north-east", "north", "north-west", "west", "south-west", "south", "south-east")


class MotionClips(Dataset):
    """``n`` clips of ``frames`` x ``size`` x ``size`` RGB, labels = motion direction.

    Args:
        n: number of clips.
        frames, size: clip shape (T, H = W).
        num_classes: how many of the 8 directions to use (2-8; evenly spaced).
        seed: data set identity; use different seeds for train and validation.
        distractors: objects that move in random directions, so the model must find the
            main one (it is larger and brighter) rather than any motion.
        noise: per-pixel, per-frame Gaussian noise std (pixel values are in [0, 1]).
        cache: keep rendered clips in memory (float16) so later epochs skip rendering.
    """

    def __init__(
        self,
        n: int,
        frames: int = 16,
        size: int = 32,
        num_classes: int = 8,
        seed: int = 0,
        distractors: int = 1,
        noise: float = 0.08,
        cache: bool = True,
    ) -> None:
        if not 2 <= num_classes <= len(DIRECTIONS):
            raise ValueError(f"num_classes must be 2-{len(DIRECTIONS)}, got {num_classes}")
        self.n, self.frames, self.size = n, frames, size
        self.num_classes, self.seed = num_classes, seed
        self.distractors, self.noise = distractors, noise
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None
        step = len(DIRECTIONS) // num_classes if len(DIRECTIONS) % num_classes == 0 else None
        picks = range(0, len(DIRECTIONS), step) if step else range(num_classes)
        self.angles = [2 * np.pi * i / len(DIRECTIONS) for i in picks][:num_classes]
        self.classes = [DIRECTIONS[i] for i in picks][:num_classes]

    def __len__(self) -> int:
        return self.n

    def label(self, index: int) -> int:
        """Labels are balanced: clip i has class i mod num_classes."""
        return index % self.num_classes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        y = self.label(index)
        if self._cache is not None and index in self._cache:
            return self._cache[index].float(), y
        x = self.render(index)
        if self._cache is not None:
            self._cache[index] = x.half()
            x = self._cache[index].float()  # cached or not, the same values
        return x, y

    def render(self, index: int) -> torch.Tensor:
        """Draw clip ``index`` (normalized to about zero mean, unit scale)."""
        rng = np.random.default_rng([self.seed, index])
        y = self.label(index)
        t_n, s = self.frames, self.size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        clip = np.empty((t_n, s, s, 3), dtype=np.float32)
        # Static textured background: smooth random field, different per clip.
        coarse = rng.random((4, 4, 3), dtype=np.float32)
        bg = np.kron(coarse, np.ones((s // 4 + 1, s // 4 + 1, 1), dtype=np.float32))[:s, :s] * 0.4 + 0.1
        objects = []  # (x0, y0, vx, vy, radius, colour, square)
        speed = rng.uniform(0.8, 1.6) * s / 32
        ang = self.angles[y] + rng.uniform(-0.2, 0.2)
        objects.append((rng.uniform(0, s), rng.uniform(0, s), speed * np.cos(ang), -speed * np.sin(ang),
                        rng.uniform(0.14, 0.2) * s, rng.uniform(0.7, 1.0, 3), bool(rng.integers(2))))
        for _ in range(self.distractors):
            a = rng.uniform(0, 2 * np.pi)
            v = rng.uniform(0.3, 1.0) * s / 32
            objects.append((rng.uniform(0, s), rng.uniform(0, s), v * np.cos(a), v * np.sin(a),
                            rng.uniform(0.06, 0.1) * s, rng.uniform(0.3, 0.7, 3), bool(rng.integers(2))))
        for t in range(t_n):
            frame = bg.copy()
            for x0, y0, vx, vy, r, colour, square in objects:
                cx, cy = (x0 + vx * t) % s, (y0 + vy * t) % s
                dx = np.abs(xx - cx)
                dy = np.abs(yy - cy)
                dx, dy = np.minimum(dx, s - dx), np.minimum(dy, s - dy)  # torus distance
                inside = np.maximum(dx, dy) <= r if square else dx * dx + dy * dy <= r * r
                frame[inside] = colour
            clip[t] = frame
        clip += rng.normal(0, self.noise, clip.shape).astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)))  # [3, T, H, W]
        return (x - 0.5) / 0.25
