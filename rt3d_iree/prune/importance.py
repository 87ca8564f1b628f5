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

import numpy as np
import torch

from ..errors import Rt3dError
from .structure import FlopsCounter, ModelUnits


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
    *,
    tolerance: float = 0.01,
    credit: bool = True,
    max_layer_rate: float | None = None,
) -> dict[str, torch.Tensor]:
    """Masks that remove the lowest-scored units, across all layers, until the whole
    model's FLOPs drop ``rate``x: the result's rate r satisfies rate <= r <= rate * (1 + tolerance).

    Units already pruned in ``keep`` stay pruned (if they alone reach the rate, ``keep`` is
    returned as it is, even past the window). Each layer keeps at least ``min_keep`` of
    its units (and at least one), so no layer is cut off entirely, and with
    ``max_layer_rate`` at least 1 / max_layer_rate of them. MACs are counted as
    :meth:`ModelUnits.kept_macs` does (``credit``: removed filters also remove the next
    layer's input channel), exactly for every tentative step.

    Hitting a 1% window is a small subset-sum problem, because units are coarse (a vanilla
    group of an early layer can be several % of the model) and, with the credit, not
    additive (the last unit of a filter also frees the next layer's channel). So:

    1. greedy: units in ascending score; a unit whose removal would land below the window
       (rate too high) is passed over for the next one;
    2. repair, if the greedy pass ends above the window because every unit left overshoots:
       a short local search of exactly measured single moves (un-prune a unit pruned here,
       or prune one more), landing in the window when one move can, else approaching it
       by the largest move that does not cross it (see :func:`_repair`).

    Raises Rt3dError when the rate cannot be reached under the floor, or when the window
    cannot be hit because the units left are too coarse.
    """
    if not rate >= 1.0:
        raise Rt3dError(f"FLOPs reduction rate must be >= 1 (got {rate})", "ask for a rate such as 2.6 or 3.6")
    masks = {n: (keep[n].clone().bool() if keep is not None else torch.ones(lyr.shape, dtype=torch.bool))
             for n, lyr in units.layers.items()}
    count = units.counter(masks, credit)
    hi = units.dense_macs / rate  # kept MACs in [lo, hi] <=> rate in [rate, rate * (1 + tolerance)]
    lo = units.dense_macs / (rate * (1 + tolerance))
    if count.kept <= hi:
        return masks
    names = list(units.layers)
    flat = {n: masks[n].reshape(-1).numpy().copy() for n in names}
    alive = {n: int(flat[n].sum()) for n in names}
    floor = {n: max(1, int(round(min_keep * flat[n].size))) for n in names}
    if max_layer_rate is not None:  # no conv keeps fewer than 1 / max_layer_rate of its units
        floor = {n: max(f, int(np.ceil(flat[n].size / max_layer_rate))) for n, f in floor.items()}
    cand_score, cand_layer, cand_index = [], [], []
    for li, n in enumerate(names):
        idx = np.flatnonzero(flat[n])
        cand_score.append(scores[n].reshape(-1).double().numpy()[idx])
        cand_layer.append(np.full(idx.size, li))
        cand_index.append(idx)
    score, layer, index = (np.concatenate(a) for a in (cand_score, cand_layer, cand_index))
    order = np.argsort(score, kind="stable")
    _check_reachable(units, masks, names, flat, floor, score, layer, index, order, rate, min_keep, hi, credit)

    pruned: list[int] = []  # candidates pruned here, in the order they were pruned
    for j in order.tolist():
        if count.kept <= hi:
            break
        n, u = names[layer[j]], int(index[j])
        if alive[n] <= floor[n]:
            continue
        count.remove(n, u)
        if count.kept < lo:
            count.restore(n, u)
            continue
        flat[n][u] = False
        alive[n] -= 1
        pruned.append(j)
    if count.kept > hi:
        _repair(count, names, flat, alive, floor, score, layer, index, pruned, lo, hi)
    reached = units.dense_macs / max(1.0, count.exact_kept())  # summed afresh, as units.rate() does
    if not rate <= reached <= rate * (1 + tolerance):
        gm, gn = units.structure.group_size
        raise Rt3dError(
            f"a {rate:g}x whole-model FLOPs reduction cannot be hit within {tolerance:.0%} with "
            f"{units.structure.scheme} units ({gm}x{gn} groups): the units left are too coarse "
            f"(the search ended at {reached:.3f}x)",
            "use smaller groups or a finer scheme, a lower min_keep, or a larger tolerance",
        )
    return {n: torch.from_numpy(flat[n]).reshape(units.layers[n].shape) for n in names}


