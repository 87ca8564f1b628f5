"""The KGS group size a compile, benchmark or pruning run uses: one resolver, one default.

Why a module of its own: the API, the compiler, the benchmarks and the CLI all take a group
size that may be given, ``"auto"`` (what `rt3d tune` recorded), or left out (an `rt3d prune`
checkpoint's own, else the default); resolving it in each of them had let the rules drift
(a non-integral size was silently truncated in one place, crashed in another).

Precedence: an explicit (gM, gN) > ``"auto"`` (the tuned size for the target) > the size a
checkpoint was pruned with > ``DEFAULT_GROUP_SIZE`` (passes/kgs/options.py, the pass's own).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import Rt3dError
from .importer import CHECKPOINT_SUFFIXES
from .passes.kgs.options import DEFAULT_GROUP_SIZE
from .targets import Target
from .tuning_store import tuned_group_size

__all__ = ["AUTO", "DEFAULT_GROUP_SIZE", "DEFAULT_TEXT", "GroupSize", "checkpoint_group_size", "resolve_group_size"]

logger = logging.getLogger(__name__)

AUTO = "auto"
GroupSize = tuple[int, int]
DEFAULT_TEXT = f"{DEFAULT_GROUP_SIZE[0]}x{DEFAULT_GROUP_SIZE[1]}"  # as --group-size spells it
_EXAMPLE = f"use for example group_size={DEFAULT_GROUP_SIZE} or --group-size {DEFAULT_TEXT}"


def resolve_group_size(value: Any = None, *, model: Any = None, target: str | Target | None = None) -> GroupSize:
    """The (gM filters, gN channels) to use, validated.

    Args:
        value: an explicit pair (wins), ``"auto"`` (the size `rt3d tune` recorded for
            ``target``, else the default) or None (``model``'s checkpoint size, else the default).
        model: what is being compiled; a path to an `rt3d prune` checkpoint (.pt / .pth), or a
            checkpoint already loaded (its dict), supplies the size it was pruned with.
        target: the target name or ``Target`` that ``"auto"`` looks up.

    Raises:
        Rt3dError: for anything but two positive integers (non-integral values such as
            (8.5, 4) included: truncating them would exploit a structure the model lacks),
            for strings other than ``"auto"``, and for ``"auto"`` without a target.
    """
    if isinstance(value, str):
        if value != AUTO:
            raise Rt3dError(f"group size must be two integers (filters, channels) or {AUTO!r}, got {value!r}",
                            _EXAMPLE)
        if target is None:
            raise Rt3dError("group size 'auto' needs a target to look up", "pass target=..., or an explicit size")
        name = target.name if isinstance(target, Target) else target
        return _warn_mismatch(_validated(tuned_group_size(name), f"the size `rt3d tune` recorded for {name}"), model)
    if value is not None:
        return _warn_mismatch(_validated(value), model)
    found = checkpoint_group_size(model)
    if found is not None:
        logger.info("group size %dx%d from the checkpoint", *found)
        return found
    return DEFAULT_GROUP_SIZE


def _warn_mismatch(size: GroupSize, model: Any) -> GroupSize:
    """Say so when a checkpoint was pruned with other groups than the ones asked for: the pass
    stays exact, but keeps only columns every filter of its group keeps, so it gains less."""
    pruned = checkpoint_group_size(model)
    if pruned is not None and pruned != size:
        logger.warning("the checkpoint was pruned with %dx%d groups but is compiled for %dx%d ones: the result is "
                       "exact, but only columns shared by a whole %dx%d group are skipped, so it runs slower; leave "
                       "the group size out to use the checkpoint's", *pruned, *size, *size)
    return size


def checkpoint_group_size(model: Any) -> GroupSize | None:
    """The group size an `rt3d prune` checkpoint (path or loaded dict) was pruned with; None otherwise."""
    if isinstance(model, (str, Path)) and Path(model).suffix in CHECKPOINT_SUFFIXES:
        from .prune.checkpoint import load_checkpoint

        model = load_checkpoint(model)
    if not isinstance(model, Mapping):
        return None
    from .prune.checkpoint import group_size_of

    found = group_size_of(dict(model))
    return None if found is None else _validated(found, "the checkpoint's group size")


def _validated(value: Any, what: str = "") -> GroupSize:
    """``value`` as two positive ints; integral floats (8.0, as JSON may hold) pass, 8.5 does not."""
    try:
        gm, gn = value
    except (TypeError, ValueError):
        gm = gn = None
    pair = [_integer(v) for v in (gm, gn)]
    source = f" ({what})" if what else ""
    if None in pair:
        raise Rt3dError(f"group size must be two integers (filters, channels), got {value!r}{source}", _EXAMPLE)
    gm, gn = pair
    if gm < 1 or gn < 1:
        raise Rt3dError(f"bad group size {gm}x{gn}{source}: filters and channels per group must be at least 1",
                        f"use for example {DEFAULT_TEXT} or 4x4")
    return gm, gn


def _integer(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real) and float(v).is_integer():
        return int(v)
    return None
