"""Per-layer pruning rates of Table 1's cells: do they follow the layers' FLOPs shares, and
does any conv collapse to the keep floor?

Why a report of its own: a whole-model FLOPs rate can be reached by cutting a few cheap
layers to nothing (the first tables here cut 5 of C3D's 8 convs to the floor) or by spreading
the cut; the reweighted algorithm's FLOPs weighting is meant to cut the expensive layers more.
The table's accuracy cannot show which happened, so every run records its per-conv rates
(``layer_rows``) and this module summarises them per cell, from the JSON alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .stats import mean_sd

# A conv "at the floor" keeps no more units than the pruner's minimum (min_keep of its units,
# at least one; PruneConfig.min_keep = 3%), plus this slack for rounding.
FLOOR_SLACK = 0.005


def layer_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-conv part of a run's report: FLOPs share, rate and the fraction of units kept."""
    layers = report.get("layers") or []
    total = sum(r["macs"] for r in layers) or 1
    return [{"layer": r["layer"], "flops_share": r["macs"] / total, "rate": r["rate"],
             "kept_fraction": r["kept_units"] / max(r["units"], 1)} for r in layers]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None for fewer than 3 points or a constant side."""
    if len(x) < 3:
        return None
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=float)
    for value in np.unique(v):  # ties share their mean rank
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def summarize_layers(runs: list[dict[str, Any]], min_keep: float = 0.03) -> list[dict[str, Any]]:
    """Per (model, cell): the rank correlation of per-conv rate with FLOPs share (mean over
    seeds), the per-conv rates of the first seed, and how many convs sit at the floor."""
    out: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        rows = run.get("layers")
        if not rows or run["scheme"] == "dense":
            continue
        key = (run["model"], run["scheme"], run["rate_target"], run["algorithm"])
        entry = out.setdefault(key, {"model": key[0], "scheme": key[1], "rate_target": key[2], "algorithm": key[3],
                                     "correlations": [], "at_floor": [], "rates": [r["rate"] for r in rows],
                                     "layers": [r["layer"] for r in rows],
                                     "flops_share": [r["flops_share"] for r in rows]})
        entry["correlations"].append(spearman([r["flops_share"] for r in rows], [r["rate"] for r in rows]))
        entry["at_floor"].append(sum(r["kept_fraction"] <= min_keep + FLOOR_SLACK for r in rows))
    for entry in out.values():
        corr = [c for c in entry["correlations"] if c is not None]
        entry["correlation_mean"], entry["correlation_sd"] = mean_sd(corr) if corr else (None, None)
    return list(out.values())


def format_layer_rates(runs: list[dict[str, Any]]) -> str:
    """Markdown: per cell, rank correlation of per-conv rate with FLOPs share and floor counts."""
    rows = summarize_layers(runs)
    if not rows:
        return ""
    lines = ["Per-conv rates: Spearman rank correlation of each conv's FLOPs rate with its share of the model's "
             "conv FLOPs (+1: the dearest convs are cut most), convs at the keep floor (3% of units), and the "
             "per-conv rates of the first seed, in network order:", "",
             "| model | cell | rate-vs-FLOPs-share correlation | convs at the floor (per seed) | per-conv rates |",
             "|---|---|---|---|---|"]
    for e in rows:
        corr = "-" if e["correlation_mean"] is None else (
            f"{e['correlation_mean']:+.2f}" + ("" if e["correlation_sd"] is None else f" ± {e['correlation_sd']:.2f}"))
        rates = " ".join(f"{r:.3g}" for r in e["rates"])
        floor = ", ".join(str(n) for n in e["at_floor"])
        lines.append(f"| {e['model']} | {e['scheme']} {e['rate_target']:g}x {e['algorithm']} | {corr} | "
                     f"{floor} of {len(e['rates'])} | {rates} |")
    return "\n".join(lines)