def _check_reachable(units: ModelUnits, masks: dict[str, torch.Tensor], names: list[str],
                     flat: dict[str, np.ndarray], floor: dict[str, int], score: np.ndarray, layer: np.ndarray,
                     index: np.ndarray, order: np.ndarray, rate: float, min_keep: float, hi: float,
                     credit: bool) -> None:
    """Raise when even pruning everything but each layer's floor (its best-scored units) is not enough."""
    least = {n: flat[n].copy() for n in names}
    left = {n: int(least[n].sum()) for n in names}
    for j in order.tolist():
        n = names[layer[j]]
        if left[n] > floor[n]:
            least[n][index[j]] = False
            left[n] -= 1
    kept = units.kept_macs({n: torch.from_numpy(least[n]).reshape(masks[n].shape) for n in names}, credit)
    if kept > hi:
        ceiling = units.dense_macs / kept
        gm, gn = units.structure.group_size
        raise Rt3dError(
            f"a {rate:g}x whole-model FLOPs reduction cannot be reached with {units.structure.scheme} units "
            f"({gm}x{gn} groups): at most {ceiling:.2f}x while every conv keeps {min_keep:.0%} of its units "
            "(at least one) and linear layers stay dense",
            f"ask for a rate of at most {ceiling:.2f}x, or use smaller groups / a finer scheme",
        )


def _repair(count: FlopsCounter, names: list[str], flat: dict[str, np.ndarray], alive: dict[str, int],
            floor: dict[str, int], score: np.ndarray, layer: np.ndarray, index: np.ndarray, pruned: list[int],
            lo: float, hi: float, steps: int = 64) -> None:
    """Second step of :func:`select_to_rate`, when every unit left would overshoot the window.

    A local search over single moves, each measured exactly (tentative remove / restore,
    then undo): un-prune a unit pruned here, or prune an alive unit above its layer's
    floor. A move that lands inside the window wins (the best-scored un-prune, or the
    lowest-scored prune); otherwise the largest move that approaches the window without
    crossing it; otherwise the smallest one that crosses it, and the search turns back.
    A unit moves at most once, so the search cannot cycle. Leaves ``count`` / ``flat`` as
    it ends, in the window or not (the caller checks).
    """
    restorable = set(pruned)
    removable = {j for j in range(score.size) if flat[names[layer[j]]][index[j]]}
    for _ in range(steps):
        kept = count.kept
        if lo <= kept <= hi:
            return
        adding = kept < lo
        need_min, need_max = (lo - kept, hi - kept) if adding else (kept - hi, kept - lo)
        moves: list[tuple[float, int]] = []
        for j in sorted(restorable if adding else removable):
            n, u = names[layer[j]], int(index[j])
            if adding:
                count.restore(n, u)
                effect = count.kept - kept
                count.remove(n, u)
            else:
                if alive[n] <= floor[n]:
                    continue
                count.remove(n, u)
                effect = kept - count.kept
                count.restore(n, u)
            if effect > 0:
                moves.append((effect, j))
        if not moves:
            return
        sign = -1.0 if adding else 1.0  # prefer un-pruning high scores, pruning low ones
        inside = [m for m in moves if need_min <= m[0] <= need_max]
        short = [m for m in moves if m[0] < need_min]
        if inside:
            _, j = min(inside, key=lambda m: sign * score[m[1]])
        elif short:
            _, j = max(short, key=lambda m: (m[0], -sign * score[m[1]]))
        else:
            _, j = min(moves, key=lambda m: (m[0], sign * score[m[1]]))
        n, u = names[layer[j]], int(index[j])
        if adding:
            count.restore(n, u)
            restorable.discard(j)
            flat[n][u] = True
            alive[n] += 1
        else:
            count.remove(n, u)
            removable.discard(j)
            flat[n][u] = False
            alive[n] -= 1


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
