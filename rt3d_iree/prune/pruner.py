"""A pruner for the user's own training loop, the way Torch-Pruning users know it.

::

    pruner = Pruner(model, example_inputs, scheme="kgs", group_size=(8, 4), rate=2.6)
    for epoch in range(reg_epochs):                  # 1. regularization
        pruner.reweight()                            #    a new reweighting round per epoch
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward()
            pruner.regularize(model)                 #    gradient mode only (see PrunerOptions)
            opt.step()
            pruner.step(lr)                          #    the decoupled proximal shrink
    masks = pruner.apply()                           # 2. hard prune to the FLOPs target
    ...                                              # 3. retrain with the same loop: step()
                                                     #    keeps the pruned weights exactly zero

Why a proximal step after the optimizer's and not a penalty in the loss: Adam (and any
optimizer with per-parameter normalisation) divides each weight's gradient by its own
running scale, which cancels the per-layer FLOPs weighting of a penalty's gradient. In a
24-step probe the cheapest convs shrank most. A shrink applied outside the optimizer
(like AdamW's decoupled weight decay) keeps the weighting whatever the optimizer:

- ``reweighted``: w_u <- w_u / (1 + 2 lr lam c_u P_u), the proximal step of
  lam c_u P_u ||w_u||^2. c_u is the unit's MACs relative to the unit that holds the
  average FLOP, so expensive units shrink faster. P_u = r_l^2 / (||w_u||^2 + eps r_l^2)
  is frozen at each ``reweight()``. r_l^2 is the layer's mean squared unit norm at that
  ``reweight()``, so the shrink is relative and no layer's weight scale matters. Units
  that are small next to their layer's peers get a large P_u and collapse; live units pay
  about c_u. Why the current norm and not the one when pruning started: a dear layer
  (C3D's conv1 costs 3.6x the typical unit) shrinks as a whole, every one of its units
  then looked small, P_u rose for all of them and the layer collapsed; KGS at 3.6x fell
  to chance (12.5%) on the built-in benchmark, and reached 75.7% with this rule.
- ``fixed`` (group lasso): block soft-thresholding,
  w_u <- w_u max(0, 1 - lr lam r_l / ||w_u||), the same for every unit.
- ``heuristic``: no regularization. ``apply(rate)`` at growing rates prunes step by step.

``PrunerOptions(proximal=False)`` instead adds the same penalty's gradient in
``regularize()``. This is the textbook form, and it is right only under plain SGD.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import Rt3dError
from ..group_size import resolve_group_size
from ..passes.kgs.options import DEFAULT_GROUP_SIZE
from .importance import magnitude_scores, reference_rms, select_to_rate
from .pruners import ALGORITHMS, DEFAULT_LAMBDA
from .structure import ModelUnits, Structure

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrunerOptions:
    """Settings that rarely change.

    ``eps`` is the reweighting floor relative to a layer's mean squared unit norm: a unit
    below it counts as removed. ``lr`` is the learning rate ``step()`` uses when it is not
    given one. ``proximal=False`` switches to adding the penalty's gradient in
    ``regularize()``, for plain SGD. ``cost_power`` ranks units by score / cost**p at the
    hard prune (see :meth:`Pruner.scores`). ``max_layer_rate`` (a multiple of the target) caps
    how hard any one conv is cut; ``score="shrink"`` ranks a unit by how far it shrank from its
    own start instead of by its layer's median.

    Why ``score="shrink"`` with a 1.5x cap is the default: ranked by the layer median, the
    FLOPs weighting of the reweighted penalty is divided out again at the hard prune, and
    per-conv rates ran against FLOPs share (Spearman -0.17 to -0.60 over the C3D Table 1
    cells). Ranked by each unit's own shrink, the expensive convs (which the penalty shrinks
    hardest) are cut hardest; the cap keeps any conv above 1 / (1.5 x target) of its units,
    so no layer falls to the ``min_keep`` floor (loosened only where coarse units make the
    target unreachable under it: :meth:`Pruner._select`). On R(2+1)D w0.125, KGS 3.6x, seed 0 that
    took reweighted from 87.7% (median) and 87.7% (shrink, cap 2) to 90.1% top-1.
    """

    eps: float = 0.02
    lr: float = 1e-3
    proximal: bool = True
    cost_power: float = 0.0
    max_layer_rate: float | None = 1.5  # x the target: no conv keeps fewer than 1 / (this x rate) of its units
    score: str = "shrink"  # "median": RMS over the layer's live median; "shrink": norm over the unit's own at start
    layer_shrink: float = 0.0  # score="median": divide by median ** (1 - this), so 1 keeps a layer's whole shrink

    def __post_init__(self) -> None:
        if self.score not in ("median", "shrink") or (self.max_layer_rate is not None and not self.max_layer_rate >= 1):
            raise Rt3dError(f"bad pruner options score={self.score!r}, max_layer_rate={self.max_layer_rate}",
                            'use score="median" or "shrink" and max_layer_rate >= 1 (or None)')
        if not (0 <= self.cost_power <= 1 and 0 <= self.layer_shrink <= 1):
            raise Rt3dError(f"bad pruner option cost_power={self.cost_power} or layer_shrink={self.layer_shrink}",
                            "use values in [0, 1], for example PrunerOptions(cost_power=0.25)")
        if not (0 < self.eps < 1 and math.isfinite(self.lr) and self.lr > 0):
            raise Rt3dError(f"bad pruner options eps={self.eps}, lr={self.lr}",
                            "eps must be in (0, 1) and lr > 0, for example PrunerOptions(eps=0.02, lr=1e-3)")


class Pruner:
    """Structured pruning of ``model``'s Conv3d layers to a whole-model FLOPs ``rate``.

    ``example_inputs`` is one input batch of the shape the model runs at, because FLOPs
    depend on it. ``lam`` is the regularization strength. ``None`` means the algorithm's
    default (``pruners.DEFAULT_LAMBDA``). ``min_keep`` is the fraction of every conv's units
    that survives whatever the rate.

    The reference weights are taken at the first ``reweight``/``regularize``/``step``/
    ``apply`` call (or ``start()``). Scores and penalties are measured against them, so a
    pruner built before dense training measures against the trained weights.
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, scheme: str = "kgs",
                 group_size: tuple[int, int] = DEFAULT_GROUP_SIZE, rate: float = 2.6, algorithm: str = "reweighted",
                 lam: float | None = None, min_keep: float = 0.03, options: PrunerOptions | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise Rt3dError(f"Pruner needs a torch.nn.Module, got {type(model).__name__}",
                            "pass the model itself (not its state_dict)")
        if not isinstance(example_inputs, torch.Tensor):
            raise Rt3dError(f"example_inputs must be a tensor, got {type(example_inputs).__name__}",
                            "pass one input batch, for example torch.zeros(1, 3, 16, 112, 112)")
        group_size = resolve_group_size(group_size)  # two whole numbers >= 1: (8.5, 4) is refused, not truncated
        self.structure = Structure(scheme, group_size)
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate >= 1.0):
            raise Rt3dError(f"FLOPs reduction rate must be a number >= 1 (got {rate!r})", "for example rate=2.6")
        if algorithm not in ALGORITHMS:
            raise Rt3dError(f"unknown pruning algorithm {algorithm!r}", f"use one of: {', '.join(ALGORITHMS)}")
        if not isinstance(min_keep, (int, float)) or not (lam is None or isinstance(lam, (int, float))):
            raise Rt3dError(f"rate, lam and min_keep must be numbers (got {rate!r}, {lam!r}, {min_keep!r})",
                            "for example rate=2.6, lam=None (the algorithm's default), min_keep=0.03")
        if options is not None and not isinstance(options, PrunerOptions):
            raise Rt3dError(f"options must be a PrunerOptions, got {type(options).__name__}",
                            "for example options=PrunerOptions(eps=0.02)")
        if lam is not None and not (math.isfinite(lam) and lam >= 0):
            raise Rt3dError(f"regularization strength must be >= 0 (got {lam})", "for example lam=2.0, or None")
        if not 0.0 <= min_keep < 1.0:
            raise Rt3dError(f"min_keep must be in [0, 1) (got {min_keep})", "for example min_keep=0.03")
        self.model, self.rate, self.algorithm, self.min_keep = model, float(rate), algorithm, float(min_keep)
        self.lam = float(lam) if lam is not None else DEFAULT_LAMBDA.get(algorithm, 0.0)
        self.options = options or PrunerOptions()
        self.units = ModelUnits(model, example_inputs, self.structure)
        # Fail now, not after an hour of training, if the target is out of reach even when each
        # layer's floor happens to be its most expensive units.
        select_to_rate(self.units, {n: lyr.unit_macs.clone() for n, lyr in self.units.layers.items()},
                       self.rate, None, self.min_keep)
        costs = torch.cat([lyr.unit_macs.reshape(-1) for lyr in self.units.layers.values()])
        typical = float((costs * costs).sum() / costs.sum())  # the unit holding the average FLOP
        self.cost = {n: (lyr.unit_macs / typical).float() for n, lyr in self.units.layers.items()}
        self.ref: dict[str, float] | None = None
        self.ref_sq: dict[str, float] = {}  # mean squared unit norm at the reference
        self.ref_norms: dict[str, torch.Tensor] = {}  # each unit's norm at the reference (score="shrink")
        self.penalty: dict[str, torch.Tensor] = {}  # P_u of the current round (reweighted)
        self.rounds = 0
        self.masks: dict[str, torch.Tensor] | None = None

    # -- the loop's calls ---------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.ref is not None

    @torch.no_grad()
    def start(self) -> None:
        """Take the reference weights now (automatic at the first call that needs them)."""
        if self.started:
            return
        self.ref = reference_rms(self.units)
        self.ref_norms = {n: lyr.norms().detach().clone() for n, lyr in self.units.layers.items()}
        self.ref_sq = {n: float(lyr.squared_norms().detach().mean().clamp_min(1e-24))
                       for n, lyr in self.units.layers.items()}

    @property
    def regularizing(self) -> bool:
        """Regularization runs until the first hard prune."""
        return self.algorithm != "heuristic" and self.masks is None and self.lam > 0

    @torch.no_grad()
    def reweight(self) -> None:
        """Start a new reweighting round: P_u from the live weights (no-op but for reweighted)."""
        self.start()
        if self.algorithm != "reweighted":
            return
        for n, lyr in self.units.layers.items():
            sq = lyr.squared_norms().detach().float()
            scale = sq.mean().clamp_min(1e-24)  # the layer now, not at the reference (module docstring)
            self.penalty[n] = scale / (sq + self.options.eps * scale)
        self.rounds += 1

    def _ensure_round(self) -> None:
        self.start()
        if self.algorithm == "reweighted" and not self.penalty:
            self.reweight()

    @torch.no_grad()
    def regularize(self, model: nn.Module | None = None) -> float:
        """Call after ``loss.backward()``: in gradient mode, add the penalty's gradient.

        In the default proximal mode the shrink happens in ``step()`` and nothing is added
        here. Pruned weights' gradients are zeroed either way. Returns the penalty, which is
        about the fraction of conv FLOPs still alive (reweighted) or the mean relative unit
        norm (fixed), for logging.
        """
        self._check_model(model)
        self._ensure_round()
        if self.masks is not None:
            self.units.apply(self.masks)  # zeroes the pruned weights' gradients too
            return 0.0
        if not self.regularizing:
            return 0.0
        total = 0.0
        for n, lyr in self.units.layers.items():
            w = lyr.conv.weight
            sq = lyr.squared_norms().detach().float()
            if self.algorithm == "reweighted":
                coef = self.cost[n] * self.penalty[n]
                total += float((lyr.unit_macs.float() / self.units.conv_macs * self.penalty[n] * sq).sum()
                               / self.ref_sq[n])
                grad_scale = 2 * self.lam * coef
            else:
                r = math.sqrt(self.ref_sq[n])
                norm = sq.clamp_min(1e-24).sqrt()
                total += float((norm / r).mean()) / len(self.units.layers)
                grad_scale = self.lam * r / norm
            if not self.options.proximal:
                g = lyr.expand(grad_scale).to(w.dtype) * w.detach()
                w.grad = g if w.grad is None else w.grad.add_(g)
        return total

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        """Call after ``optimizer.step()``: the proximal shrink, then the masks.

        ``lr`` is the learning rate of the step just taken (so a schedule scales the
        shrink as it scales the step). It defaults to ``options.lr``.
        """
        self._ensure_round()
        if self.masks is not None:
            self.units.apply(self.masks)
            return
        if not (self.regularizing and self.options.proximal):
            return
        lr = self.options.lr if lr is None else float(lr)
        if not (math.isfinite(lr) and lr >= 0):
            raise Rt3dError(f"step() needs the learning rate just used, a finite number >= 0 (got {lr})",
                            "pass optimizer.param_groups[0]['lr'], or nothing for options.lr")
        for n, lyr in self.units.layers.items():
            w = lyr.conv.weight
            if self.algorithm == "reweighted":
                factor = 1.0 / (1.0 + 2 * lr * self.lam * self.cost[n] * self.penalty[n])
            else:
                norm = lyr.squared_norms().detach().float().clamp_min(1e-24).sqrt()
                factor = (1.0 - lr * self.lam * math.sqrt(self.ref_sq[n]) / norm).clamp_min(0.0)
            w.mul_(lyr.expand(factor).to(w.dtype))

    @torch.no_grad()
    def apply(self, rate: float | None = None) -> dict[str, torch.Tensor]:
        """Hard-prune to ``rate`` (default: the target) and zero the pruned weights.

        Units are removed by :meth:`scores`, lowest first across all layers, until the
        whole model's FLOPs drop ``rate``x. Units pruned earlier stay pruned, so growing
        rates prune step by step (the heuristic).
        """
        self.start()
        rate = self.rate if rate is None else float(rate)
        if not (math.isfinite(rate) and rate >= 1.0):
            raise Rt3dError(f"FLOPs reduction rate must be >= 1 (got {rate})", "for example apply(2.6)")
        self.masks = self._select(self.scores(), rate)
        self.units.apply(self.masks)
        logger.info("pruned to %.2fx whole-model FLOPs", self.units.rate(self.masks))
        return self.masks

    def _select(self, scores: dict[str, torch.Tensor], rate: float) -> dict[str, torch.Tensor]:
        """select_to_rate under the layer cap, loosened 1.5x at a time where coarse units make
        the target unreachable under it (C3D's conv1 is one vanilla 8x4 unit), then without it."""
        if self.options.max_layer_rate is None:
            return select_to_rate(self.units, scores, rate, self.masks, self.min_keep)
        cap = self.options.max_layer_rate * self.rate
        for _ in range(6):
            try:
                return select_to_rate(self.units, scores, rate, self.masks, self.min_keep, max_layer_rate=cap)
            except Rt3dError:
                cap *= 1.5
        logger.info("the layer cap does not fit %.2fx: pruning without it", rate)
        return select_to_rate(self.units, scores, rate, self.masks, self.min_keep)

    @torch.no_grad()
    def scores(self) -> dict[str, torch.Tensor]:
        """Each unit's RMS relative to the reference, divided by its layer's live median.

        Why the median: the FLOPs-weighted shrink lowers a whole expensive layer before it
        separates its units. Ranked on the reference alone, such a layer's every unit
        would rank below every unit of an untouched layer, and a hard prune would cut it to
        the ``min_keep`` floor (conv1 of C3D at 27x in a probe). Divided by the median of
        the layer's live units (those above a fifth of its largest), a unit scores near 0
        only when it fell away from its own layer's bulk, that is, when it converged
        towards zero.

        ``options.cost_power`` p divides each score by the unit's relative cost**p. Why it
        is off by default: the median removes whole-layer shrink, and with it the FLOPs
        weighting, so C3D w0.125 (reweighted) came out with per-layer rates 3.9 2.8 2.4 2.3
        2.3 2.4 2.4 2.3 at 2.6x (rank correlation with the convs' FLOPs shares +0.21) and
        5.4 3.1 3.6 3.4 3.9 3.8 3.8 3.7 at 3.6x (-0.36). p = 0.03 (per-unit costs span
        1500x, so a 1.25x factor end to end) made the rates follow FLOPs share (+0.71 at
        both), but cut KGS conv1 to 2 of its 27 kernel positions at 2.6x (top-1 76.0%
        where filter pruning reached 89.9%, seed 0) and the heuristic's conv1 and conv2 to
        the 1-unit floor at 3.6x.
        """
        out = {}
        if self.options.score == "shrink":
            for n, lyr in self.units.layers.items():
                s = lyr.norms().detach().double() / self.ref_norms[n].double().clamp_min(1e-12)
                out[n] = s / self.cost[n].reshape(s.shape) ** self.options.cost_power
            return out
        for n, s in magnitude_scores(self.units, self.ref).items():
            live = s[s > 0.2 * s.max()]
            s = s / live.median().clamp_min(1e-12) ** (1 - self.options.layer_shrink) if live.numel() else s
            out[n] = s / self.cost[n].reshape(s.shape) ** self.options.cost_power
        return out

    # -- reports and state --------------------------------------------------------------------

    def achieved_rate(self) -> float:
        """The whole-model FLOPs rate of the current masks (1.0 before ``apply``)."""
        return self.units.rate(self.masks) if self.masks is not None else 1.0

    def relative_rms(self) -> dict[str, float]:
        """Each conv's weight RMS now, relative to the reference: how much it shrank."""
        self.start()
        return {n: float(lyr.conv.weight.detach().pow(2).mean().sqrt()) / self.ref[n]
                for n, lyr in self.units.layers.items()}

    def layer_report(self) -> list[dict[str, Any]]:
        """Per conv: units and rate kept, MACs, share of conv FLOPs, per-unit cost, shrink."""
        masks = self.masks if self.masks is not None else self.units.full_masks()
        rel = self.relative_rms()
        rows = self.units.layer_report(masks)
        for row in rows:
            lyr = self.units.layers[row["layer"]]
            row["flops_share"] = lyr.macs / self.units.conv_macs
            row["unit_cost"] = float(self.cost[row["layer"]].mean())
            row["relative_rms"] = rel[row["layer"]]
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "scheme": self.structure.scheme,
                "group_size": list(self.structure.group_size), "rate": self.rate, "lam": self.lam,
                "min_keep": self.min_keep, "ref": self.ref, "ref_sq": self.ref_sq,
                "ref_norms": {n: t.clone() for n, t in self.ref_norms.items()},
                "penalty": {n: t.clone() for n, t in self.penalty.items()}, "rounds": self.rounds,
                "masks": None if self.masks is None else {n: m.clone() for n, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = (self.algorithm, self.structure.scheme, list(self.structure.group_size))
        theirs = (state.get("algorithm"), state.get("scheme"), list(state.get("group_size", [])))
        if mine != theirs:
            raise Rt3dError(f"pruner state for {theirs} does not fit this pruner {mine}",
                            "load a state saved by a pruner with the same algorithm, scheme and group size")
        self.ref = None if state["ref"] is None else dict(state["ref"])
        self.ref_sq = dict(state["ref_sq"])
        self.ref_norms = {n: t.clone() for n, t in state.get("ref_norms", {}).items()}
        self.penalty = {n: t.clone() for n, t in state["penalty"].items()}
        self.rounds = int(state["rounds"])
        self.masks = None if state["masks"] is None else {n: m.clone().bool() for n, m in state["masks"].items()}

    def _check_model(self, model: nn.Module | None) -> None:
        inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
        if model is not None and inner is not self.model:
            raise Rt3dError("regularize() was given another model than the pruner's",
                            "pass the model the Pruner was built on (or call regularize() with no argument)")
