"""Table 1's summaries, computed from the per-seed runs alone: aggregates, paired tests, files.

Why a module of its own: ``prune_table.json`` keeps every run's per-clip correctness, so the
table, its statistics and its picture can be remade from the JSON without any training
(``format_table(doc["runs"])``); nothing here imports torch or trains.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..files import atomic_write
from .pruners import ALGORITHMS
from .stats import ALPHA, compare, mean_sd

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
DENSE: Cell = ("dense", 1.0, "-")  # the dense model every cell starts from


def cell_name(cell: Cell) -> str:
    scheme, rate, algorithm = cell
    return f"{scheme} {rate:g}x {algorithm}"


def _cell_of(run: dict[str, Any]) -> Cell:
    return run["scheme"], float(run["rate_target"]), run["algorithm"]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-cell mean +- sd over seeds (``aggregates``) and the McNemar test of every paper
    ordering whose two cells were both run (``orderings``)."""
    aggregates = []
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        dense_by_seed = {r["seed"]: r["accuracy"] for r in mine if _cell_of(r) == DENSE}
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


def _at_most(gap: float, points: float) -> bool:
    """``gap <= points`` for gaps that are differences of clip counts (30 clips of 2000 is 1.5
    points exactly, but 1.5000000000000013 in floating point)."""
    return round(gap, 9) <= points


def _pm(mean: float, sd: float | None) -> str:
    return f"{mean:.1f}" if sd is None else f"{mean:.1f} ± {sd:.1f}"


CHANCE = 1 / 8  # the built-in benchmark's 8 motion directions
CHANCE_MARGIN = 5.0  # points above chance still counted as chance level


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
        dense = agg[(model, *DENSE)]
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
            ok = "within" if _at_most(a["drop_from_dense"], points) else "NOT within"
            lines.append(f"\n{model}: {cell_name(cell)} drops {a['drop_from_dense']:.1f} points from dense "
                         f"(mean of seeds; negative = above dense): {ok} the claimed {points:g}.")
            if a["drop_from_dense_same_budget"] is not None:
                gap = a["drop_from_dense_same_budget"]
                ok = "within" if _at_most(gap, points) else "NOT within"
                lines.append(f"{model}: {cell_name(cell)} drops {gap:.1f} points from the dense model trained "
                             f"as many epochs more, unpruned (the fair reference): {ok} the claimed {points:g}.")
    at_chance = [a for a in summary["aggregates"] if a["accuracy_mean"] <= 100 * CHANCE + CHANCE_MARGIN]
    if at_chance:
        lines.append(f"\n{len(at_chance)} of {len(summary['aggregates'])} cells are at chance level "
                     f"({100 * CHANCE:g}% for the built-in benchmark's {round(1 / CHANCE)} classes, within "
                     f"{CHANCE_MARGIN:g} points): those models learned nothing, so their accuracies compare nothing "
                     "(--quick trains too little to learn; it checks rates and structure).")
    return "\n".join(lines)


def to_csv(runs: list[dict[str, Any]]) -> str:
    """One row per run; the per-clip correctness stays in the JSON (a column of bits helps nobody)."""
    fields = [k for k in runs[0] if k not in ("correct", "layers")]  # per-conv rates: in the JSON and the md
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(runs)
    return buf.getvalue()


def plot(aggregates: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars per (scheme, rate) row, one per algorithm run, sd error bars, dense as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(a["model"] for a in aggregates))
    fig, axes = plt.subplots(1, len(models), figsize=(8 * len(models), 4), squeeze=False)
    width = 0.27
    for ax, model in zip(axes[0], models, strict=True):
        mine = {(a["scheme"], a["rate_target"], a["algorithm"]): a for a in aggregates if a["model"] == model}
        dense = mine[DENSE]
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
