"""`rt3d calibrate`: does the built-in benchmark tell pruning methods apart?

A pruning benchmark is useful only if (1) it cannot be solved without learning, (2) the
dense model of the table leaves room both ways (neither saturated nor near chance), and
(3) capacity pays: a model with about 4x fewer conv MACs must score clearly lower, or a
pruned model could lose nothing whatever the method. This command measures the three:

- the parameter-free estimators of :mod:`rt3d_iree.data.estimators` on the validation set
  (bar: at most 30%);
- dense C3D at the table's width (0.125) and recipe (bar: 75-90% top-1);
- dense C3D at half that width (about 4x fewer conv MACs; bar: at least 5 points lower),

per seed, and writes calibration.md / calibration.json. Models are trained exactly as
``rt3d prune-table`` trains its dense models, and finished ones are reused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..data.estimators import estimator_accuracy
from ..files import atomic_write
from ..models import build_model, count_macs
from .checkpoint import load_checkpoint
from .stats import mean_sd
from .table import TableSettings, _config, _finished, _run, table_dense_epochs
from .train import datasets, train_dense

logger = logging.getLogger(__name__)

ESTIMATOR_BAR = 0.30
DENSE_RANGE = (0.75, 0.90)
CAPACITY_GAP = 0.05


def _conv_macs(width: float, s: TableSettings) -> int:
    import torch

    model = build_model("c3d", 8, width, s.frames, s.size)
    macs = count_macs(model, torch.zeros(1, 3, s.frames, s.size, s.size))
    return sum(v for k, v in macs.items() if isinstance(model.get_submodule(k), torch.nn.Conv3d))


def _dense(s: TableSettings, width: float, seed: int, out: Path, progress: bool) -> float:
    """Dense C3D's validation accuracy, trained once: at the table's width it is the table's
    own dense model (same path and settings, so `rt3d prune-table` reuses it)."""
    cfg = _config(replace(s, width=width), "c3d", seed)
    if width == s.width:
        path = out / "prune-table" / "c3d" / f"seed{seed}" / "dense.pt"
    else:
        path = out / "calibration" / f"c3d_w{width:g}_seed{seed}.pt"
    if _finished(path, cfg) is None:
        _run(train_dense, cfg, path, progress)
    return float(load_checkpoint(path)["accuracy"])


def calibrate(out: str | Path, settings: TableSettings | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the two dense widths per seed, score the estimators, write the report."""
    s = settings or TableSettings(models=("c3d",))
    s = replace(s, dense_epochs=s.dense_epochs or table_dense_epochs("c3d"))
    out = Path(out)
    widths = (s.width, s.width / 2)
    acc = {w: [_dense(s, w, seed, out, progress) for seed in s.seeds] for w in widths}
    _, val, _ = datasets(_config(s, "c3d", s.seeds[0]))
    estimators = estimator_accuracy(val)
    wide, narrow = (mean_sd(acc[w])[0] for w in widths)
    macs = {w: _conv_macs(w, s) for w in widths}
    checks = [
        {"check": f"parameter-free estimators <= {ESTIMATOR_BAR:.0%}", "measured": max(estimators.values()),
         "holds": max(estimators.values()) <= ESTIMATOR_BAR},
        {"check": f"dense C3D w{widths[0]:g} in {DENSE_RANGE[0]:.0%}-{DENSE_RANGE[1]:.0%}", "measured": wide,
         "holds": DENSE_RANGE[0] <= wide <= DENSE_RANGE[1]},
        {"check": f"C3D w{widths[1]:g} ({macs[widths[0]] / macs[widths[1]]:.1f}x fewer conv MACs) at least "
                  f"{100 * CAPACITY_GAP:.0f} points lower", "measured": wide - narrow,
         "holds": wide - narrow >= CAPACITY_GAP},
    ]
    doc = {"settings": asdict(s), "estimators": estimators, "seeds": list(s.seeds),
           "dense_accuracy": {f"{w:g}": acc[w] for w in widths}, "conv_macs": {f"{w:g}": macs[w] for w in widths},
           "checks": checks}
    doc["table"] = format_calibration(doc)
    atomic_write(out / "calibration.json", json.dumps(doc, indent=2))
    atomic_write(out / "calibration.md", doc["table"] + "\n")
    return doc


def format_calibration(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    lines = [f"Benchmark calibration ({s['frames']}x{s['size']}x{s['size']} clips, {s['train_clips']} training / "
             f"{s['val_clips']} validation, {s['dense_epochs']} dense epochs, seeds {doc['seeds']})", "",
             "| model or estimator | conv MACs | top-1 (mean +- sd over seeds) | per seed |", "|---|---|---|---|"]
    for name, a in doc["estimators"].items():
        lines.append(f"| {name} | 0 | {100 * a:.1f}% | - |")
    for w, accs in doc["dense_accuracy"].items():
        m, sd = mean_sd(accs)
        spread = "" if sd is None else f" +- {100 * sd:.1f}"
        lines.append(f"| dense C3D width {w} | {doc['conv_macs'][w] / 1e6:.1f} M | {100 * m:.1f}{spread}% | "
                     + ", ".join(f"{100 * a:.1f}" for a in accs) + " |")
    lines += ["", "| check | measured | holds |", "|---|---|---|"]
    for c in doc["checks"]:
        lines.append(f"| {c['check']} | {100 * c['measured']:.1f}{' points' if 'lower' in c['check'] else '%'} | "
                     f"{'yes' if c['holds'] else 'NO'} |")
    return "\n".join(lines)
