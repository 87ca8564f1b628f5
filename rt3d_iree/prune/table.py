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

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import Rt3dError
from ..files import atomic_write
from ..models import min_input
from .checkpoint import load_checkpoint, model_from_checkpoint
from .pruners import ALGORITHMS
from .stats import ALPHA, compare, mean_sd
from .structure import Structure, check_structure
from .train import PruneConfig, datasets, prune, train_dense

logger = logging.getLogger(__name__)

Cell = tuple[str, float, str]  # (scheme, FLOPs rate, algorithm)

ROWS: tuple[tuple[str, float], ...] = (("filter", 2.6), ("vanilla", 2.6), ("kgs", 2.6), ("kgs", 3.6))
DEFAULT_GRID: tuple[Cell, ...] = (
    ("filter", 2.6, "reweighted"), ("vanilla", 2.6, "reweighted"), ("kgs", 2.6, "reweighted"),
    ("kgs", 3.6, "heuristic"), ("kgs", 3.6, "fixed"), ("kgs", 3.6, "reweighted"),
)
FULL_GRID: tuple[Cell, ...] = tuple((s, r, a) for s, r in ROWS for a in ALGORITHMS)
# The paper's claims, as adjacent pairs (better, worse) of its two chains:
# reweighted >= fixed >= heuristic (KGS 3.6x) and KGS >= vanilla >= filter (2.6x, reweighted).
ORDERINGS: tuple[tuple[Cell, Cell], ...] = (
    (("kgs", 3.6, "reweighted"), ("kgs", 3.6, "fixed")),
    (("kgs", 3.6, "fixed"), ("kgs", 3.6, "heuristic")),
    (("kgs", 2.6, "reweighted"), ("vanilla", 2.6, "reweighted")),
    (("vanilla", 2.6, "reweighted"), ("filter", 2.6, "reweighted")),
)
# The issue's accuracy claim: reweighted KGS at 3.6x within this many points of dense.
DENSE_GAP_CLAIM: tuple[Cell, float] = (("kgs", 3.6, "reweighted"), 1.5)
# The dense model trained on for the pruned cells' epochs with their schedule, nothing
# pruned. Why: every cell gets reg + retrain epochs more training than the dense model; in
# the first table the filter cell (2.62x) beat its 12-epoch dense model by 12 points, so
# "drop from dense" measured training length, not pruning.
SAME_BUDGET: Cell = ("dense", 1.0, "same budget")


def cell_name(cell: Cell) -> str:
    scheme, rate, algorithm = cell
    return f"{scheme} {rate:g}x {algorithm}"


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
    dense_epochs: int = 12
    reg_epochs: int = 4
    retrain_epochs: int = 4
    rounds: int = 3
    group_size: tuple[int, int] = (8, 4)

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
            if getattr(self, name) < 1:
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
                       val_clips=s.val_clips, dense_epochs=s.dense_epochs, reg_epochs=s.reg_epochs,
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
            "structure_ok": structure_ok, "macs": rep["macs_pruned"], "checkpoint": str(path), "correct": correct}


