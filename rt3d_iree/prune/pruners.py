"""Pruners: the three algorithms as plans of training phases.

The second of the pruning package's layers. Every algorithm gets the same epoch budget
(``reg_epochs`` to find the structure, ``retrain_epochs`` of masked retraining with a
cosine learning rate), so a table compares algorithms, not training lengths:

- ``heuristic``: magnitude pruning step by step: ``rounds`` steps whose FLOPs rates grow
  geometrically to the target, fine-tuning under the masks between steps;
- ``fixed``: group-lasso training with the same penalty for every unit, then hard
  pruning of the smallest units to the target;
- ``reweighted``: ``rounds`` rounds of reweighted, FLOPs-weighted regularization
  (penalties refreshed from the live weights at each round), then hard pruning of what
  converged to zero down to the target.

The regularizers act as proximal steps after each optimizer step (see ``pruner``), so
Adam's per-parameter normalisation cannot cancel their per-layer FLOPs weighting.

A phase is a run of epochs with one optimizer; ``Phase.prune_to`` and ``Phase.reweight``
say what happens before its first epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Rt3dError

ALGORITHMS = ("heuristic", "fixed", "reweighted")

# Regularization strengths (lambda) of the Pruner's proximal steps: the relative shrink
# per step and per unit of learning rate of a unit that holds the average FLOP (reweighted)
# or of every unit (fixed). Measured on C3D w0.125, 16x32x32, 4 epochs of 16 Adam steps at
# lr 1e-3: reweighted 1.0 shrinks conv1 (the dearest units) to 0.54 of its RMS and conv2 to
# 0.86 with no loss of accuracy; 3.0 collapses conv1 to 0.02 and costs 27 points. Fixed 3.0
# shrinks every conv to about 0.85.
DEFAULT_LAMBDA = {"fixed": 3.0, "reweighted": 1.0}


@dataclass(frozen=True)
class Phase:
    kind: str  # "dense", "regularize", "finetune", "retrain"
    epochs: int
    prune_to: float | None = None  # hard-prune to this whole-model FLOPs rate first
    reweight: bool = False  # refresh reweighted penalties first
    cosine: bool = False  # cosine learning-rate decay over the phase


def plan(algorithm: str, rate: float, reg_epochs: int, retrain_epochs: int, rounds: int,
         dense_epochs: int = 0) -> list[Phase]:
    """The phases of one pruning run (``dense_epochs`` > 0 trains the dense model first)."""
    if algorithm not in ALGORITHMS:
        raise Rt3dError(f"unknown pruning algorithm {algorithm!r}", f"use one of: {', '.join(ALGORITHMS)}")
    if rounds < 1 or reg_epochs < 0 or retrain_epochs < 1:
        raise Rt3dError("rounds must be >= 1, reg epochs >= 0 and retrain epochs >= 1",
                        "for example --rounds 3 --reg-epochs 3 --retrain-epochs 3")
    phases = [Phase("dense", dense_epochs, cosine=True)] if dense_epochs else []
    if algorithm == "heuristic":
        rounds = min(rounds, reg_epochs) if reg_epochs else 0
        per = _split(reg_epochs, rounds)
        for i, e in enumerate(per):
            phases.append(Phase("finetune", e, prune_to=rate ** ((i + 1) / (rounds + 1))))
    elif algorithm == "fixed":
        if reg_epochs:
            phases.append(Phase("regularize", reg_epochs))
    else:
        rounds = min(rounds, reg_epochs) if reg_epochs else 0
        for e in _split(reg_epochs, rounds):
            phases.append(Phase("regularize", e, reweight=True))
    phases.append(Phase("retrain", retrain_epochs, prune_to=rate, cosine=True))
    return phases


def _split(total: int, parts: int) -> list[int]:
    if parts <= 0:
        return []
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
