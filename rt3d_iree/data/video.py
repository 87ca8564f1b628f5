"""UCF101 and HMDB51 read from the folders users download, with their official split files.

Videos are decoded with PyAV (FFmpeg) at ``__getitem__`` time; everything that can be checked
without decoding (folders, split files, listed videos on disk, split number) is checked when the
data set is built, so a wrong path fails in the first second, not hours into training.

PyAV is imported lazily: the rest of ``rt3d_iree`` works without it, and a missing install gives an
:class:`~rt3d_iree.errors.Rt3dError` saying how to get it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import Rt3dError

# Per-channel RGB mean and std (of pixel values scaled to [0, 1]) of Kinetics-400: the statistics
# torchvision's and most public R3D / R(2+1)D / C3D-style video models were trained with, so weights
# pretrained there see inputs in the range they expect. Fixed rather than measured per data set so
# train, eval and deployed models all normalise the same way.
MEAN: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
STD: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)

# Frames are resized so their short side is ``size * RESIZE_RATIO`` before cropping ``size x size``
# (128 -> 112 for the usual 112): the C3D / torchvision video recipe. Training crops at a random
# place, which is the spatial augmentation; evaluation crops the centre at the same scale, so both
# see objects the same size.
RESIZE_RATIO: float = 128 / 112

SPLITS = (1, 2, 3)
_MAX_NAMED = 5  # how many missing videos an error names before summarising with a count


def _import_av() -> ModuleType:
    """Import PyAV only when a video is read, so the package works without it installed."""
    try:
        import av
    except ImportError:
        raise Rt3dError(
            "reading UCF101 / HMDB51 videos needs PyAV, which is not installed",
            "install it with `pip install av` (wheels bundle FFmpeg, nothing else to install)",
        ) from None
    return av


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a split file with their 1-based line numbers.

    The official files have CRLF endings, and some have trailing spaces and a blank last line;
    all of that is stripped here so parsers see clean text.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _check_split_number(split: int, name: str) -> int:
    """Splits are numbered 1-3 in both data sets; anything else is a typo worth stopping on."""
    if isinstance(split, bool) or not isinstance(split, int | np.integer) or int(split) not in SPLITS:
        raise Rt3dError(
            f"{name} split must be 1, 2 or 3, got {split!r}",
            f"{name} ships three official train/test splits; pass split=1, 2 or 3 (papers report split 1 "
            "or the mean of all three)",
        )
    return int(split)


def _check_missing(samples: Sequence[tuple[Path, int]], root: Path, listed_in: Path, name: str, hint: str) -> None:
    """Fail at construction if a video the split lists is not on disk, naming the first few."""
    missing = [p for p, _ in samples if not p.is_file()]
    if not missing:
        return
    named = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in missing[:_MAX_NAMED])
    more = f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else ""
    raise Rt3dError(
        f"{len(missing)} of {len(samples)} {name} videos listed in {listed_in} are missing under {root}: "
        f"{named}{more}",
        hint,
    )


class VideoClips(Dataset):
    """Fixed-length RGB clips from a list of labelled videos.

    Each item is ``(clip, label)`` with ``clip`` float32 ``[3, frames, size, size]`` normalised by
    :data:`MEAN` / :data:`STD`. Training items take a random contiguous window, a random crop and a
    random horizontal flip; evaluation items take the centred window and the centre crop, so eval
    numbers are reproducible. Videos shorter than ``frames`` are looped (frame ``i`` is frame
    ``i mod n``) rather than zero-padded, so the model never sees black frames that real data lacks.

    Randomness comes from a private ``torch.Generator`` seeded from ``(seed, epoch, index)``, not
    from the global RNG: an item is the same whichever worker, process or rank loads it, and a
    resumed run reproduces its epochs after calling :meth:`set_epoch`, as DDP samplers expect.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | Path, int]],
        frames: int = 16,
        size: int = 112,
        train: bool = False,
        seed: int = 0,
        classes: Sequence[str] | None = None,
    ) -> None:
        for arg, value in (("frames", frames), ("size", size)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise Rt3dError(
                    f"{arg} must be a positive integer, got {value!r}",
                    "use e.g. frames=16, size=112 (the C3D / R(2+1)D input)",
                )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise Rt3dError(f"seed must be a non-negative integer, got {seed!r}", "pass e.g. seed=0")
        self.samples: list[tuple[Path, int]] = [(Path(p), int(label)) for p, label in samples]
        if classes is None:
            top = max((label for _, label in self.samples), default=-1)
            classes = [str(i) for i in range(top + 1)]
        self.classes: list[str] = list(classes)
        bad = [(p, label) for p, label in self.samples if not 0 <= label < len(self.classes)]
        if bad:
            p, label = bad[0]
            raise Rt3dError(
                f"label {label} of {p} is outside 0..{len(self.classes) - 1} ({len(self.classes)} classes)",
                "labels are 0-based indices into `classes`; check the split files or the list passed in",
            )
        self.frames = int(frames)
        self.size = int(size)
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random windows/crops the next items use (call once per epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def _generator(self, index: int) -> torch.Generator:
        """A generator private to (seed, epoch, index); SeedSequence mixes them so that e.g. item 1 of
        epoch 0 and item 0 of epoch 1 do not share a stream, as a plain sum would."""
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} videos")
        path, label = self.samples[index]
        gen = self._generator(index) if self.train else None

        def pick(n: int) -> list[int]:
            if n < self.frames:  # loop short videos
                return [i % n for i in range(self.frames)]
            slack = n - self.frames
            start = int(torch.randint(0, slack + 1, (1,), generator=gen)) if gen is not None else slack // 2
            return list(range(start, start + self.frames))

        rgb = _read_frames(path, pick)  # uint8 [T, H, W, 3]
        return self._transform(rgb, gen), label

    def _transform(self, rgb: np.ndarray, gen: torch.Generator | None) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` -> normalised float32 ``[3, T, size, size]``."""
        x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(255.0)  # [T, 3, H, W]
        h, w = x.shape[-2:]
        short = max(self.size, round(self.size * RESIZE_RATIO))
        scale = short / min(h, w)
        nh, nw = max(short, round(h * scale)), max(short, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        if gen is not None:
            top = int(torch.randint(0, nh - self.size + 1, (1,), generator=gen))
            left = int(torch.randint(0, nw - self.size + 1, (1,), generator=gen))
            flip = bool(torch.rand((), generator=gen) < 0.5)
        else:
            top, left, flip = (nh - self.size) // 2, (nw - self.size) // 2, False
        x = x[:, :, top : top + self.size, left : left + self.size]
        if flip:
            x = x.flip(-1)
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        x = (x - mean) / std
        return x.permute(1, 0, 2, 3).contiguous()

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        return (
            f"VideoClips({len(self)} videos, {len(self.classes)} classes, {mode}, frames={self.frames}, "
            f"size={self.size}, seed={self.seed}, epoch={self.epoch})"
        )


def _read_frames(path: Path, pick: Callable[[int], list[int]]) -> np.ndarray:
    """Decode every frame of the first video stream, keep those ``pick(count)`` chooses, as RGB.

    All frames are decoded because AVI files often do not record a reliable frame count, and
    seeking in them is not frame-accurate. Frames stay in their compact decoded (YUV) form until
    picked, so only the kept ones pay for RGB conversion. FFmpeg's errors are turned into an
    :class:`Rt3dError` naming the file; a video that breaks after some frames decoded keeps those
    frames (as torchvision does), because a few real data set files have damaged tails.
    """
    av = _import_av()
    hint = (
        "the file is corrupt, truncated or not a video; re-download or re-extract it, "
        "or remove it from the split file"
    )
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise Rt3dError(f"cannot open video {path}: {_av_reason(e)}", hint) from None
    with container:
        if not container.streams.video:
            raise Rt3dError(f"cannot decode video {path}: it has no video stream", hint)
        decoded: list[Any] = []
        try:
            for frame in container.decode(container.streams.video[0]):
                decoded.append(frame)
        except (av.FFmpegError, OSError) as e:
            if not decoded:
                raise Rt3dError(f"cannot decode video {path}: {_av_reason(e)}", hint) from None
        if not decoded:
            raise Rt3dError(f"cannot decode video {path}: it has no decodable frames", hint)
        chosen = pick(len(decoded))
        first = decoded[chosen[0]]
        # Same width/height for every frame, in case a stream changes resolution midway.
        rgb = [
            decoded[i].to_ndarray(format="rgb24", width=first.width, height=first.height) for i in chosen
        ]
    return np.stack(rgb)


def _av_reason(e: BaseException) -> str:
    """FFmpeg's own one-line reason, without the errno number and path PyAV prefixes it with."""
    reason = getattr(e, "strerror", None) or str(e)
    return re.sub(r"^\[Errno -?\d+\]\s*", "", str(reason)).strip() or type(e).__name__


# --------------------------------------------------------------------------------------- UCF101

_UCF_GET = (
    "download UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from https://www.crcv.ucf.edu/data/UCF101.php, "
    "extract both, and pass the folder holding the 101 class folders (<root>/<ClassName>/v_<ClassName>_gXX_cYY.avi); "
    "the split zip extracts to <root>/ucfTrainTestlist (or pass split_dir= pointing at its folder)"
)


def _ucf_root_hint(root: Path) -> str:
    """The rar extracts to a `UCF-101` folder; say so when the user passed its parent."""
    if (root / "UCF-101").is_dir():
        return f"{root / 'UCF-101'} exists: pass that folder as root (it holds the class folders)"
    return _UCF_GET


def _folders(name: str, root: str | Path, split_dir: str | Path | None, default_split_dir: str, get_hint: str,
             expected: str, split_hint: str) -> tuple[Path, Path]:
    """The data set's root and split folders, each checked to exist with a message that says
    what belongs there and where it comes from."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise Rt3dError(f"{name} folder {root} does not exist", get_hint)
    sdir = Path(split_dir).expanduser() if split_dir is not None else root / default_split_dir
    if not sdir.is_dir():
        raise Rt3dError(f"{name} split folder {sdir} does not exist (expected {expected} in it)", split_hint)
    return root, sdir


def ucf101(
    root: str | Path,
    split: int = 1,
    train: bool = True,
    frames: int = 16,
    size: int = 112,
    split_dir: str | Path | None = None,
    seed: int = 0,
) -> VideoClips:
    """UCF101 (101 actions, 13,320 clips) for one official split, as :class:`VideoClips`.

    Classes and their order come from ``classInd.txt`` (1-based there, 0-based labels here), so
    label ``k`` means the same action as in every paper using the official lists. Train labels are
    read from ``trainlist0N.txt``; the test lists carry none, so test labels come from each video's
    class folder.
    """
    split = _check_split_number(split, "UCF101")
    root, sdir = _folders(
        "UCF101", root, split_dir, "ucfTrainTestlist", _UCF_GET,
        f"classInd.txt, trainlist0{split}.txt, testlist0{split}.txt",
        "extract UCF101TrainTestSplits-RecognitionTask.zip from https://www.crcv.ucf.edu/data/UCF101.php "
        "into the UCF101 folder (it creates ucfTrainTestlist/), or pass split_dir= pointing at it",
    )
    list_name = f"{'train' if train else 'test'}list0{split}.txt"
    for needed in ("classInd.txt", list_name):
        if not (sdir / needed).is_file():
            raise Rt3dError(
                f"UCF101 split file {sdir / needed} does not exist",
                f"{sdir} should hold the files of UCF101TrainTestSplits-RecognitionTask.zip "
                "(classInd.txt, trainlist01-03.txt, testlist01-03.txt); re-extract it or pass split_dir=",
            )

    class_file = sdir / "classInd.txt"
    by_index: dict[int, str] = {}
    for n, line in _read_lines(class_file):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise Rt3dError(
                f"{class_file} line {n} is {line!r}, expected '<number> <ClassName>' like '1 ApplyEyeMakeup'",
                "restore the official classInd.txt from UCF101TrainTestSplits-RecognitionTask.zip",
            )
        by_index[int(parts[0])] = parts[1]
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise Rt3dError(
            f"{class_file} must number its classes 1..N without gaps, found {sorted(by_index)[:10]}...",
            "restore the official classInd.txt from UCF101TrainTestSplits-RecognitionTask.zip",
        )
    classes = [by_index[i] for i in range(1, len(by_index) + 1)]
    # Case-insensitive lookup: UCF101 mixes "HandstandPushups" (folder) and "HandStandPushups" (file).
    label_of = {name.lower(): i for i, name in enumerate(classes)}

    list_file = sdir / list_name
    samples: list[tuple[Path, int]] = []
    for n, line in _read_lines(list_file):
        parts = line.split()
        rel = parts[0].replace("\\", "/")
        folder = rel.split("/")[0] if "/" in rel else ""
        if len(parts) >= 2 and parts[1].isdigit():
            label = int(parts[1]) - 1
            if not 0 <= label < len(classes):
                raise Rt3dError(
                    f"{list_file} line {n} has label {parts[1]}, outside 1..{len(classes)} of {class_file}",
                    "use the split files and classInd.txt from the same UCF101TrainTestSplits zip",
                )
        elif folder.lower() in label_of:
            label = label_of[folder.lower()]
        else:
            raise Rt3dError(
                f"{list_file} line {n} is {line!r}: its class folder {folder!r} is not in {class_file}",
                "lines must look like 'ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi' (test) or with ' 1' "
                "appended (train); restore the official split files",
            )
        samples.append((root / rel, label))
    if not samples:
        raise Rt3dError(
            f"UCF101 split file {list_file} lists no videos",
            "restore the official split file from UCF101TrainTestSplits-RecognitionTask.zip",
        )
    _check_missing(samples, root, list_file, "UCF101", _ucf_root_hint(root))
    return VideoClips(samples, frames=frames, size=size, train=train, seed=seed, classes=classes)


# --------------------------------------------------------------------------------------- HMDB51

_HMDB_GET = (
    "download hmdb51_org.rar and test_train_splits.rar from "
    "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/, extract hmdb51_org.rar "
    "and then each of the 51 <action>.rar inside it into the same folder (<root>/<action>/<video>.avi); "
    "the split rar extracts to <root>/testTrainMulti_7030_splits (or pass split_dir= pointing at its folder)"
)
_HMDB_SPLIT_FILE = re.compile(r"^(?P<action>.+)_test_split(?P<split>[123])\.txt$")
_HMDB_USE = {1: True, 2: False}  # id in the split files -> train?; 0 means "not used in this split"


def hmdb51(
    root: str | Path,
    split: int = 1,
    train: bool = True,
    frames: int = 16,
    size: int = 112,
    split_dir: str | Path | None = None,
    seed: int = 0,
) -> VideoClips:
    """HMDB51 (51 actions, 6,766 clips) for one official 70/30 split, as :class:`VideoClips`.

    The classes are the action names of the split files, sorted, with label = position, which
    matches the usual convention (and torchvision's). In ``<action>_test_splitN.txt`` a video marked
    1 is for training, 2 for testing, 0 is left out of that split.
    """
    split = _check_split_number(split, "HMDB51")
    root, sdir = _folders(
        "HMDB51", root, split_dir, "testTrainMulti_7030_splits", _HMDB_GET,
        f"<action>_test_split{split}.txt files, e.g. brush_hair_test_split{split}.txt",
        "extract test_train_splits.rar from the HMDB51 page into the HMDB51 folder "
        "(it creates testTrainMulti_7030_splits/), or pass split_dir= pointing at it",
    )
    actions_any: set[str] = set()
    files: dict[str, Path] = {}
    for f in sdir.iterdir():
        m = _HMDB_SPLIT_FILE.match(f.name)
        if m and f.is_file():
            actions_any.add(m["action"])
            if int(m["split"]) == split:
                files[m["action"]] = f
    if not files:
        raise Rt3dError(
            f"HMDB51 split folder {sdir} has no <action>_test_split{split}.txt files "
            f"(e.g. brush_hair_test_split{split}.txt)",
            "re-extract test_train_splits.rar into it, or pass split_dir= pointing at the folder holding them",
        )
    lacking = sorted(actions_any - files.keys())
    if lacking:
        named = ", ".join(f"{a}_test_split{split}.txt" for a in lacking[:_MAX_NAMED])
        raise Rt3dError(
            f"HMDB51 split file {sdir / f'{lacking[0]}_test_split{split}.txt'} does not exist "
            f"({len(lacking)} action(s) lack split {split}: {named})",
            "re-extract test_train_splits.rar so every action has all three split files",
        )

    classes = sorted(files)
    samples: list[tuple[Path, int]] = []
    for label, action in enumerate(classes):
        for n, line in _read_lines(files[action]):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise Rt3dError(
                    f"{files[action]} line {n} is {line!r}, expected '<video>.avi <0|1|2>'",
                    "restore the official split file from test_train_splits.rar",
                )
            use = _HMDB_USE.get(int(parts[1]))
            if use is not None and use == bool(train):
                samples.append((root / action / parts[0], label))
    if not samples:
        raise Rt3dError(
            f"HMDB51 split {split} lists no {'training' if train else 'test'} videos in {sdir} "
            f"(no line marked {'1' if train else '2'})",
            "restore the official split files from test_train_splits.rar",
        )
    _check_missing(samples, root, sdir, "HMDB51", _HMDB_GET)
    return VideoClips(samples, frames=frames, size=size, train=train, seed=seed, classes=classes)
