"""MLIR passes of rt3d-iree, importable as ``rt3d_iree.passes``."""

from .kgs_conv3d import KgsConv3dOptions, KgsConv3dPass, PassReport, run_pass
from .trim_window_inputs import TrimWindowInputsPass, run_trim

__all__ = ["KgsConv3dOptions", "KgsConv3dPass", "PassReport", "TrimWindowInputsPass", "run_pass", "run_trim"]
