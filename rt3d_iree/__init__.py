"""rt3d-iree: KGS-pruned 3D CNNs compiled with MLIR and IREE.

Front door: ``rt3d_iree.compile(model, example_args, target="host")`` returns a callable
compiled module; ``rt3d_iree.optimize`` returns the rewritten MLIR for stock iree-compile.
"""

from .api import compile, load, optimize
from .errors import CompileError, Rt3dError
from .runtime import CompiledModule
from .targets import TARGETS, get_target

__all__ = ["TARGETS", "CompileError", "CompiledModule", "Rt3dError", "compile", "get_target", "load", "optimize"]
