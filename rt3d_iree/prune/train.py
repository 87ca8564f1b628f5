"""The pruning run: training phases, masks, checkpoints every epoch, resume, DDP.

``prune(config)`` runs one algorithm end to end. It trains on the CPU by default, and
under ``torchrun`` it trains with DistributedDataParallel over the gloo backend (every
process holds the same masks and penalties; rank 0 writes checkpoints and shows progress).
The algorithms themselves live in :class:`~rt3d_iree.prune.pruner.Pruner`, the object a
user drives from their own loop: this module only schedules its calls over the phases.

Every epoch ends with a checkpoint holding the weights, masks, optimizer, scheduler and
pruner state (reference, penalties, masks), and the epoch counter. Randomness is derived from (seed, epoch) alone, so
a run killed at any point and resumed from its last checkpoint continues exactly as the
uninterrupted run would have.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from ..data import data_sets
from ..errors import Rt3dError
from ..files import check_folder, check_writable
from ..models import build_model
from .checkpoint import load_checkpoint, save_checkpoint
from .config import PruneConfig
from .dist import Dist
from .pruner import Pruner
from .pruners import Phase, plan
from .structure import check_structure

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    checkpoint: Path
    dense_accuracy: float | None
    accuracy: float
    rate: float
    report: dict[str, Any] = field(default_factory=dict)


def datasets(cfg: PruneConfig) -> tuple[Dataset, Dataset, int]:
    """Train and validation sets, and the class count, for ``cfg.data``."""
    return data_sets(cfg.data, cfg.split, cfg.train_clips, cfg.val_clips, cfg.frames, cfg.size, cfg.seed)


def _model_spec(cfg: PruneConfig, num_classes: int) -> dict[str, Any]:
    return {"name": cfg.model, "num_classes": num_classes, "width": cfg.width, "frames": cfg.frames,
            "size": cfg.size}


class Trainer:
    """One pruning run's state: model, pruner (masks, penalties), optimizer, history."""

    def __init__(self, cfg: PruneConfig, workdir: Path, progress: bool = True, resuming: bool = False) -> None:
        self.cfg, self.workdir, self.progress = cfg, Path(workdir), progress
        self.dist = Dist()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.train_set, self.val_set, self.num_classes = datasets(cfg)
        per_rank = len(self.train_set) // self.dist.world
        if per_rank < cfg.batch_size:
            raise Rt3dError(f"{len(self.train_set)} training clips over {self.dist.world} process(es) make no full "
                            f"batch of {cfg.batch_size}", "use more training clips or a smaller --batch-size")
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, self.num_classes, cfg.width, cfg.frames, cfg.size)
        self.example = torch.zeros(1, 3, cfg.frames, cfg.size, cfg.size)
        # Validates the target now, not after an hour of training.
        self.pruner = Pruner(self.model, self.example, cfg.scheme, cfg.group_size, cfg.rate, cfg.algorithm,
                             cfg.lam, cfg.min_keep)
        self.structure, self.units = self.pruner.structure, self.pruner.units
        for n, lyr in self.units.layers.items():
            if (lyr.gm, lyr.gn) != tuple(cfg.group_size):
                logger.info("%s (%d filters x %d channels) is smaller than a %dx%d group: its group is %dx%d",
                            n, lyr.f, lyr.c, *cfg.group_size, lyr.gm, lyr.gn)
        self.dense_accuracy: float | None = None
        self.dense_state: dict[str, torch.Tensor] | None = None
        self.phases = plan(cfg.algorithm, cfg.rate, cfg.reg_epochs, cfg.retrain_epochs, cfg.rounds,
                           0 if cfg.from_dense else cfg.dense_epochs)
        if cfg.from_dense and not resuming:  # a resumed run has the dense weights in its checkpoint
            self._load_dense(cfg.from_dense)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, Any]] = []
        self.teacher: nn.Module | None = None

    @property
    def masks(self) -> dict[str, torch.Tensor] | None:
        return self.pruner.masks

    # -- setup ---------------------------------------------------------------------------------

    def _load_dense(self, path: str) -> None:
        state = load_checkpoint(path)
        spec = state["model_spec"]
        mine = _model_spec(self.cfg, self.num_classes)
        if spec != mine:
            raise Rt3dError(f"dense checkpoint {path} is a {spec}, this run needs {mine}",
                            "pass a dense checkpoint trained with the same model, width, frames, size and data")
        self.model.load_state_dict(state["state_dict"])
        self.dense_accuracy = state.get("accuracy")

    def _epoch_plan(self) -> list[tuple[int, int]]:
        """(phase index, epoch within phase) for every epoch of the run."""
        return [(pi, k) for pi, ph in enumerate(self.phases) for k in range(ph.epochs)]

    def _make_optimizer(self, phase: Phase) -> None:
        lr = self.cfg.lr if phase.kind == "dense" else self.cfg.prune_lr
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr)
        steps = phase.epochs * self._steps_per_epoch()
        if phase.kind == "dense":
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, lr, total_steps=max(steps, 2))
        elif phase.cosine:
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(steps, 1))
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _s: 1.0)

    def _steps_per_epoch(self) -> int:
        per_rank = math.ceil(len(self.train_set) / self.dist.world)
        return max(1, per_rank // self.cfg.batch_size)

    def _begin_phase(self, phase: Phase) -> None:
        """What happens before a phase's first epoch (deterministic, so resume can redo it)."""
        if phase.kind != "dense" and not self.pruner.started:
            self.pruner.start()
            self.dense_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        if phase.prune_to is not None:
            self.pruner.apply(phase.prune_to)
        if phase.kind == "regularize" and (phase.reweight or self.pruner.rounds == 0):
            self.pruner.reweight()
        self._make_optimizer(phase)

    # -- checkpoints ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg),
            "model_spec": _model_spec(self.cfg, self.num_classes),
            "structure": None if self.masks is None else {"scheme": self.structure.scheme,
                                                           "group_size": list(self.structure.group_size)},
            "state_dict": self.model.state_dict(),
            "masks": self.masks,
            "ref_rms": self.pruner.ref,
            "pruner": self.pruner.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epoch": self.epoch,
            "history": self.history,
            "dense_accuracy": self.dense_accuracy,
            "dense_state": self.dense_state,
            "world_size": self.dist.world,
        }

    def resume(self, path: Path) -> None:
        state = load_checkpoint(path)
        if state.get("config") != asdict(self.cfg):
            diff = sorted(k for k in asdict(self.cfg) if state.get("config", {}).get(k) != asdict(self.cfg)[k])
            raise Rt3dError(f"{path} was written by a run with different settings ({', '.join(diff)})",
                            "resume with the same arguments, or start afresh in another work folder")
        if state.get("world_size", 1) != self.dist.world:
            raise Rt3dError(f"{path} was written by {state.get('world_size', 1)} process(es), this run has "
                            f"{self.dist.world}", "resume with the same torchrun --nproc-per-node as the first run")
        self.model.load_state_dict(state["state_dict"])
        self.pruner.load_state_dict(state["pruner"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.dense_accuracy = state["dense_accuracy"]
        self.dense_state = state["dense_state"]
        epochs = self._epoch_plan()
        mid_phase = self.epoch < len(epochs) and epochs[self.epoch][1] > 0
        if self.epoch > 0 and (mid_phase or self.epoch == len(epochs)) and state["optimizer"] is not None:
            # Restore the optimizer of the phase in progress (or the last one, if only the
            # final write was lost); a phase that starts next makes its own.
            self._make_optimizer(self.phases[epochs[self.epoch - 1][0]])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        logger.info("resumed from %s after epoch %d", path, self.epoch)

    # -- training ------------------------------------------------------------------------------

    def _loader(self, dataset: Dataset, train: bool, epoch: int) -> DataLoader:
        if train:
            sampler = DistributedSampler(dataset, self.dist.world, self.dist.rank, shuffle=True,
                                         seed=self.cfg.seed, drop_last=True)
            sampler.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            return DataLoader(dataset, self.cfg.batch_size, sampler=sampler, drop_last=True)
        shard = Subset(dataset, range(self.dist.rank, len(dataset), self.dist.world))
        return DataLoader(shard, 64)

    def evaluate(self) -> float:
        if self.dist.world > 1:  # batch-norm statistics drift apart per rank: evaluate rank 0's model
            for b in self.model.buffers():
                dist.broadcast(b, 0)
        self.model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in self._loader(self.val_set, False, 0):
                correct += int((self.model(x).argmax(1) == y).sum())
                total += len(y)
        correct, total = self.dist.sum(correct, total)
        return correct / max(total, 1)

    def _train_epoch(self, phase: Phase, epoch: int, model: nn.Module) -> dict[str, float]:
        torch.manual_seed(self.cfg.seed * 100_003 + epoch)
        self.model.train()
        loss_sum = reg_sum = 0.0
        steps = 0
        use_kd = phase.kind == "retrain" and self.cfg.distill > 0
        if use_kd and self.teacher is None:
            self.teacher = copy.deepcopy(self.model)
            self.teacher.load_state_dict(self.dense_state)
            self.teacher.eval()
        loader = self._loader(self.train_set, True, epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1} {phase.kind}", leave=False,
                   disable=not (self.progress and self.dist.main), mininterval=1.0)
        for x, y in bar:
            out = model(x)
            loss = nn.functional.cross_entropy(out, y)
            if use_kd:
                with torch.no_grad():
                    t_out = self.teacher(x)
                t = self.cfg.temperature
                kd = nn.functional.kl_div(nn.functional.log_softmax(out / t, 1), nn.functional.softmax(t_out / t, 1),
                                          reduction="batchmean") * t * t
                loss = (1 - self.cfg.distill) * loss + self.cfg.distill * kd
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr = self.optimizer.param_groups[0]["lr"]
            if phase.kind != "dense":  # the dense phase trains before the pruner's reference is taken
                reg_sum += self.pruner.regularize(self.model)
            self.optimizer.step()
            if phase.kind != "dense":
                self.pruner.step(lr)
            self.scheduler.step()
            loss_sum += float(loss.detach())
            steps += 1
            bar.set_postfix(loss=f"{loss_sum / steps:.3f}")
        loss_avg, reg_avg, n = self.dist.sum(loss_sum, reg_sum, steps)
        return {"loss": loss_avg / max(n, 1), "reg": reg_avg / max(n, 1)}

    def run(self, checkpoint_every_epoch: bool = True) -> None:
        model: nn.Module = self.model
        if self.dist.world > 1:
            model = nn.parallel.DistributedDataParallel(self.model)
        epochs = self._epoch_plan()
        last = self.workdir / "last.pt"
        pruning = any(ph.kind != "dense" for ph in self.phases)
        name = f"{self.cfg.algorithm} {self.cfg.scheme} {self.cfg.rate:g}x" if pruning else f"dense {self.cfg.model}"
        outer = tqdm(total=len(epochs), initial=self.epoch, desc=name,
                     disable=not (self.progress and self.dist.main), unit="epoch")
        while self.epoch < len(epochs):
            pi, k = epochs[self.epoch]
            phase = self.phases[pi]
            if k == 0:
                self._begin_phase(phase)
            t0 = time.perf_counter()
            stats = self._train_epoch(phase, self.epoch, model)
            acc = self.evaluate()
            rate = self.units.rate(self.masks) if self.masks is not None else 1.0
            self.history.append({"epoch": self.epoch + 1, "phase": phase.kind, "accuracy": acc, "rate": rate,
                                 "seconds": time.perf_counter() - t0, **stats})
            if phase.kind == "dense" and k == phase.epochs - 1:
                self.dense_accuracy = acc
            self.epoch += 1
            outer.update(1)
            outer.set_postfix(acc=f"{acc:.3f}", rate=f"{rate:.2f}x")
            logger.info("epoch %d %s: loss %.3f acc %.3f rate %.2fx", self.epoch, phase.kind, stats["loss"], acc, rate)
            if checkpoint_every_epoch and self.dist.main:
                save_checkpoint(last, self.state())
            self.dist.barrier()
        outer.close()

    def report(self) -> dict[str, Any]:
        masks = self.masks if self.masks is not None else self.units.full_masks()
        final = self.history[-1]["accuracy"] if self.history else self.evaluate()
        rows = self.pruner.layer_report() if self.pruner.started else self.units.layer_report(masks)
        params = sum(p.numel() for p in self.model.parameters())
        pruned_params = sum(r["params"] - r["kept_params"] for r in rows)
        return {
            "model": self.cfg.model, "width": self.cfg.width,
            "input": f"{self.cfg.frames}x{self.cfg.size}x{self.cfg.size}",
            "scheme": self.cfg.scheme, "group_size": f"{self.cfg.group_size[0]}x{self.cfg.group_size[1]}",
            "algorithm": self.cfg.algorithm, "target_rate": self.cfg.rate,
            "rate": self.units.rate(masks), "macs_dense": int(self.units.dense_macs),
            "macs_pruned": int(self.units.kept_macs(masks)),
            "params_dense": int(params), "params_pruned": int(params - pruned_params),
            "dense_accuracy": self.dense_accuracy, "accuracy": final, "layers": rows,
            "structure_problems": check_structure(self.model, self.structure, self.masks),
            "world_size": self.dist.world,
        }


def prune(cfg: PruneConfig, output: str | Path, workdir: str | Path | None = None, resume: bool = False,
          progress: bool = True) -> RunResult:
    """Run ``cfg`` to the end and write the final checkpoint to ``output`` (atomically).

    ``workdir`` (default ``<output>.work``) holds ``last.pt``, written every epoch;
    ``resume=True`` continues from it.
    """
    output = check_writable(output, "checkpoint")
    workdir = check_folder(workdir if workdir else output.with_name(output.name + ".work"), "work folder")
    last = workdir / "last.pt"
    trainer = Trainer(cfg, workdir, progress, resuming=resume)
    if resume:
        if not last.is_file():
            raise Rt3dError(f"nothing to resume: {last} does not exist", "run without --resume to start afresh")
        trainer.resume(last)
    trainer.run()
    report = trainer.report()
    state = trainer.state()
    state["report"] = report
    state["accuracy"] = report["accuracy"]
    if trainer.dist.main:
        save_checkpoint(output, state)
    trainer.dist.barrier()
    return RunResult(output, report["dense_accuracy"], report["accuracy"], report["rate"], report)


def train_dense(cfg: PruneConfig, output: str | Path, **kw: Any) -> RunResult:
    """Train the dense model only (``cfg.dense_epochs``); its checkpoint seeds pruning runs."""
    trainer_cfg = PruneConfig(**{**asdict(cfg), "from_dense": None})
    output = Path(output)
    workdir = Path(kw.pop("workdir", None) or output.with_name(output.name + ".work"))
    resume = kw.pop("resume", False) and (workdir / "last.pt").is_file()
    trainer = Trainer(trainer_cfg, workdir, kw.pop("progress", True), resuming=resume)
    trainer.phases = [Phase("dense", cfg.dense_epochs, cosine=True)]
    if resume:
        trainer.resume(workdir / "last.pt")
    trainer.run()
    acc = trainer.history[-1]["accuracy"]
    state = trainer.state()
    state["accuracy"] = acc
    state["report"] = trainer.report()
    if trainer.dist.main:
        save_checkpoint(output, state)
    trainer.dist.barrier()
    return RunResult(output, acc, acc, 1.0, state["report"])
