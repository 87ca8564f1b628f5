"""PruneConfig: everything that defines a pruning run, checked when it is made.

Why its own module: the CLI, the table, calibration and resumed checkpoints all build one,
and each field is refused here, before any data is drawn or an epoch is trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import check_data_spec
from ..errors import Rt3dError
from ..models import check_clip
from ..passes.kgs.options import DEFAULT_GROUP_SIZE
from .pruners import ALGORITHMS
from .structure import Structure

# Dense training's one-cycle peak learning rate per model (Adam), else DEFAULT_DENSE_LR.
# C3D (no normalization layers): at 3e-3 it lost every unit of its second FC layer to a dead
# ReLU in the first epoch on the built-in benchmark and stayed at chance for 12 epochs; at
# 1e-3 seeds 0 and 1 both learn by epoch 3. R(2+1)D (batch norm) learns slowly at 1e-3: after
# 12 epochs seed 0 was at 33.0% and seed 1 at 75.0%; at 3e-3 both reached 74.6-76.8% (Intel
# Xeon, family 6 model 207).
DEFAULT_DENSE_LR = 1e-3
DENSE_LR = {"r2plus1d": 3e-3}


def dense_lr(model: str) -> float:
    return DENSE_LR.get(model, DEFAULT_DENSE_LR)


@dataclass
class PruneConfig:
    """Everything that defines a pruning run (saved in every checkpoint)."""

    model: str = "c3d"
    width: float = 0.125
    frames: int = 16
    size: int = 32
    scheme: str = "kgs"
    group_size: tuple[int, int] = DEFAULT_GROUP_SIZE
    algorithm: str = "reweighted"
    rate: float = 2.6
    data: str = "synthetic"  # "synthetic", "ucf101:ROOT" or "hmdb51:ROOT"
    split: int = 1
    train_clips: int = 2000  # synthetic only
    val_clips: int = 500
    num_classes: int = 8  # unused: the built-in benchmark has 8 classes, real data sets bring their own
    dense_epochs: int = 8  # when not starting from a dense checkpoint
    reg_epochs: int = 4
    retrain_epochs: int = 4
    rounds: int = 3
    lam: float | None = None  # regularization strength; None = the algorithm's default
    lr: float | None = None  # dense training's one-cycle peak; None = the model's (DENSE_LR)
    prune_lr: float = 1e-3  # regularization and retraining
    batch_size: int = 32
    distill: float = 0.0  # weight of knowledge distillation from the dense model in retraining
    temperature: float = 4.0
    min_keep: float = 0.03
    seed: int = 0
    threads: int = 0  # 0 = torch's default
    from_dense: str | None = None  # start from this dense checkpoint instead of training one

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = dense_lr(self.model)
        if not (self.lr > 0 and self.prune_lr > 0):
            raise Rt3dError(f"learning rates must be > 0 (got lr={self.lr}, prune_lr={self.prune_lr})",
                            "for example lr=1e-3")
        try:
            self.group_size = tuple(int(v) for v in self.group_size)  # type: ignore[assignment]
            assert len(self.group_size) == 2
        except (TypeError, ValueError, AssertionError):
            raise Rt3dError(f"pruning needs a group size of two integers, got {self.group_size!r}",
                            "for example group_size=(8, 4) or --group-size 8x4") from None
        Structure(self.scheme, self.group_size)  # validates
        self._check_fields()
        if not self.rate >= 1.0:
            raise Rt3dError(f"FLOPs reduction rate must be >= 1 (got {self.rate})", "for example --rate 2.6")
        if not 0.0 <= self.distill <= 1.0:
            raise Rt3dError(f"distillation weight must be in [0, 1] (got {self.distill})", "for example --distill 0.5")
        if self.batch_size < 1:
            raise Rt3dError(f"batch size must be >= 1 (got {self.batch_size})", "for example --batch-size 32")
        if self.from_dense:
            self.from_dense = str(Path(self.from_dense).resolve())  # resume from any working folder
        elif self.dense_epochs < 1:
            raise Rt3dError("pruning needs a trained dense model: --dense-epochs is 0 and no --from-dense given",
                            "train the dense model first (--dense-epochs 8) or pass --from-dense CHECKPOINT")

    def _check_fields(self) -> None:
        """Refuse a bad field before any data is drawn or an epoch is trained (the Python path has
        no argparse in front of it)."""
        if self.algorithm not in ALGORITHMS:
            raise Rt3dError(f"unknown pruning algorithm {self.algorithm!r}", f"use one of: {', '.join(ALGORITHMS)}")
        if not (isinstance(self.width, (int, float)) and 0 < self.width <= 4):
            raise Rt3dError(f"width must be in (0, 4] (got {self.width!r})", "0.125 is the small CPU variant")
        check_data_spec(self.data)
        check_clip(self.model, self.frames, self.size, self.data == "synthetic")
        counts = {"train_clips": (self.train_clips, 1), "val_clips": (self.val_clips, 1), "rounds": (self.rounds, 1),
                  "dense_epochs": (self.dense_epochs, 0), "reg_epochs": (self.reg_epochs, 0),
                  "retrain_epochs": (self.retrain_epochs, 0), "seed": (self.seed, 0), "threads": (self.threads, 0)}
        for name, (value, low) in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise Rt3dError(f"{name} must be a whole number >= {low} (got {value!r})",
                                f"for example {name}={max(low, 1)}")
        if not (0 < self.min_keep < 1 and self.temperature > 0):
            raise Rt3dError(f"bad min_keep={self.min_keep} or temperature={self.temperature}",
                            "min_keep is a fraction in (0, 1) (0.03) and temperature > 0 (4.0)")
