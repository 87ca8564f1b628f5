"""`rt3d prune-table`: the paper's Table 1 on the synthetic benchmark, with width-reduced models.

For each model and each seed: train a dense model (the seed also seeds its data), then
prune it once per grid cell. The default grid is the issue's: filter, vanilla and KGS at
2.6x whole-model FLOPs with reweighted regularization (the paper's method), plus KGS at
3.6x under each algorithm (heuristic, fixed, reweighted); ``full_grid`` runs all four
(scheme, rate) rows under all three algorithms. Every cell starts from its seed's dense
checkpoint and gets the same epoch budget, so the table compares methods, not lengths. The
dense model, trained on for that budget with the same schedule and nothing pruned, is the
reference the accuracy claim is checked against ("dense, same budget").

Each final checkpoint is evaluated clip by clip on its validation set; the correctness
vectors go into prune_table.json, so the paired McNemar tests of the paper's orderings
(stats.py) can be recomputed from the JSON alone (``format_table(doc["runs"])``).
Finished runs are kept in the output folder, so an interrupted table resumes where it
stopped. Results: prune_table.json / .csv / .md and a PNG.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import Rt3dError
from ..files import atomic_write
from ..models import min_input
from ..passes.kgs.options import DEFAULT_GROUP_SIZE
from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import PruneConfig
from .layer_rates import format_layer_rates, layer_rows, summarize_layers
from .structure import Structure, check_structure
from .table_report import (  # noqa: F401  (re-exported: the table's grid and summaries)
    DEFAULT_GRID,
    DENSE,
    DENSE_GAP_CLAIM,
    FULL_GRID,
    ORDERINGS,
    ROWS,
    SAME_BUDGET,
    Cell,
    cell_name,
    format_table,
    plot,
    summarize,
    to_csv,
)
from .train import datasets, prune, train_dense

logger = logging.getLogger(__name__)

# Dense epochs before pruning, per model (else 12). Why R(2+1)D gets more: under the 12-epoch
# schedule its dense models stopped on a plateau near 75% (6 of the 8 classes), and the 16
# epochs every cell trains after them then either left it there or climbed to 91-93%, so the
# cells of one seed differed by 15 points for reasons that had nothing to do with pruning
# (same-budget dense: 78.2% and 92.7%; AMD Zen 5). Pruning should start from a converged model.
TABLE_DENSE_EPOCHS = {"r2plus1d": 24}


def table_dense_epochs(model: str) -> int:
    return TABLE_DENSE_EPOCHS.get(model, 12)


@dataclass(frozen=True)
class TableSettings:
    """What a table run trains; ``quick()`` is the CI-sized variant. Validated on creation,
    so a bad model name or seed list fails before hours of training, not after."""

    models: tuple[str, ...] = ("c3d", "r2plus1d")
    seeds: tuple[int, ...] = (0, 1)
    full_grid: bool = False
    width: float = 0.125
    frames: int = 16
    size: int = 32
    train_clips: int = 2000
    val_clips: int = 1000
    dense_epochs: int | None = None  # None = the model's (TABLE_DENSE_EPOCHS)
    reg_epochs: int = 4
    # Why 12 and not 4: the hard prune costs KGS 3.6x 10-13 points (C3D, seeds 0 and 1) and
    # 4 cosine epochs won back only part of it (83.1% against 91.9% for the dense model given
    # the same 8 epochs, its curve still climbing); with 12 it reached 91.6% against 92-93%
    # (AMD EPYC Zen 5, 2 cores). The table should compare pruned structures, not how fast a
    # damaged model recovers in a short schedule.
    retrain_epochs: int = 12
    rounds: int = 3
    group_size: tuple[int, int] = DEFAULT_GROUP_SIZE

    def __post_init__(self) -> None:
        if not self.models:
            raise Rt3dError("no model to build a table for", "for example --models c3d,r2plus1d")
        for m in self.models:
            min_frames, min_size = min_input(m)  # raises for an unknown model
            if self.frames < min_frames or self.size < min_size:
                raise Rt3dError(f"{m} needs clips of at least {min_frames} frames x {min_size}x{min_size} "
                                f"(got {self.frames} x {self.size}x{self.size})", "raise --frames / --size")
        if not self.seeds:
            raise Rt3dError("no seed given", "for example --seeds 0,1")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise Rt3dError(f"seeds must be distinct and >= 0 (got {list(self.seeds)})", "for example --seeds 0,1")
        for name in ("dense_epochs", "reg_epochs", "retrain_epochs", "rounds", "train_clips", "val_clips"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise Rt3dError(f"{name.replace('_', ' ')} must be >= 1 (got {getattr(self, name)})",
                                f"give a positive --{name.replace('_', '-')}")
        if not self.width > 0:
            raise Rt3dError(f"width must be > 0 (got {self.width})", "for example --width 0.125")

    @property
    def grid(self) -> tuple[Cell, ...]:
        return FULL_GRID if self.full_grid else DEFAULT_GRID

    @classmethod
    def quick(cls) -> TableSettings:
        """CI size: C3D only, one seed, 16x16 frames and a handful of clips (minutes)."""
        return cls(models=("c3d",), seeds=(0,), width=0.125, frames=16, size=16, train_clips=96, val_clips=48,
                   dense_epochs=2, reg_epochs=1, retrain_epochs=1, rounds=1)


def _config(s: TableSettings, model: str, seed: int) -> PruneConfig:
    return PruneConfig(model=model, width=s.width, frames=s.frames, size=s.size, train_clips=s.train_clips,
                       val_clips=s.val_clips, dense_epochs=s.dense_epochs or table_dense_epochs(model),
                       reg_epochs=s.reg_epochs,
                       retrain_epochs=s.retrain_epochs, rounds=s.rounds, group_size=s.group_size, seed=seed)


def _finished(path: Path, cfg: PruneConfig, dense: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """A run's saved result, if it finished with these exact settings (and, for a pruned
    run, from these exact dense weights: a retrained dense model invalidates its cells)."""
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
    except Rt3dError:
        return None
    if state.get("config") != asdict(cfg) or "report" not in state:
        return None
    if dense is not None:
        start = state.get("dense_state") or {}
        if start.keys() != dense["state_dict"].keys() or not all(
                torch.equal(start[k], v) for k, v in dense["state_dict"].items()):
            return None
    return state


def _run(fn: Callable[..., Any], cfg: PruneConfig, path: Path, progress: bool) -> None:
    """Run a cell, continuing its own last epoch checkpoint if a previous table run was cut off."""
    work = path.with_name(path.name + ".work")
    if (work / "last.pt").is_file():
        try:
            fn(cfg, path, progress=progress, resume=True)
            return
        except Rt3dError as exc:
            logger.warning("cannot resume %s (%s): starting it again", path, exc.message)
            shutil.rmtree(work, ignore_errors=True)
    fn(cfg, path, progress=progress)


def _pruned(cfg: PruneConfig, path: Path, dense_state: dict[str, Any], progress: bool) -> dict[str, Any]:
    """The finished run at ``path`` for ``cfg`` from these dense weights, trained now if missing."""
    state = _finished(path, cfg, dense_state)
    if state is None:
        _run(prune, cfg, path, progress)
        state = load_checkpoint(path)
    return state


def _val_batches(cfg: PruneConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The validation clips, generated once per (model, seed) and shared by all its cells."""
    return [(x, y) for x, y in DataLoader(datasets(cfg)[1], 64)]


