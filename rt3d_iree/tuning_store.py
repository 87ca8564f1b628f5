"""The tuning store: the group size `rt3d tune` recorded per target, in a small JSON file.

Why a module of its own: the compiler reads it (``--group-size auto``) and the tuner writes
it; the tuner compiles, so the compiler must not import the tuner.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import Rt3dError
from .files import atomic_write
from .passes.kgs.options import DEFAULT_GROUP_SIZE  # re-exported: callers imported it from here before
from .tools import cache_dir

# Group sizes `rt3d tune` times by default: the paper's 4 and 8 filters by 4 channels, plus the
# neighbours either way. Kept here (not in tune.py, which imports torch) so the CLI can print it.
CANDIDATES = ((4, 4), (8, 4), (16, 4), (8, 8), (4, 8))
CANDIDATES_TEXT = ",".join(f"{m}x{n}" for m, n in CANDIDATES)


def tuning_file() -> Path:
    return cache_dir() / "tuning.json"


def load_tuning(path: Path | None = None) -> dict:
    path = path or tuning_file()
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise Rt3dError(f"the tuning file {path} is corrupt",
                        f"delete it and run `rt3d tune` again: rm {path}") from None


def tuned_group_size(target: str, path: Path | None = None) -> tuple[int, int]:
    """The recorded group size for ``target``, else ``DEFAULT_GROUP_SIZE``."""
    entry = load_tuning(path).get(target)
    return tuple(entry["group_size"]) if entry else DEFAULT_GROUP_SIZE  # type: ignore[return-value]


def record(target: str, group_size: tuple[int, int], source: str, timings: list[dict] | None = None,
           path: Path | None = None) -> Path:
    path = path or tuning_file()
    data = load_tuning(path)
    data[target] = {"group_size": list(group_size), "source": source, "timings": timings or []}
    return atomic_write(path, json.dumps(data, indent=2))
