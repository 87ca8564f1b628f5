"""MLIR passes of rt3d-iree, importable as ``rt3d_iree.passes``."""

from .kgs_conv3d import KgsConv3dOptions, KgsConv3dPass, PassReport, run_pass

__all__ = ["KgsConv3dOptions", "KgsConv3dPass", "PassReport", "run_pass"]
