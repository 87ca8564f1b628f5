"""The environment timed tools run in: glibc malloc settings and the IREE runtime's tools.

Why a module of its own: the runners start tools under these settings and the benchmark
harness times them; keeping both here lets either import it without importing the other.
Every engine runs under the same glibc malloc settings (``ALLOCATOR_ENV``). Why: IREE 3.13's
CPU device takes each call's transient memory from malloc, and glibc serves blocks over
32 MiB with a fresh mmap that it unmaps on free, so every call page-faults its activations
in anew (full-size C3D: about 26,000 faults and a quarter of the CPU time per call). The
measured effect is in rt3d_iree/bench.py's docstring.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import Rt3dError

# Never hand memory back to the OS during a run: no mmap'd blocks, no heap trimming, and
# huge pages for the heap (glibc >= 2.35; older glibc ignores the tunable).
ALLOCATOR_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
    "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
}


def allocator_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``ALLOCATOR_ENV`` added; a user's
    own GLIBC_TUNABLES are kept and extended."""
    env = dict(os.environ if base is None else base)
    for key, value in ALLOCATOR_ENV.items():
        if key == "GLIBC_TUNABLES" and env.get(key) and value not in env[key].split(":"):
            env[key] = f"{env[key]}:{value}"
        elif key != "GLIBC_TUNABLES" or not env.get(key):
            env[key] = value
    return env


def allocator_tuned(env: dict[str, str] | None = None) -> bool:
    """Whether ``env`` (default: this process's) already has the benchmark malloc settings."""
    env = os.environ if env is None else env
    return allocator_env(dict(env)) == dict(env)


def runtime_tool(name: str) -> str:
    """Path of a tool shipped in the iree-base-runtime wheel (iree-benchmark-module, ...)."""
    import iree._runtime_libs as libs

    path = Path(libs.__file__).parent / name
    if not path.is_file():
        raise Rt3dError(f"{name} is missing from the iree-base-runtime wheel", "reinstall iree-base-runtime==3.13.0")
    return str(path)