def _correct(state: dict[str, Any], batches: list[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """Per-clip correctness of a checkpoint as a bitstring ("1" = right), in clip order."""
    model, _ = model_from_checkpoint(state)
    model.eval()
    bits: list[bool] = []
    with torch.no_grad():
        for x, y in batches:
            bits.extend((model(x).argmax(1) == y).tolist())
    return "".join("1" if b else "0" for b in bits)


def _record(model: str, seed: int, cell: Cell, state: dict[str, Any], path: Path, correct: str,
            dense_acc: float, structure_ok: bool) -> dict[str, Any]:
    scheme, rate, algorithm = cell
    rep = state["report"]
    return {"model": model, "seed": seed, "scheme": scheme, "rate_target": rate, "algorithm": algorithm,
            "rate": rep["rate"], "accuracy": correct.count("1") / max(len(correct), 1),
            "reported_accuracy": float(state["accuracy"]), "dense_accuracy": dense_acc,
            "structure_ok": structure_ok, "macs": rep["macs_pruned"], "checkpoint": str(path), "correct": correct,
            "layers": layer_rows(rep)}


def _chain(s: TableSettings, model: str, seed: int, runs_dir: Path) -> list[tuple[Cell, PruneConfig, Path]]:
    """One (model, seed)'s runs in training order: dense, dense with the same budget, the grid."""
    base = _config(s, model, seed)
    folder = runs_dir / model / f"seed{seed}"
    dense_path = folder / "dense.pt"
    out = [(DENSE, base, dense_path),
           (SAME_BUDGET, replace(base, scheme="kgs", rate=1.0, algorithm="fixed", lam=0.0, from_dense=str(dense_path)),
            folder / "dense_same_budget.pt")]
    for cell in s.grid:
        scheme, rate, algorithm = cell
        out.append((cell, replace(base, scheme=scheme, rate=rate, algorithm=algorithm, from_dense=str(dense_path)),
                    folder / f"{scheme}_{rate:g}x_{algorithm}.pt"))
    return out


def _dense(cfg: PruneConfig, path: Path, progress: bool) -> dict[str, Any]:
    state = _finished(path, cfg)
    if state is None:
        logger.info("training the dense model %s", path)
        _run(train_dense, cfg, path, progress)
        state = load_checkpoint(path)
    return state


def _train_chain(s: TableSettings, model: str, seed: int, runs_dir: Path, threads: int) -> None:
    """Train whatever is missing of one (model, seed) chain (a worker process of ``jobs`` > 1)."""
    torch.set_num_threads(threads)
    (_, base, dense_path), *rest = _chain(s, model, seed, runs_dir)
    dense_state = _dense(base, dense_path, False)
    for _, cfg, path in rest:
        _pruned(cfg, path, dense_state, False)


def _train_parallel(s: TableSettings, runs_dir: Path, jobs: int, progress: bool) -> None:
    """Train the (model, seed) chains in ``jobs`` processes, each with its share of the cores.

    Why processes: at width 0.125 one C3D epoch runs 14 s on one thread and not much faster on
    two, so two chains side by side nearly halve the table's time on a 2-core machine. Each
    chain is independent (its own dense model and data) and resumable, so the result is the
    same as in sequence up to thread-count rounding. Progress counts finished runs on disk.
    """
    chains = [(m, seed) for m in s.models for seed in s.seeds]
    jobs = min(jobs, len(chains))
    threads = max(1, torch.get_num_threads() // jobs)
    paths = [path for m, seed in chains for _, _, path in _chain(s, m, seed, runs_dir)]
    bar = tqdm(total=len(paths), desc=f"table runs ({jobs} processes)", unit="run", disable=not progress)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_train_chain, s, m, seed, runs_dir, threads) for m, seed in chains]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=5.0)
            bar.n = sum(p.is_file() for p in paths)
            bar.refresh()
        for f in futures:
            f.result()  # re-raises a worker's error here
    bar.close()


