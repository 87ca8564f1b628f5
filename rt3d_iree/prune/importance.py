"""Importance: scores that rank units for removal, and the regularizers that shape them.

The third of the pruning package's layers. Scores compare units across layers of very
different weight scale, so every score is a unit's RMS weight relative to its layer's
RMS weight before pruning started (``reference_rms``).

Regularizers are computed on the live weights (with gradient), as the method requires:
- :class:`GroupLasso` (fixed regularization): every unit pays the same coefficient on
  its L2 norm;
- :class:`Reweighted`: P_u * ||W_u||^2 with P_u = 1 / (||W_u||^2 + eps), P refreshed from
  the live weights at each reweighting round, every layer's term weighted by its share of
  the model's conv FLOPs. Between refreshes each term is close to 1 for a unit that is
  alive and close to 0 for one that converged to zero, so the penalty approximates the
  FLOPs-weighted fraction of units kept: minimizing it trades accuracy for FLOPs, and
  the per-layer rates come out of that trade, not from hand-set targets.
"""

from __future__ import annotations

import torch

from ..errors import Rt3dError
from .structure import ModelUnits


def reference_rms(units: ModelUnits) -> dict[str, float]:
    """Each layer's weight RMS now (call before pruning starts)."""
    out = {}
    for n, lyr in units.layers.items():
        w = lyr.conv.weight.detach()
        out[n] = float(w.pow(2).mean().sqrt().clamp_min(1e-12))
    return out


def magnitude_scores(units: ModelUnits, ref: dict[str, float]) -> dict[str, torch.Tensor]:
    """Unit RMS / layer reference RMS: comparable across layers, 0 for a zero unit."""
    return {
        n: (lyr.squared_norms().detach().double() / lyr.sizes).sqrt() / ref[n]
        for n, lyr in units.layers.items()
    }


def select_to_rate(
    units: ModelUnits,
    scores: dict[str, torch.Tensor],
    rate: float,
    keep: dict[str, torch.Tensor] | None = None,
    min_keep: float = 0.03,
) -> dict[str, torch.Tensor]:
    """Masks that remove the lowest-scored units, across all layers, until the whole
    model's FLOPs drop ``rate``x.

    Units already pruned in ``keep`` stay pruned. Each layer keeps at least ``min_keep`` of
    its units (and at least one), so no layer is cut off entirely. Raises when the rate
    cannot be reached under that floor.
    """
    if not rate >= 1.0:
        raise Rt3dError(f"FLOPs reduction rate must be >= 1 (got {rate})", "ask for a rate such as 2.6 or 3.6")
    target_kept = units.dense_macs / rate
    masks = {n: (keep[n].clone() if keep is not None else torch.ones(lyr.shape, dtype=torch.bool))
             for n, lyr in units.layers.items()}
    kept = units.kept_macs(masks)
    if kept <= target_kept:
        return masks
    cand_score, cand_cost, cand_layer, cand_index = [], [], [], []
    layer_names = list(units.layers)
    for li, n in enumerate(layer_names):
        lyr = units.layers[n]
        s = scores[n].reshape(-1).double()
        alive = masks[n].reshape(-1)
        floor = max(1, int(round(min_keep * s.numel())))
        idx = torch.nonzero(alive).flatten()
        if idx.numel() <= floor:
            continue
        order = idx[torch.argsort(s[idx], stable=True)]
        prunable = order[: idx.numel() - floor]
        cand_score.append(s[prunable])
        cand_cost.append(lyr.unit_macs.reshape(-1)[prunable])
        cand_layer.append(torch.full_like(prunable, li))
        cand_index.append(prunable)
    empty = torch.zeros(0, dtype=torch.float64)
    score = torch.cat(cand_score) if cand_score else empty
    cost = torch.cat(cand_cost) if cand_cost else empty
    need = kept - target_kept
    if float(cost.sum()) < need:
        ceiling = units.dense_macs / (kept - float(cost.sum()))
        gm, gn = units.structure.group_size
        raise Rt3dError(
            f"a {rate:g}x whole-model FLOPs reduction cannot be reached with {units.structure.scheme} units "
            f"({gm}x{gn} groups): at most {ceiling:.2f}x while every conv keeps {min_keep:.0%} of its units "
            "(at least one) and linear layers stay dense",
            f"ask for a rate of at most {ceiling:.2f}x, or use smaller groups / a finer scheme",
        )
    layer = torch.cat(cand_layer)
    index = torch.cat(cand_index)
    # Lowest score first; a unit that would overshoot the target by more than 1% of the
    # model is passed over for the next one, so coarse units (vanilla groups of a small
    # layer) do not push the rate far past what was asked.
    order = torch.argsort(score, stable=True).tolist()
    slack = 0.01 * units.dense_macs
    cost_l = cost.tolist()
    taken = 0.0
    skipped = []
    for j in order:
        if taken >= need:
            break
        if taken + cost_l[j] > need + slack:
            skipped.append(j)
            continue
        taken += cost_l[j]
        masks[layer_names[int(layer[j])]].view(-1)[int(index[j])] = False
    for j in skipped:  # nothing small enough was left: overshoot with the best-ranked
        if taken >= need:
            break
        taken += cost_l[j]
        masks[layer_names[int(layer[j])]].view(-1)[int(index[j])] = False
    return masks


