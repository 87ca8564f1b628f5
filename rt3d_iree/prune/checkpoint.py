"""Pruning checkpoints: one file holds the model spec, weights, masks and training state.

A checkpoint is what `rt3d prune` writes every epoch (to resume after a kill) and at the
end (for `rt3d compile` / ``rt3d_iree.compile``). It is read with ``weights_only=True``:
only tensors and plain containers, never arbitrary pickled code. Writes are atomic.
"""

from __future__ import annotations

import io
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import Rt3dError
from ..files import atomic_write
from ..models import build_model

logger = logging.getLogger(__name__)

FORMAT = "rt3d-prune-checkpoint"
VERSION = 1
SUFFIXES = (".pt", ".pth")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: a kill mid-write leaves the previous file intact."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buf)
    return atomic_write(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint, with one clear error for every way the file can be wrong."""
    path = Path(path)
    if not path.is_file():
        raise Rt3dError(f"no such checkpoint: {path}", "check the path (rt3d prune writes it with -o)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc) or not zipfile.is_zipfile(path):
            raise _unreadable(path, exc) from None
        raise Rt3dError(  # torch.save(model): a pickled module, which only its own code can rebuild
            f"{path} holds a pickled Python object (as torch.save(model) writes), not an rt3d pruning "
            "checkpoint or weights",
            "export the model instead and compile that: torch.export.save(torch.export.export(model, (x,)), "
            "'model.pt2'); rt3d compile model.pt2 -o model.vmfb",
        ) from None
    except Exception as exc:  # zip and EOF errors all mean the same thing here
        raise _unreadable(path, exc) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise Rt3dError(
            f"{path} is a PyTorch file but not an rt3d pruning checkpoint",
            "pass a checkpoint written by `rt3d prune`, or export your model with torch.export.save to a .pt2",
        )
    if state.get("version") != VERSION:
        raise Rt3dError(f"{path} has checkpoint version {state.get('version')}, this rt3d reads {VERSION}",
                        "rerun rt3d prune with this version")
    return state


def _unreadable(path: Path, exc: Exception) -> Rt3dError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return Rt3dError(f"{path} is not a readable checkpoint: it is truncated or corrupt ({type(exc).__name__}: {first})",
                     "use the last good one (rt3d prune keeps the latest epoch's as last.pt in OUTPUT.work/ and "
                     "continues from it with --resume) or rerun rt3d prune")


def model_from_checkpoint(state: dict[str, Any]) -> tuple[nn.Module, torch.Tensor]:
    """The model with its pruned weights, in eval mode, and an example input of its shape."""
    spec = state["model_spec"]
    model = build_model(spec["name"], spec["num_classes"], spec["width"], spec["frames"], spec["size"])
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise Rt3dError(f"the checkpoint's weights do not fit a {spec['name']} model: {str(exc).splitlines()[0]}",
                        "the file was edited or written by another version; rerun rt3d prune") from None
    example = torch.zeros(1, 3, spec["frames"], spec["size"], spec["size"])
    return model.eval(), example


def group_size_of(state: dict[str, Any]) -> tuple[int, int] | None:
    """The KGS group size a checkpoint was pruned with (None for a dense or filter-pruned one)."""
    structure = state.get("structure")
    if not structure or structure.get("scheme") not in ("kgs", "vanilla"):
        return None
    gm, gn = structure["group_size"]
    return int(gm), int(gn)