def prune_table(out: str | Path, settings: TableSettings | None = None, progress: bool = True,
                jobs: int = 1) -> dict[str, Any]:
    """Run every cell of every seed (skipping finished ones) and write the table files; returns the document.

    ``jobs`` > 1 trains that many (model, seed) chains at once in worker processes.
    """
    s = settings or TableSettings()
    if not (isinstance(jobs, int) and jobs >= 1):
        raise Rt3dError(f"jobs must be a positive integer (got {jobs!r})", "for example --jobs 2 on a 2-core machine")
    out = Path(out)
    runs_dir = out / "prune-table"
    if jobs > 1:
        _train_parallel(s, runs_dir, jobs, progress)
    runs: list[dict[str, Any]] = []
    bar = tqdm(total=len(s.models) * len(s.seeds) * (2 + len(s.grid)), desc="table cells", unit="cell",
               disable=not progress, position=0)
    for model in s.models:
        for seed in s.seeds:
            (_, base, dense_path), *rest = _chain(s, model, seed, runs_dir)
            bar.set_postfix_str(f"{model} seed {seed} dense")
            dense_state = _dense(base, dense_path, progress)
            batches = _val_batches(base)
            correct = _correct(dense_state, batches)
            dense_acc = correct.count("1") / max(len(correct), 1)
            runs.append(_record(model, seed, DENSE, dense_state, dense_path, correct, dense_acc, True))
            bar.update(1)
            for cell, cfg, path in rest:
                bar.set_postfix_str(f"{model} seed {seed} {cell_name(cell)}")
                logger.info("%s seed %d: %s", model, seed, cell_name(cell))
                state = _pruned(cfg, path, dense_state, progress)
                problems: list = []
                if cell != SAME_BUDGET:
                    pruned, _ = model_from_checkpoint(state)
                    problems = check_structure(pruned, Structure(cell[0], s.group_size), state["masks"])
                    if problems:
                        logger.warning("%s seed %d %s: structure problems %s", model, seed, cell_name(cell), problems)
                runs.append(_record(model, seed, cell, state, path, _correct(state, batches), dense_acc,
                                    not problems))
                bar.update(1)
    bar.close()
    doc: dict[str, Any] = {"settings": {**asdict(s), "grid": [list(c) for c in s.grid]}, "runs": runs,
                           **summarize(runs)}
    doc["table"] = format_table(runs)
    doc["layer_rates"] = summarize_layers(runs)
    doc["layer_table"] = format_layer_rates(runs)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes
        return doc
    atomic_write(out / "prune_table.json", json.dumps(doc, indent=2))
    atomic_write(out / "prune_table.md", "\n\n".join(t for t in (doc["table"], doc["layer_table"]) if t) + "\n")
    atomic_write(out / "prune_table.csv", to_csv(runs))
    plot(doc["aggregates"], out / "prune_table.png")
    return doc
