"""`rt3d tune`: pick the KGS group size (gM x gN) per target by timing synthesized layers.

The paper chooses the group size offline, by on-device tests of synthesized layers: larger
groups amortize each gathered row over more filters but constrain pruning more. We time,
for each candidate, the same layers pruned to the same density (so every candidate does the
same FLOPs) and record the fastest per target in a small JSON file that
``--group-size auto`` reads. qemu cannot time, so for aarch64 the choice is set by hand
(``--set``), from a phone measurement (``--runner adb``) or left at the NEON default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import api
from .bench import format_table
from .errors import Rt3dError
from .group_size import DEFAULT_TEXT
from .harness import ROUNDS, Variant, check_rounds, medians, time_interleaved
from .runners import get_runner
from .sparsity import kgs_prune_positions
from .targets import get_target
from .tuning_store import CANDIDATES, DEFAULT_GROUP_SIZE, load_tuning, record, tuned_group_size, tuning_file  # noqa: F401

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthLayer:
    """A conv3d layer shape to time: (in channels, filters, frames, size, kernel)."""

    cin: int
    cout: int
    frames: int
    size: int
    kernel: tuple[int, int, int] = (3, 3, 3)


# Middle layers of C3D / R(2+1)D at reduced spatial size: where the time goes.
LAYERS = (SynthLayer(64, 128, 8, 28), SynthLayer(128, 128, 4, 14), SynthLayer(64, 64, 8, 28, (1, 3, 3)))
QUICK_LAYERS = (SynthLayer(32, 64, 4, 14),)


def tune(target: str = "host", runner: str | None = None, candidates=CANDIDATES, keep: int = 9,
         layers=LAYERS, threads: int = 2, repetitions: int = 5, path: Path | None = None,
         runner_options: dict | None = None, seed: int = 0, rounds: int = ROUNDS) -> dict:
    """Time every candidate group size on ``layers`` (KGS keeping ``keep`` of 27 positions) and record the best.

    Every (candidate, layer) module is compiled first, then all are timed in interleaved rounds
    (harness.time_interleaved), so a slow spell on the machine cannot favour one candidate.
    """
    check_rounds(rounds)
    candidates = list(dict.fromkeys(tuple(c) for c in candidates))  # each once: a repeat would time nothing new
    tgt = get_target(target)
    run = get_runner(runner or tgt.runner, **(runner_options or {}))
    if run.emulated:
        raise Rt3dError(
            f"the {run.name} runner cannot time ({target} runs under emulation here)",
            "time on a phone with --runner adb --adb-tool PATH, or record a choice: "
            f"rt3d tune --target {target} --set {DEFAULT_TEXT}",
        )
    run.check(tgt.driver)
    torch.manual_seed(seed)
    variants: list[Variant] = []
    steps = tqdm(total=len(candidates) * len(layers) + rounds, desc=f"tune {target}", unit="step")
    for gm, gn in candidates:
        for i, layer in enumerate(layers):
            conv = nn.Conv3d(layer.cin, layer.cout, layer.kernel, padding=tuple(k // 2 for k in layer.kernel)).eval()
            kvol = layer.kernel[0] * layer.kernel[1] * layer.kernel[2]
            kgs_prune_positions(conv, keep=max(1, round(keep * kvol / 27)), group_size=(gm, gn), seed=seed)
            x = torch.randn(1, layer.cin, layer.frames, layer.size, layer.size)
            compiled = api.compile(conv, (x,), target=tgt, group_size=(gm, gn), runner=run)
            variants.append(Variant.module(_name(gm, gn, i), compiled, (x,), threads=threads, repetitions=repetitions))
            steps.update()
    ms = medians(time_interleaved(variants, rounds, on_round=steps.update))
    steps.close()
    timings = []
    for gm, gn in candidates:
        per_layer = [ms[_name(gm, gn, i)] for i in range(len(layers))]
        timings.append({"group_size": [gm, gn], "total_ms": sum(per_layer), "per_layer_ms": per_layer})
    best = min(timings, key=lambda t: t["total_ms"])
    quick = len(layers) < len(LAYERS)
    existing = load_tuning(path).get(target)
    if quick and existing:  # a one-layer timing must not replace a fuller choice (or the user's own)
        logger.warning("a quick tune does not replace the group size recorded for %s (%s)", target, existing["source"])
        where, recorded = path or tuning_file(), False
    else:
        source = f"measured with the {run.name} runner on {len(layers)} layer(s)"
        where, recorded = record(target, tuple(best["group_size"]), source, timings, path), True
    return {"target": target, "best": best["group_size"], "timings": timings, "file": str(where),
            "recorded": recorded}


def tune_table(res: dict) -> str:
    """The markdown table `rt3d tune` prints and writes: every candidate's times, then the choice."""
    rows = [{"group_size": f"{t['group_size'][0]}x{t['group_size'][1]}", "total_ms": t["total_ms"],
             "per_layer_ms": " ".join(f"{v:.3g}" for v in t["per_layer_ms"])} for t in res["timings"]]
    table = format_table(rows, ["group_size", "total_ms", "per_layer_ms"])
    best = f"best for {res['target']}: {res['best'][0]}x{res['best'][1]}"
    if res.get("recorded", True):
        return table + f"\n\n{best} (recorded in {res['file']})"
    return table + (f"\n\n{best}; not recorded: {res['file']} already holds a choice for {res['target']} and a "
                    "quick tune times too little to replace it (run rt3d tune without --quick to replace it)")


def _name(gm: int, gn: int, layer: int) -> str:
    return f"{gm}x{gn} layer {layer}"
