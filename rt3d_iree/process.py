"""Running the tools (iree-compile, iree-run-module, iree-benchmark-module, qemu, adb, pip).

Why one place: every external command needs the same three things, and each call site had
drifted without them:
- a timeout, so a hung tool or a phone that stopped answering ends with a message, not a
  frozen terminal (``TIMEOUTS_S``; ``RT3D_TIMEOUT_FACTOR`` scales them for slow machines);
- the tool's own error line: IREE's stderr can end in hundreds of "note: called from" lines,
  or put the INCOMPATIBLE line of a CPU-feature check in the middle of a long list, so the
  lines that say "error" are picked out, and the whole stderr is kept in a file;
- a reproducer that outlives the call: the module and inputs live in a temporary folder that
  is deleted on return, so on failure they are copied to ``rt3d-reproducers/`` and the
  "reproduce with" command names the copies.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import Rt3dError

logger = logging.getLogger(__name__)

DEFAULT_REPRODUCER_DIR = Path("rt3d-reproducers")

# Seconds each kind of command may take before it is stopped (full-size models included).
TIMEOUTS_S = {"compile": 3600.0, "run": 1800.0, "benchmark": 3600.0, "adb": 600.0, "download": 900.0}

_KEY = re.compile(r"error|INCOMPATIBLE|unsupported|not supported|failed|fatal|undefined symbol", re.IGNORECASE)
_NOISE = re.compile(r"note: called from|^\s*\^|^\s*$")


def timeout_s(kind: str) -> float:
    """The time limit for a ``kind`` of command, scaled by ``RT3D_TIMEOUT_FACTOR`` (default 1)."""
    try:
        factor = float(os.environ.get("RT3D_TIMEOUT_FACTOR", "1"))
    except ValueError:
        raise Rt3dError(f"RT3D_TIMEOUT_FACTOR must be a number, got {os.environ['RT3D_TIMEOUT_FACTOR']!r}",
                        "set it to, for example, 4 on a slow machine, or unset it") from None
    return TIMEOUTS_S[kind] * max(factor, 0.0)


def key_lines(stderr: str, limit: int = 8, tail: int = 3, width: int = 400) -> str:
    """The lines of a tool's stderr that say what went wrong, then its last few lines; a line
    longer than ``width`` (a CPU-feature list) is cut, the whole of it being in stderr.txt."""
    lines = stderr.strip().splitlines()
    key = [ln for ln in lines if _KEY.search(ln) and not _NOISE.search(ln)][:limit]
    last = [ln for ln in lines[-tail:] if ln not in key and not _NOISE.search(ln)]
    picked = key + last or lines[-tail:]
    return "\n".join(ln if len(ln) <= width else ln[:width] + " [...]" for ln in picked)


def run(cmd: Sequence[str], what: str, kind: str, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` with text capture and the ``kind``'s timeout (an Rt3dError when it passes)."""
    limit = timeout_s(kind)
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=limit, **kwargs)
    except subprocess.TimeoutExpired:
        raise _timed_out(what, limit, cmd) from None


def communicate(proc: subprocess.Popen, what: str, kind: str, cmd: Sequence[str]) -> tuple[str, str]:
    """``proc.communicate`` with the ``kind``'s timeout; the process is killed when it passes."""
    limit = timeout_s(kind)
    try:
        return proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise _timed_out(what, limit, cmd) from None


def _timed_out(what: str, limit: float, cmd: Sequence[str]) -> Rt3dError:
    return Rt3dError(f"{what} did not finish within {limit:g} s and was stopped: {shlex.join(cmd)}",
                     "if the model is just large or the machine slow, allow more time with "
                     "RT3D_TIMEOUT_FACTOR=4; a phone over adb may have disconnected (check `adb devices`)")


def keep_reproducer(workdir: str | Path, cmd: Sequence[str], stderr: str, what: str,
                    base: str | Path | None = None) -> tuple[Path, str]:
    """Copy a failed call's temporary folder to a reproducer folder that stays; returns it and
    the command rewritten to use the copies. ``command.sh`` and ``stderr.txt`` go with it."""
    from .files import atomic_write

    base = Path(base) if base is not None else DEFAULT_REPRODUCER_DIR
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-") + re.sub(r"\W+", "-", what) + "-",
                                   dir=base)).resolve()
    workdir = Path(workdir)
    for item in workdir.iterdir():
        if item.is_file():
            shutil.copy2(item, folder / item.name)
    command = shlex.join(cmd).replace(str(workdir), str(folder))
    atomic_write(folder / "command.sh", f"#!/bin/sh\n# reproduces the failed {what}\n{command}\n", executable=True)
    atomic_write(folder / "stderr.txt", stderr)
    return folder, command


def check(proc: subprocess.CompletedProcess, what: str, cmd: Sequence[str], workdir: str | Path | None = None) -> None:
    """An Rt3dError naming the tool's key error lines when ``proc`` failed; with ``workdir``
    (the call's temporary folder) a reproducer is kept and the hint's command uses it."""
    if proc.returncode == 0:
        return
    command = shlex.join(cmd)
    where = ""
    if workdir is not None:
        folder, command = keep_reproducer(workdir, cmd, proc.stderr, what)
        where = f"\nreproducer: {folder} (the module, its inputs, command.sh and the whole stderr.txt)"
    hint = f"reproduce with: {command}"
    if "INCOMPATIBLE" in proc.stderr:
        hint = ("the module was compiled for another device than the one running it: compile for the "
                f"runner's target (for example --target aarch64 under qemu); {hint}")
    raise Rt3dError(f"{what} failed (exit {proc.returncode}):\n{key_lines(proc.stderr)}{where}", hint)
