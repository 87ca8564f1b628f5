"""KGS structure on PyTorch models: magnitude masks at a whole-model FLOPs rate, and checks.

This is the one-shot baseline the compiler demo and benchmarks need; the training
algorithms are in :mod:`rt3d_iree.prune`, built on the same structure code. A KGS unit
is (filter group g, channel group b, kernel position k): the gM x gN weights
W[g*gM:(g+1)*gM, b*gN:(b+1)*gN, k]. Removing a unit removes the same kernel position from
every kernel of the block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import Rt3dError
from .group_size import DEFAULT_GROUP_SIZE, resolve_group_size
from .prune.importance import select_to_rate
from .prune.structure import LayerUnits, ModelUnits, Structure

logger = logging.getLogger(__name__)


@dataclass
class LayerSparsity:
    name: str
    dense_macs: int
    kept_macs: int

    @property
    def rate(self) -> float:
        return self.dense_macs / max(1, self.kept_macs)


def apply_kgs_magnitude(
    model: nn.Module,
    example: torch.Tensor,
    flops_rate: float,
    group_size: tuple[int, int] = DEFAULT_GROUP_SIZE,
    min_keep: float = 0.05,
) -> list[LayerSparsity]:
    """Zero the lowest-magnitude KGS units of every Conv3d until whole-model MACs drop ``flops_rate``x.

    Units are ranked across layers by their norm relative to their layer's mean unit
    norm, so no layer is wiped out by scale alone; each layer keeps at least ``min_keep``
    of its units. Returns per-layer MACs before and after. (One-shot, no training: the
    pruning algorithms proper are in :mod:`rt3d_iree.prune`, on the same structure code.)
    """
    gm, gn = resolve_group_size(group_size)
    if not flops_rate >= 1.0:
        raise Rt3dError(f"FLOPs rate must be >= 1 (got {flops_rate})", "for example 2.6 or 3.6")
    units = ModelUnits(model, example, Structure("kgs", (gm, gn)))
    scores = {}
    for n, lyr in units.layers.items():
        norms = lyr.norms().detach().double()
        scores[n] = norms / norms.mean().clamp_min(1e-30)
    masks = select_to_rate(units, scores, flops_rate, min_keep=min_keep)
    units.apply(masks)
    logger.info("KGS magnitude masks: whole-model MACs %.3g -> %.3g", units.dense_macs, units.kept_macs(masks))
    return [LayerSparsity(r["layer"], r["macs"], r["kept_macs"]) for r in units.layer_report(masks)]


def kgs_density(weight: torch.Tensor, group_size: tuple[int, int]) -> float:
    """Fraction of KGS units (gM x gN block, kernel position) that hold any nonzero weight.

    The compiler's work is proportional to this: every unit that is entirely zero is a
    column the compacted matmul skips.
    """
    conv = nn.Conv3d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), bias=False)
    lyr = LayerUnits("weight", conv, Structure("kgs", group_size), 0)
    return float(lyr.unit_mask_of(weight).double().mean())


def kgs_prune_positions(conv: nn.Conv3d, keep: int, group_size: tuple[int, int], seed: int = 0) -> None:
    """Keep ``keep`` random kernel positions per (gM x gN) block: balanced KGS at a fixed rate."""
    gm, gn = resolve_group_size(group_size)
    rng = np.random.default_rng(seed)
    w = conv.weight.data
    f, c = w.shape[:2]
    kvol = int(np.prod(w.shape[2:]))
    flat = w.view(f, c, kvol)
    with torch.no_grad():
        for g in range(0, f, gm):
            for b in range(0, c, gn):
                drop = np.ones(kvol, dtype=bool)
                drop[rng.choice(kvol, keep, replace=False)] = False
                flat[g:g + gm, b:b + gn, torch.from_numpy(drop)] = 0
