"""rt3d-iree: KGS-pruned 3D CNNs compiled with MLIR and IREE.

Front door: ``rt3d_iree.compile(model, example_args, target="host")`` returns a callable
compiled module; ``rt3d_iree.load_module(path)`` reloads a saved one; ``rt3d_iree.optimize``
returns the rewritten MLIR for stock iree-compile, ``rt3d_iree.import_model`` the imported MLIR.
"""

from .api import compile, import_model, load, optimize
from .errors import CompileError, Rt3dError
from .runtime import CompiledModule, load_module
from .targets import TARGETS, get_target

__all__ = ["TARGETS", "CompileError", "CompiledModule", "Rt3dError", "compile", "get_target", "import_model", "load",
           "load_module", "optimize"]
