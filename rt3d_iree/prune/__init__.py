"""Structured pruning of 3D CNNs: filter, vanilla and KGS sparsity reaching a whole-model FLOPs target.

Three layers, as in Torch-Pruning: ``structure`` (how a conv weight is cut into units and
what each costs), ``importance`` (scores and regularizers), ``pruners`` (the heuristic,
fixed-regularization and reweighted-regularization algorithms as plans of training
phases), ``pruner`` (the :class:`Pruner` that carries them out, in a user's own training
loop or in ``train``). ``train`` runs a plan with checkpoints, resume and DDP; ``table`` builds the
paper's Table 1 on the synthetic data set.
"""

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import PruneConfig
from .pruner import Pruner, PrunerOptions
from .pruners import ALGORITHMS
from .structure import SCHEMES, ModelUnits, Structure, check_structure
from .train import RunResult, prune, train_dense

__all__ = [
    "ALGORITHMS", "SCHEMES", "ModelUnits", "PruneConfig", "Pruner", "PrunerOptions", "RunResult", "Structure",
    "check_structure",
    "load_checkpoint", "model_from_checkpoint", "prune", "save_checkpoint", "train_dense",
]
