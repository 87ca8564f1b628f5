"""Data sets for training and evaluating the 3D CNNs: real video folders and synthetic clips."""

from __future__ import annotations

from torch.utils.data import Dataset

from ..errors import Rt3dError


def check_data_spec(spec: str) -> tuple[str, str]:
    """(kind, root) of ``synthetic``, ``ucf101:ROOT`` or ``hmdb51:ROOT``; a clear error for anything else."""
    kind, _, root = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not (spec == "synthetic" or (kind in ("ucf101", "hmdb51") and root)):
        raise Rt3dError(f"unknown data set {spec!r}", "use synthetic, ucf101:FOLDER or hmdb51:FOLDER")
    return kind, root


def data_sets(spec: str, split: int, train_clips: int, val_clips: int, frames: int, size: int,
              seed: int) -> tuple[Dataset, Dataset, int]:
    """Train and validation sets, and the class count, for ``spec``: ``synthetic`` (the
    built-in benchmark; ``train_clips`` / ``val_clips`` clips), ``ucf101:ROOT`` or
    ``hmdb51:ROOT`` (official ``split`` 1-3)."""
    if spec == "synthetic":
        from .benchmark import motion_benchmark

        train = motion_benchmark("train", train_clips, frames, size, seed=seed)
        val = motion_benchmark("val", val_clips, frames, size, seed=seed)
        return train, val, train.num_classes
    kind, root = check_data_spec(spec)
    from . import video

    make = video.ucf101 if kind == "ucf101" else video.hmdb51
    train = make(root, split=split, train=True, frames=frames, size=size, seed=seed)
    val = make(root, split=split, train=False, frames=frames, size=size, seed=seed)
    return train, val, len(train.classes)
