"""A loaded module: IREE instance, device and context made once, then reused by every call.

Why: creating them and copying the vmfb on each call cost full-size C3D about a second per
call (1476 ms per Python call against 459 ms in iree-benchmark-module for the same module),
so a user calling ``compiled(x)`` in a loop saw the KGS model 8.7x slower than it is.

Why every call runs on one thread of the session's own: IREE's synchronous invocation
busy-waits on the calling thread while its task workers run the dispatches (runners.py,
"the caller's spin"). With as many workers as cores, that spinning thread takes a core's
share from the workers. The session's caller thread runs at the lowest nice value
(``CALLER_NICE``), so its spin uses little time any worker wants, while the user's thread
blocks without spinning. Unlike iree-benchmark-module's SCHED_IDLE caller in the benchmark
runner, a niced thread cannot be starved by other work on the machine. One thread also makes
the session safe to call from several threads: calls queue and run one at a time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import Rt3dError

logger = logging.getLogger(__name__)

CALLER_NICE = 19
CPU_DRIVERS = ("local-task", "local-sync")


def _nice_caller() -> None:
    try:  # Linux: a thread's own nice value (best effort; elsewhere the caller just spins)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CALLER_NICE)
    except (AttributeError, OSError) as exc:
        logger.debug("cannot lower the IREE caller thread's priority: %s", exc)


class Session:
    """``vmfb``'s ``function`` loaded for ``driver``; call it with numpy arrays."""

    def __init__(self, vmfb: bytes, function: str, driver: str) -> None:
        import iree.runtime as rt

        try:
            self._context = rt.SystemContext(config=rt.Config(driver))
            vm_module = rt.VmModule.copy_buffer(self._context.instance, vmfb)
            self._context.add_vm_module(vm_module)
            self._function = self._context.modules[vm_module.name][function]
        except (RuntimeError, ValueError, KeyError) as exc:
            raise Rt3dError(
                f"cannot load the compiled module: {exc}",
                "the vmfb may be truncated, built for another target or by another IREE version; compile it again",
            ) from exc
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rt3d-iree-call", initializer=_nice_caller)

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._pool.submit(self._invoke, list(inputs)).result()

    def _invoke(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        result = self._function(*inputs)
        outs = result if isinstance(result, tuple) else (result,)
        return [np.array(o.to_host()) for o in outs]  # a copy: the device buffer is released with ``result``

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
