"""The built-in video benchmark: which way does the red object move through a panning scene?

Pruning methods differ by a point or two, so their benchmark must not be solvable without
learning and must reward model capacity. Every clip is procedural and seeded:

- a grey scene with detail at every scale, seen by a camera that pans in a random
  direction at 1.2-2 px per frame, so nothing is static and "subtract the background"
  fails;
- one target and up to five distractors of the same size, each a low-contrast pattern of
  its own scale and phase with an equal-luminance colour. The target is a red checker;
  most distractors are lures that share one of its two attributes (red stripes, or a
  checker at least 60 degrees of hue away), so only the conjunction singles the target
  out. In grey levels the objects nearly vanish into the scene, so grey-level motion
  analysis sees the camera's motion;
- the class is the target's direction of motion in the frame (8 compass directions,
  0.5-1.4 px per frame); distractors move in random directions at the same speeds;
- each clip has a difficulty d in [0, 1): int(6 d) distractors, colour and contrast
  falling, the camera speeding up, pixel noise growing and the target's direction jittered
  by up to 24 d degrees around its class's (classes are 45 degrees apart) as d grows; the
  easy clips let training get going, the hard ones separate models by capacity.

Positions wrap around the frame, so no single frame says anything about the label.

Why this design (measured with C3D w0.125, 16x32x32, 2000 clips, 12 epochs of the dense
recipe): with the class as the motion against the scene, or with no easy clips, the
model stayed at chance for 4-12 epochs (no cue correlates with the label until the model
has solved most of the task); with objects that stand out in grey levels, background
subtraction + phase correlation finds the target's motion in 33% of clips; with colour
alone marking the target (no lures, distractor hues 90+ degrees away) dense C3D w0.125
reached 94% and w0.0625 95%, so capacity did not pay; with lures but three distractors,
per-pixel noise 0.1 and a faint pattern (contrast 0.4), both widths stopped at 81-82%
(the hardest clips' pattern was below the noise: a limit of the data, not of the model).
Five distractors and noise 0.05 make the hard clips a matter of telling many similar
objects apart, which capacity pays for; a clearer pattern (contrast 0.6) made the objects
stand out in grey levels again (global motion 39%, most of it on the 41% of clips with no
distractor). Training clips are
augmented by the task's 16 symmetries: without, both widths overfit 2000 clips (training
loss 0.15, validation 76-80%).
:mod:`rt3d_iree.data.estimators` holds the parameter-free estimators, and ``rt3d
calibrate`` measures them together with trained models of two widths. With these
defaults (seeds 0 and 1, 1000 validation clips): global motion 25.7%, camera-compensated
motion 14.9% (chance 12.5%), dense C3D w0.125 80.8 +- 4.7%, w0.0625 (3.4x fewer conv
MACs) 74.2 +- 1.3%: 6.6 points lower.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

DIRECTIONS = ("east", "north-east", "north", "north-west", "west", "south-west", "south", "south-east")
SPLIT_SEEDS = {"train": 1000, "val": 2000, "test": 3000}


def _smooth_texture(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """A periodic, smooth random texture in [0, 1]: bilinear upsampling of a coarse grid."""
    coarse = rng.random((cells, cells, channels), dtype=np.float32)
    return _sample(coarse, *np.meshgrid(np.arange(size) * cells / size, np.arange(size) * cells / size,
                                        indexing="ij"))


def _sample(tex: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a periodic texture [S, S, C] at real coordinates (any shape)."""
    s = tex.shape[0]
    y0, x0 = np.floor(ys), np.floor(xs)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    y0, x0 = y0.astype(np.int64) % s, x0.astype(np.int64) % s
    y1, x1 = (y0 + 1) % s, (x0 + 1) % s
    top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
    bottom = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