class GroupLasso:
    """Fixed regularization: sum over units of ||W_u|| / s_l, the same coefficient for all.

    s_l (the layer's mean unit norm before pruning) only removes the arbitrary weight scale
    of each layer; the sum is divided by the number of units so lambda means the same for
    any model size.
    """

    name = "fixed"

    def __init__(self, units: ModelUnits) -> None:
        self.units = units
        self.scale = {n: float(lyr.norms().detach().mean().clamp_min(1e-12)) for n, lyr in units.layers.items()}
        self.count = sum(lyr.sizes.numel() for lyr in units.layers.values())

    def reweight(self) -> None:
        """Fixed regularization never changes its penalties."""

    def __call__(self) -> torch.Tensor:
        total = sum((lyr.norms().sum() / self.scale[n]) for n, lyr in self.units.layers.items())
        return total / self.count

    def state_dict(self) -> dict:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.scale = dict(state["scale"])


class Reweighted:
    """Reweighted regularization: FLOPs-weighted sum over layers of mean_u P_u ||W_u||^2."""

    name = "reweighted"

    def __init__(self, units: ModelUnits, eps: float = 0.02) -> None:
        self.units, self.eps_rel = units, eps
        self.flops_share = {n: lyr.macs / units.conv_macs for n, lyr in units.layers.items()}
        sq = {n: lyr.squared_norms().detach() for n, lyr in units.layers.items()}
        self.eps = {n: eps * float(v.mean().clamp_min(1e-24)) for n, v in sq.items()}
        self.penalty: dict[str, torch.Tensor] = {}
        self.rounds = 0
        self.reweight()

    @torch.no_grad()
    def reweight(self) -> None:
        """P_u = 1 / (||W_u||^2 + eps), from the live weights."""
        for n, lyr in self.units.layers.items():
            self.penalty[n] = 1.0 / (lyr.squared_norms().detach() + self.eps[n])
        self.rounds += 1

    def __call__(self) -> torch.Tensor:
        return sum(
            self.flops_share[n] * (self.penalty[n] * lyr.squared_norms()).mean()
            for n, lyr in self.units.layers.items()
        )

    def state_dict(self) -> dict:
        return {"eps": self.eps, "penalty": self.penalty, "rounds": self.rounds}

    def load_state_dict(self, state: dict) -> None:
        self.eps = dict(state["eps"])
        self.penalty = {n: t.clone() for n, t in state["penalty"].items()}
        self.rounds = int(state["rounds"])
