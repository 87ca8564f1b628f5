"""Atomic output files: a failure never leaves a half-written file in place of a good one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process umask, read without setting it where Linux allows (setting it races other threads)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, executable: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and rename it.

    The file gets the permissions any new file gets under the user's umask (a temporary file is
    private, 0600, and the rename would keep that); ``executable`` adds x where r is allowed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, (0o777 if executable else 0o666) & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Refuse, before any long work, an output path that cannot be written: its parent is a
    file, or the nearest existing folder is not writable, or it is itself a folder."""
    from .errors import Rt3dError

    if not str(path).strip():
        raise Rt3dError(f"the {what} path is empty", "give a file name, for example model.vmfb")
    path = Path(path)
    if path.is_dir():
        raise Rt3dError(f"the {what} {path} is a folder", "give a file name, for example model.vmfb")
    if path.exists() and not path.is_file():  # /dev/null, a pipe: the rename would replace it
        raise Rt3dError(f"the {what} {path} exists and is not a regular file", "give the path of a new or "
                        "ordinary file")
    _check_parent(path.parent, path, what)
    return path


def check_folder(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Refuse, before any long work, an output folder that is a file or cannot be created or written."""
    from .errors import Rt3dError

    if not str(path).strip():
        raise Rt3dError(f"the {what} path is empty", "give a folder, for example rt3d-out")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise Rt3dError(f"the {what} {path} is a file, not a folder", "choose another folder, or move that file away")
    _check_parent(path if path.exists() else path.parent, path, what)
    return path


def _check_parent(parent: Path, path: Path, what: str) -> None:
    from .errors import Rt3dError

    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise Rt3dError(f"cannot write the {what} {path}: {parent} is a file, not a folder",
                        "choose another path, or move that file away")
    try:  # a real probe: os.access says yes to root everywhere, even in /proc
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise Rt3dError(f"cannot write the {what} {path}: {parent} is not writable ({exc.strerror})",
                        "choose a folder you can write to") from None
