"""KGS structure on PyTorch models: magnitude masks at a whole-model FLOPs rate, and checks.

This is the simple baseline the compiler demo needs (the reweighted-regularization
pruner is a separate component). A KGS unit is (filter group g, channel group b, kernel
position k): the gM x gN weights W[g*gM:(g+1)*gM, b*gN:(b+1)*gN, k]. Removing a unit
removes the same kernel position from every kernel of the block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import Rt3dError
from .models import count_macs

logger = logging.getLogger(__name__)


@dataclass
class LayerSparsity:
    name: str
    dense_macs: int
    kept_macs: int

    @property
    def rate(self) -> float:
        return self.dense_macs / max(1, self.kept_macs)


def _units(weight: torch.Tensor, gm: int, gn: int) -> np.ndarray:
    """L2 norm of every KGS unit: array [G, B, K]."""
    f, c = weight.shape[:2]
    k = int(np.prod(weight.shape[2:]))
    g, b = -(-f // gm), -(-c // gn)
    w = np.zeros((g * gm, b * gn, k), dtype=np.float64)
    w[:f, :c] = weight.detach().reshape(f, c, k).numpy()
    return np.sqrt((w.reshape(g, gm, b, gn, k) ** 2).sum(axis=(1, 3)))


def _unit_sizes(f: int, c: int, gm: int, gn: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.minimum(gm, f - np.arange(-(-f // gm)) * gm)
    cols = np.minimum(gn, c - np.arange(-(-c // gn)) * gn)
    return rows, cols


def apply_kgs_magnitude(
    model: nn.Module,
    example: torch.Tensor,
    flops_rate: float,
    group_size: tuple[int, int] = (8, 4),
    min_keep: float = 0.05,
) -> list[LayerSparsity]:
    """Zero the lowest-magnitude KGS units of every Conv3d until whole-model MACs drop ``flops_rate``x.

    Units are ranked across layers by their norm relative to their layer's mean unit
    norm, so no layer is wiped out by scale alone; each layer keeps at least ``min_keep``
    of its units. Returns per-layer MACs before and after.
    """
    gm, gn = group_size
    if gm < 1 or gn < 1:
        raise Rt3dError(f"bad group size {gm}x{gn}", "use positive sizes such as 8x4")
    if not flops_rate >= 1.0:
        raise Rt3dError(f"FLOPs rate must be >= 1 (got {flops_rate})", "for example 2.6 or 3.6")
    macs = count_macs(model, example)
    total = sum(macs.values())
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv3d)}
    target_removed = total - total / flops_rate
    candidates = []  # (score, cost, layer, g, b, k)
    floor_cost = 0.0
    for name, conv in convs.items():
        norms = _units(conv.weight, gm, gn)
        f, c = conv.weight.shape[:2]
        k = norms.shape[2]
        rows, cols = _unit_sizes(f, c, gm, gn)
        per_weight = macs[name] / (f * c * k)
        cost = per_weight * rows[:, None, None] * cols[None, :, None] * np.ones_like(norms)
        rel = norms / max(norms.mean(), 1e-30)
        order = np.argsort(rel, axis=None)
        keep_n = int(np.ceil(min_keep * norms.size))
        prunable = order[: norms.size - keep_n]
        floor_cost += cost.reshape(-1)[order[norms.size - keep_n:]].sum()
        for idx in prunable:
            g, b, kk = np.unravel_index(idx, norms.shape)
            candidates.append((rel[g, b, kk], cost[g, b, kk], name, g, b, kk))
    max_removable = sum(c[1] for c in candidates)
    if max_removable < target_removed:
        reachable = total / (total - max_removable)
        raise Rt3dError(
            f"a {flops_rate}x whole-model FLOPs rate cannot be reached: "
            f"at most {reachable:.2f}x while every conv keeps {min_keep:.0%} of its units "
            "(and non-conv layers stay dense)",
            f"ask for a rate of at most {reachable:.2f}",
        )
    candidates.sort(key=lambda t: t[0])
    removed = 0.0
    masks = {name: torch.ones(_units(conv.weight, gm, gn).shape, dtype=torch.bool) for name, conv in convs.items()}
    for _score, cost, name, g, b, k in candidates:
        if removed >= target_removed:
            break
        masks[name][g, b, k] = False
        removed += cost
    report = []
    with torch.no_grad():
        for name, conv in convs.items():
            f, c = conv.weight.shape[:2]
            m = masks[name]
            full = m.repeat_interleave(gm, 0)[:f].repeat_interleave(gn, 1)[:, :c]
            w = conv.weight
            w.mul_(full.reshape(w.shape).to(w.dtype))
            kept = int(full.sum()) * macs[name] // full.numel()
            report.append(LayerSparsity(name, macs[name], kept))
    logger.info("KGS magnitude masks: whole-model MACs %.3g -> %.3g", total, total - removed)
    return report


def kgs_density(weight: torch.Tensor, group_size: tuple[int, int]) -> float:
    """Fraction of KGS units (gM x gN block, kernel position) that hold any nonzero weight.

    The compiler's work is proportional to this: every unit that is entirely zero is a
    column the compacted matmul skips.
    """
    norms = _units(weight, *group_size)
    return float((norms > 0).mean())