def prune_table(out: str | Path, settings: TableSettings | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every cell of every seed (skipping finished ones) and write the table files; returns the document."""
    s = settings or TableSettings()
    out = Path(out)
    runs_dir = out / "prune-table"
    runs: list[dict[str, Any]] = []
    bar = tqdm(total=len(s.models) * len(s.seeds) * (2 + len(s.grid)), desc="table cells", unit="cell",
               disable=not progress, position=0)
    for model in s.models:
        for seed in s.seeds:
            base = _config(s, model, seed)
            folder = runs_dir / model / f"seed{seed}"
            dense_path = folder / "dense.pt"
            bar.set_postfix_str(f"{model} seed {seed} dense")
            dense_state = _finished(dense_path, base)
            if dense_state is None:
                logger.info("%s seed %d: training the dense model", model, seed)
                _run(train_dense, base, dense_path, progress)
                dense_state = load_checkpoint(dense_path)
            batches = _val_batches(base)
            correct = _correct(dense_state, batches)
            dense_acc = correct.count("1") / max(len(correct), 1)
            runs.append(_record(model, seed, ("dense", 1.0, "-"), dense_state, dense_path, correct, dense_acc, True))
            bar.update(1)
            bar.set_postfix_str(f"{model} seed {seed} dense, same budget")
            cfg = replace(base, scheme="kgs", rate=1.0, algorithm="fixed", lam=0.0, from_dense=str(dense_path))
            path = folder / "dense_same_budget.pt"
            state = _pruned(cfg, path, dense_state, progress)
            runs.append(_record(model, seed, SAME_BUDGET, state, path, _correct(state, batches), dense_acc, True))
            bar.update(1)
            for cell in s.grid:
                scheme, rate, algorithm = cell
                bar.set_postfix_str(f"{model} seed {seed} {cell_name(cell)}")
                cfg = replace(base, scheme=scheme, rate=rate, algorithm=algorithm, from_dense=str(dense_path))
                path = folder / f"{scheme}_{rate:g}x_{algorithm}.pt"
                logger.info("%s seed %d: %s", model, seed, cell_name(cell))
                state = _pruned(cfg, path, dense_state, progress)
                pruned, _ = model_from_checkpoint(state)
                problems = check_structure(pruned, Structure(scheme, s.group_size), state["masks"])
                if problems:
                    logger.warning("%s seed %d %s: structure problems %s", model, seed, cell_name(cell), problems)
                runs.append(_record(model, seed, cell, state, path, _correct(state, batches), dense_acc,
                                    not problems))
                bar.update(1)
    bar.close()
    doc: dict[str, Any] = {"settings": {**asdict(s), "grid": [list(c) for c in s.grid]}, "runs": runs,
                           **summarize(runs)}
    doc["table"] = format_table(runs)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes
        return doc
    atomic_write(out / "prune_table.json", json.dumps(doc, indent=2))
    atomic_write(out / "prune_table.md", doc["table"] + "\n")
    atomic_write(out / "prune_table.csv", _csv(runs))
    _plot(doc["aggregates"], out / "prune_table.png")
    return doc


# -- summaries: everything below is computed from the per-seed runs alone --------------------------

def _cell_of(run: dict[str, Any]) -> Cell:
    return run["scheme"], float(run["rate_target"]), run["algorithm"]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-cell mean +- sd over seeds (``aggregates``) and the McNemar test of every paper
    ordering whose two cells were both run (``orderings``)."""
    aggregates = []
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        dense_by_seed = {r["seed"]: r["accuracy"] for r in mine if _cell_of(r) == ("dense", 1.0, "-")}
        same_by_seed = {r["seed"]: r["accuracy"] for r in mine if _cell_of(r) == SAME_BUDGET}
        for cell in dict.fromkeys(_cell_of(r) for r in mine):
            rows = [r for r in mine if _cell_of(r) == cell]
            acc, sd = mean_sd([100 * r["accuracy"] for r in rows])
            gap, _ = mean_sd([100 * (dense_by_seed[r["seed"]] - r["accuracy"]) for r in rows])
            same = [100 * (same_by_seed[r["seed"]] - r["accuracy"]) for r in rows if r["seed"] in same_by_seed]
            same_gap = mean_sd(same)[0] if len(same) == len(rows) else None
            aggregates.append({"model": model, "scheme": cell[0], "rate_target": cell[1], "algorithm": cell[2],
                               "seeds": len(rows), "accuracy_mean": acc, "accuracy_sd": sd,
                               "rate_mean": mean_sd([r["rate"] for r in rows])[0],
                               "rate_max_error": max(r["rate"] / r["rate_target"] - 1 for r in rows),
                               "drop_from_dense": gap, "drop_from_dense_same_budget": same_gap,
                               "structure_ok": all(r["structure_ok"] for r in rows)})
    orderings = []
    for model in dict.fromkeys(r["model"] for r in runs):
        by = {(_cell_of(r), r["seed"]): r["correct"] for r in runs if r["model"] == model}
        seeds = sorted({r["seed"] for r in runs if r["model"] == model})
        for better, worse in ORDERINGS:
            paired = [s for s in seeds if (better, s) in by and (worse, s) in by]
            if not paired:
                continue
            cmp = compare(cell_name(better), cell_name(worse), [(by[better, s], by[worse, s]) for s in paired])
            orderings.append({"model": model, **asdict(cmp), "per_seed_diff": list(cmp.per_seed_diff)})
    return {"aggregates": aggregates, "orderings": orderings}


def _pm(mean: float, sd: float | None) -> str:
    return f"{mean:.1f}" if sd is None else f"{mean:.1f} ± {sd:.1f}"


def format_table(runs: list[dict[str, Any]]) -> str:
    """Markdown: Table 1's shape (a row per (model, scheme, rate), a column per algorithm,
    mean ± sd of top-1 over seeds, '-' for cells not run), then the orderings' paired tests."""
    summary = summarize(runs)
    agg = {(a["model"], a["scheme"], a["rate_target"], a["algorithm"]): a for a in summary["aggregates"]}
    n_seeds = max((a["seeds"] for a in summary["aggregates"]), default=0)
    lines = [f"Top-1 accuracy (%), mean ± sd over {n_seeds} seed(s); every cell pruned from its seed's dense model.",
             "",
             "| model | dense top-1 | dense, same budget | scheme | FLOPs rate | heuristic | fixed reg. | reweighted "
             "| rates reached |", "|---|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(a["model"] for a in summary["aggregates"]):
        dense = agg[model, "dense", 1.0, "-"]
        same = agg.get((model, *SAME_BUDGET))
        same_txt = _pm(same["accuracy_mean"], same["accuracy_sd"]) if same else "-"
        for scheme, rate in ROWS:
            cells = {alg: agg.get((model, scheme, rate, alg)) for alg in ALGORITHMS}
            if not any(cells.values()):
                continue
            acc = [_pm(c["accuracy_mean"], c["accuracy_sd"]) if c else "-" for c in cells.values()]
            reached = " / ".join(f"{c['rate_mean']:.2f}x" for c in cells.values() if c)
            lines.append(f"| {model} | {_pm(dense['accuracy_mean'], dense['accuracy_sd'])} | {same_txt} | {scheme} | "
                         f"{rate:g}x | "
                         + " | ".join(acc) + f" | {reached} |")
    lines += ["", "Paper orderings, each a paired exact McNemar test on the same validation clips "
              f"(discordant clips pooled over seeds; two-sided, alpha {ALPHA}, not corrected for multiple tests):",
              "", "| model | claim (A >= B) | A - B (points, mean of seeds) | clips only A got right | "
              "clips only B got right | exact McNemar p | verdict |", "|---|---|---|---|---|---|---|"]
    for o in summary["orderings"]:
        lines.append(f"| {o['model']} | {o['better']} >= {o['worse']} | {o['mean_diff']:+.1f} | {o['b']} | {o['c']} | "
                     f"{o['p']:.3g} | {o['verdict']} |")
    cell, points = DENSE_GAP_CLAIM
    for model in dict.fromkeys(a["model"] for a in summary["aggregates"]):
        a = agg.get((model, *cell))
        if a:
            ok = "within" if a["drop_from_dense"] <= points else "NOT within"
            lines.append(f"\n{model}: {cell_name(cell)} drops {a['drop_from_dense']:.1f} points from dense "
                         f"(mean of seeds; negative = above dense): {ok} the claimed {points:g}.")
            if a["drop_from_dense_same_budget"] is not None:
                gap = a["drop_from_dense_same_budget"]
                ok = "within" if gap <= points else "NOT within"
                lines.append(f"{model}: {cell_name(cell)} drops {gap:.1f} points from the dense model trained "
                             f"as many epochs more, unpruned (the fair reference): {ok} the claimed {points:g}.")
    return "\n".join(lines)


def _csv(runs: list[dict[str, Any]]) -> str:
    """One row per run; the per-clip correctness stays in the JSON (a column of bits helps nobody)."""
    fields = [k for k in runs[0] if k != "correct"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(runs)
    return buf.getvalue()


def _plot(aggregates: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars per (scheme, rate) row, one per algorithm run, sd error bars, dense as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(a["model"] for a in aggregates))
    fig, axes = plt.subplots(1, len(models), figsize=(8 * len(models), 4), squeeze=False)
    width = 0.27
    for ax, model in zip(axes[0], models, strict=True):
        mine = {(a["scheme"], a["rate_target"], a["algorithm"]): a for a in aggregates if a["model"] == model}
        dense = mine["dense", 1.0, "-"]
        rows = [row for row in ROWS if any((*row, alg) in mine for alg in ALGORITHMS)]
        for i, alg in enumerate(ALGORITHMS):
            xs, ys, err = [], [], []
            for j, row in enumerate(rows):
                a = mine.get((*row, alg))
                if a:
                    xs.append(j + (i - 1) * width)
                    ys.append(a["accuracy_mean"])
                    err.append(a["accuracy_sd"] or 0.0)
            if xs:
                ax.bar(xs, ys, width, yerr=err, capsize=3, label=alg)
        d, dsd = dense["accuracy_mean"], dense["accuracy_sd"] or 0.0
        ax.axhline(d, color="k", linestyle="--", label=f"dense {_pm(d, dense['accuracy_sd'])}")
        same = mine.get(SAME_BUDGET)
        if same:
            ax.axhline(same["accuracy_mean"], color="k", linestyle=":",
                       label=f"dense, same budget {_pm(same['accuracy_mean'], same['accuracy_sd'])}")
        if dsd:
            ax.axhspan(d - dsd, d + dsd, color="k", alpha=0.08)
        ax.set_xticks(range(len(rows)), [f"{sch}\n{rate:g}x" for sch, rate in rows])
        ax.set_ylabel("top-1 accuracy (%)")
        low = min([d] + [a["accuracy_mean"] - (a["accuracy_sd"] or 0.0) for a in mine.values()])
        ax.set_ylim(max(0.0, low - 10), 100)
        ax.set_title(f"{model} (synthetic benchmark, mean ± sd over {dense['seeds']} seed(s))")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over a bar
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
