"""`rt3d prune-table`: the paper's Table 1 on the synthetic data set, with width-reduced models.

For each model: train the dense model once, then prune it with every scheme (filter,
vanilla, KGS) under every algorithm (heuristic, fixed, reweighted) to 2.6x whole-model
FLOPs, and KGS again to 3.6x. Every run starts from the same dense checkpoint and gets
the same epoch budget. Finished runs are kept in the output folder, so an interrupted
table resumes where it stopped. Results: prune_table.json / .csv / .md and a PNG.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import Rt3dError
from ..files import atomic_write
from .checkpoint import load_checkpoint, model_from_checkpoint
from .pruners import ALGORITHMS
from .structure import Structure, check_structure
from .train import PruneConfig, prune, train_dense

logger = logging.getLogger(__name__)

ROWS = [("filter", 2.6), ("vanilla", 2.6), ("kgs", 2.6), ("kgs", 3.6)]


@dataclass(frozen=True)
class TableSettings:
    """What a table run trains; ``quick()`` is the CI-sized variant."""

    models: tuple[str, ...] = ("c3d", "r2plus1d")
    width: float = 0.125
    frames: int = 16
    size: int = 32
    train_clips: int = 2000
    val_clips: int = 1000
    dense_epochs: int = 12
    reg_epochs: int = 4
    retrain_epochs: int = 4
    rounds: int = 3
    group_size: tuple[int, int] = (8, 4)
    seed: int = 0

    @classmethod
    def quick(cls) -> TableSettings:
        return cls(width=0.125, frames=16, size=16, train_clips=96, val_clips=48, dense_epochs=2, reg_epochs=1,
                   retrain_epochs=1, rounds=1)


def _config(s: TableSettings, model: str) -> PruneConfig:
    return PruneConfig(model=model, width=s.width, frames=s.frames, size=s.size, train_clips=s.train_clips,
                       val_clips=s.val_clips, dense_epochs=s.dense_epochs, reg_epochs=s.reg_epochs,
                       retrain_epochs=s.retrain_epochs, rounds=s.rounds, group_size=s.group_size, seed=s.seed)


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


def _run(fn: Any, cfg: PruneConfig, path: Path, progress: bool) -> None:
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


def prune_table(out: str | Path, settings: TableSettings | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every cell (skipping finished ones) and write the table files; returns the results."""
    s = settings or TableSettings()
    out = Path(out)
    runs_dir = out / "prune-table"
    results: list[dict[str, Any]] = []
    for model in s.models:
        base = _config(s, model)
        dense_path = runs_dir / model / "dense.pt"
        state = _finished(dense_path, base)
        if state is None:
            logger.info("%s: training the dense model", model)
            _run(train_dense, base, dense_path, progress)
            state = load_checkpoint(dense_path)
        dense_state = state
        dense_acc = float(state["accuracy"])
        results.append({"model": model, "scheme": "dense", "rate_target": 1.0, "algorithm": "-", "rate": 1.0,
                        "accuracy": dense_acc, "dense_accuracy": dense_acc, "structure_ok": True,
                        "macs": state["report"]["macs_dense"], "checkpoint": str(dense_path)})
        for scheme, rate in ROWS:
            for algorithm in ALGORITHMS:
                cfg = replace(base, scheme=scheme, rate=rate, algorithm=algorithm, from_dense=str(dense_path))
                path = runs_dir / model / f"{scheme}_{rate:g}x_{algorithm}.pt"
                state = _finished(path, cfg, dense_state)
                if state is None:
                    logger.info("%s: %s %gx %s", model, scheme, rate, algorithm)
                    _run(prune, cfg, path, progress)
                    state = load_checkpoint(path)
                rep = state["report"]
                pruned, _ = model_from_checkpoint(state)
                problems = check_structure(pruned, Structure(scheme, s.group_size), state["masks"])
                results.append({"model": model, "scheme": scheme, "rate_target": rate, "algorithm": algorithm,
                                "rate": rep["rate"], "accuracy": rep["accuracy"], "dense_accuracy": dense_acc,
                                "structure_ok": not problems, "macs": rep["macs_pruned"], "checkpoint": str(path)})
    doc = {"settings": asdict(s), "results": results}
    table = format_table(results)
    doc["table"] = table
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes
        return doc
    atomic_write(out / "prune_table.json", json.dumps(doc, indent=2))
    atomic_write(out / "prune_table.md", table + "\n")
    atomic_write(out / "prune_table.csv", _csv(results))
    _plot(results, out / "prune_table.png")
    return doc


def format_table(results: list[dict[str, Any]]) -> str:
    """Markdown shaped like the paper's Table 1: one row per (model, scheme, rate), a column per algorithm."""
    lines = ["| model | dense top-1 | scheme | FLOPs rate | heuristic | fixed reg. | reweighted | rates reached |",
             "|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in results):
        rows = [r for r in results if r["model"] == model]
        dense = next(r for r in rows if r["scheme"] == "dense")
        for scheme, rate in ROWS:
            cells = {r["algorithm"]: r for r in rows if r["scheme"] == scheme and r["rate_target"] == rate}
            if not cells:
                continue
            acc = [f"{100 * cells[a]['accuracy']:.1f}" if a in cells else "-" for a in ALGORITHMS]
            reached = "/".join(f"{cells[a]['rate']:.2f}" for a in ALGORITHMS if a in cells)
            lines.append(f"| {model} | {100 * dense['accuracy']:.1f} | {scheme} | {rate:g}x | "
                         + " | ".join(acc) + f" | {reached} |")
    return "\n".join(lines)


def _csv(results: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(results[0]))
    w.writeheader()
    w.writerows(results)
    return buf.getvalue()


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in results))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = [r for r in results if r["model"] == model]
        dense = next(r for r in rows if r["scheme"] == "dense")["accuracy"] * 100
        labels = [f"{sch}\n{rate:g}x" for sch, rate in ROWS]
        for i, alg in enumerate(ALGORITHMS):
            vals = [next((r["accuracy"] * 100 for r in rows if r["scheme"] == sch and r["rate_target"] == rate
                          and r["algorithm"] == alg), 0.0) for sch, rate in ROWS]
            ax.bar([j + (i - 1) * 0.27 for j in range(len(ROWS))], vals, 0.27, label=alg)
        ax.axhline(dense, color="k", linestyle="--", label=f"dense {dense:.1f}")
        ax.set_xticks(range(len(ROWS)), labels)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_ylim(max(0.0, min(dense, *(r["accuracy"] * 100 for r in rows)) - 10), 100)
        ax.set_title(f"{model} (synthetic motion data)")
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