class PanningClips(Dataset):
    """``n`` clips of 3 x ``frames`` x ``size`` x ``size`` floats (about zero mean, unit
    scale) and their labels (the target's direction of motion in the frame, 0-7).

    Args:
        n: number of clips.
        frames, size: clip shape (T, H = W).
        seed: data set identity: train, validation and test sets use different seeds.
        distractors: at most this many same-size objects moving in random directions (a clip
            of difficulty d in [0, 1) has int(d * (distractors + 1))).
        contrast: the easiest clips' object texture amplitude relative to the scene's;
            it falls to 0.4 of that at difficulty 1, and the camera's top speed rises from
            1.4 to 2 px per frame.
        colour: the easiest clips' colour offset (RGB amplitude, pixel values in [0, 1]);
            it falls to 0.35 of that at difficulty 1.
        jitter: the hardest clips' target direction lies within this many degrees of its
            class's (the classes are 45 degrees apart); d times that at difficulty d.
        lures: the share of distractors that share one attribute with the target (half
            red stripes, half a checker of another hue); the other distractors are stripes
            or checkers of another hue. 0 gives colour-only distractors (an easier task).
        hue_gap: distractor hues lie at least this many degrees from the target's red.
        noise: per-pixel, per-frame Gaussian noise std at difficulty 0.5 (half of it on the
            easiest clips, 1.5x on the hardest; pixel values are in [0, 1]).
        augment: return each clip under one of the 16 symmetries that map the task onto
            itself (the square's 8 rotations and reflections, times playing it backwards),
            drawn from (seed, index, epoch), with the label mapped to match. Training sets
            use it: 2000 clips otherwise let C3D overfit and hide what capacity is worth.
            :meth:`label` stays the clip's own label; ``set_epoch`` picks new symmetries.
        cache: keep rendered clips in memory (float16), so later epochs skip rendering.
    """

    def __init__(self, n: int, frames: int = 16, size: int = 32, seed: int = 0, distractors: int = 5,
                 contrast: float = 0.4, colour: float = 0.6, noise: float = 0.05, jitter: float = 24.0,
                 lures: float = 0.7, hue_gap: float = 60.0, augment: bool = False,
                 cache: bool = True) -> None:
        if n < 1 or frames < 2 or size < 8:
            raise ValueError(f"need n >= 1, frames >= 2 and size >= 8 (got {n}, {frames}, {size})")
        self.n, self.frames, self.size, self.seed = n, frames, size, seed
        self.distractors, self.contrast, self.colour, self.noise = distractors, contrast, colour, noise
        self.jitter, self.lures, self.hue_gap = jitter, lures, hue_gap
        self.augment, self.epoch = augment, 0
        self.classes = list(DIRECTIONS)
        self.num_classes = len(DIRECTIONS)
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return self.n

    def label(self, index: int) -> int:
        """Labels are balanced: clip i has class i mod 8."""
        return index % self.num_classes

    def set_epoch(self, epoch: int) -> None:
        """Draw new symmetries (``augment``): a resumed run calls it, as DDP samplers expect."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        y = self.label(index)
        if self._cache is not None and index in self._cache:
            x = self._cache[index].float()
        else:
            x = torch.from_numpy(self.render(index))
            if self._cache is not None:
                self._cache[index] = x.half()
                x = self._cache[index].float()  # cached or not, the same values
        if self.augment:
            code = int(np.random.default_rng([self.seed, index, self.epoch, 7]).integers(16))
            x, y = symmetry(x, y, code)
        return x, y

    def motion(self, index: int) -> dict[str, np.ndarray]:
        """The clip's ground truth (px / frame, x right, y down): the camera's velocity, each
        object's (target first) on the screen and against the scene, and the difficulty."""
        return self._draw(np.random.default_rng([self.seed, index]), self.label(index))[0]

    def _draw(self, rng: np.random.Generator, y: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        s = self.size
        # Each clip has its own difficulty: easy clips (few distractors, high contrast, a slow
        # camera) let training get going; hard ones separate models by capacity.
        d = rng.uniform(0, 1) ** 2  # half the clips below 0.25: enough easy ones to learn from
        k = 1 + min(self.distractors, int(d * (self.distractors + 1)))
        scale = s / 32
        cam_dir = rng.uniform(0, 2 * np.pi)
        cam = rng.uniform(1.2, 1.4 + 0.6 * d) * scale * np.array([np.cos(cam_dir), np.sin(cam_dir)])
        target = 2 * np.pi * y / 8 + rng.uniform(-1, 1) * np.radians(self.jitter) * d
        dirs = np.concatenate([[target], rng.uniform(0, 2 * np.pi, k - 1)])
        speeds = rng.uniform(0.5, 1.4, k) * scale
        # Image y grows downwards: "north" is -y.
        screen = np.stack([speeds * np.cos(dirs), -speeds * np.sin(dirs)], 1)
        # The scene moves across the screen by -camera: against it, an object moves by screen + camera.
        truth = {"camera": cam, "screen": screen, "relative": screen + cam, "difficulty": np.array(d)}
        params = {
            "contrast": self.contrast * (1.0 - 0.6 * d),
            "colour": self.colour * (1.0 - 0.65 * d),
            "start": rng.uniform(0, s, (k, 2)),
            "radius": np.full(k, 0.17 * s) * rng.uniform(0.9, 1.1, k),
            "scene": np.repeat(self._scene(rng, 2 * s), 3, axis=2),
            "flicker": 1 + rng.normal(0, 0.05, self.frames),
            "noise": self.noise * (0.5 + d),
            "hue": np.concatenate([[0.0], rng.uniform(np.radians(self.hue_gap),
                                                      2 * np.pi - np.radians(self.hue_gap), k - 1)]),
            "stripes": np.zeros(k, bool),
            "angle": rng.uniform(0, np.pi, k),
            "phase": rng.uniform(0, 2 * np.pi, (k, 2)),
            "period": rng.uniform(0.3, 0.45, k),
        }
        # Lures share one attribute with the target: red with stripes, or a checker of another
        # hue; only the conjunction (red AND checker) singles the target out.
        lure = rng.random(k) < self.lures
        lure[0] = False
        red = lure & (rng.random(k) < 0.5)
        params["hue"] = np.where(red, 0.0, params["hue"])
        params["stripes"] = red | (~lure & (np.arange(k) > 0) & (rng.random(k) < 0.5) & (self.lures > 0))
        return truth, params

    @staticmethod
    def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
        """A grey scene with detail at every scale (coarse blobs to single pixels), so the
        camera's motion dominates any phase correlation of whole frames."""
        octaves = [_smooth_texture(rng, size, cells, 1) - 0.5 for cells in (8, 16, 32, size)]
        return 0.5 + 0.5 * sum(w * o for w, o in zip((0.35, 0.25, 0.2, 0.2), octaves, strict=True))

    def render(self, index: int) -> np.ndarray:
        """Draw clip ``index``: float32 [3, T, H, W]."""
        rng = np.random.default_rng([self.seed, index])
        truth, p = self._draw(rng, self.label(index))
        t_n, s = self.frames, self.size
        t = np.arange(t_n, dtype=np.float32)[:, None, None]
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        cam = truth["camera"]
        # The scene moves by -camera (the camera pans by +camera).
        clip = _sample(p["scene"], yy[None] + cam[1] * t, xx[None] + cam[0] * t)  # [T, H, W, 3]
        amp = 0.25 * p["contrast"]
        for j in range(len(p["radius"])):
            v = truth["screen"][j]
            cx = (p["start"][j, 0] + v[0] * t) % s
            cy = (p["start"][j, 1] + v[1] * t) % s
            dx = (xx[None] - cx + s / 2) % s - s / 2  # torus offsets from the object's centre
            dy = (yy[None] - cy + s / 2) % s - s / 2
            r = p["radius"][j]
            alpha = np.clip(r + 0.5 - np.sqrt(dx * dx + dy * dy), 0, 1)[..., None]  # anti-aliased edge
            # Every object carries a checker texture of its own scale and phase, and a colour of
            # the same luminance (a zero-sum RGB offset): red for the target, a hue at least 90
            # degrees away for a distractor. Grey-level motion cues cannot single the target out.
            period = p["period"][j] * r
            if p["stripes"][j]:
                a = p["angle"][j]
                pattern = np.sign(np.sin(np.pi * (dx * np.cos(a) + dy * np.sin(a)) / period + p["phase"][j, 0]))
            else:
                pattern = np.sign(np.sin(np.pi * dx / period + p["phase"][j, 0])
                                  * np.sin(np.pi * dy / period + p["phase"][j, 1]))
            h = p["hue"][j]
            chroma = p["colour"] * np.array([np.cos(h), np.cos(h - 2 * np.pi / 3), np.cos(h + 2 * np.pi / 3)])
            obj = 0.5 + amp * pattern[..., None] + chroma.astype(np.float32)
            clip = clip * (1 - alpha) + obj * alpha
        clip = clip * p["flicker"][:, None, None, None].astype(np.float32)
        clip += rng.normal(0, p["noise"], clip.shape).astype(np.float32)
        clip = (clip - 0.5) / 0.25
        return np.ascontiguousarray(clip.transpose(3, 0, 1, 2), dtype=np.float32)


def symmetry(clip: torch.Tensor, label: int, code: int) -> tuple[torch.Tensor, int]:
    """Symmetry ``code`` (0-15: bits transpose, flip rows, flip columns, reverse time) of a
    clip [C, T, H, W] and its direction label. The direction angle a (east = 0, north = 90
    degrees; image rows grow southwards) maps as: transposing rows and columns to 270 - a,
    flipping rows (north-south) to -a, flipping columns (east-west) to 180 - a, playing
    backwards to a + 180. Classes are 45 degrees apart, so each is an exact permutation."""
    if code & 1:
        clip, label = clip.transpose(2, 3), 6 - label
    if code & 2:
        clip, label = clip.flip(2), -label
    if code & 4:
        clip, label = clip.flip(3), 4 - label
    if code & 8:
        clip, label = clip.flip(1), label + 4
    return clip.contiguous(), label % len(DIRECTIONS)


def motion_benchmark(split: str = "train", n: int | None = None, frames: int = 16, size: int = 32,
                     seed: int = 0, **options: float) -> PanningClips:
    """The benchmark's ``split`` ("train", "val" or "test") as a torch Dataset of
    (clip [3, T, H, W] float tensor, int label in 0-7).

    Splits never share a clip (each has its own seed); ``seed`` shifts all three, so runs
    with different seeds see different data. Defaults: 2000 training clips, 1000 for the
    others; the training split is augmented by the task's 16 symmetries (``augment``). Evaluate any model on it::

        val = motion_benchmark("val", frames=16, size=32)
        loader = torch.utils.data.DataLoader(val, batch_size=64)
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {', '.join(SPLIT_SEEDS)} (got {split!r})")
    count = n if n is not None else (2000 if split == "train" else 1000)
    options.setdefault("augment", split == "train")
    return PanningClips(count, frames, size, seed=SPLIT_SEEDS[split] + seed, **options)  # type: ignore[arg-type]
