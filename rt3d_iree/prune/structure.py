"""Structure: how each Conv3d weight is cut into prunable units, and what each unit costs.

The first of the pruning package's three layers (structure, importance, pruners). A
scheme names the unit that is kept or removed as a whole:

- ``filter``: one filter (output channel) W[f, :, :, :, :];
- ``vanilla``: one kernel group, the gM x gN kernels W[g*gM:(g+1)*gM, b*gN:(b+1)*gN];
- ``kgs``: one kernel position inside a kernel group: W[g*gM:(g+1)*gM, b*gN:(b+1)*gN, kd, kh, kw].

Group sizes need not divide a layer's filters or channels: the last group of a layer is
smaller (the remainder), and its cost is counted for the weights it really holds. The
compiler handles such remainders the same way.

FLOPs are counted as multiply-accumulates of the nonzero-weight structure: a conv's MACs
scale with the fraction of its weights that are kept. Linear layers stay dense. Filter
pruning would also let the next layer skip the removed channel; that saving is not
counted, so every scheme is charged the same way (by its own zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import Rt3dError
from ..models import count_macs

SCHEMES = ("filter", "vanilla", "kgs")


@dataclass(frozen=True)
class Structure:
    """A scheme and its group size (gM filters x gN channels)."""

    scheme: str = "kgs"
    group_size: tuple[int, int] = (8, 4)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise Rt3dError(f"unknown sparsity scheme {self.scheme!r}", f"use one of: {', '.join(SCHEMES)}")
        gm, gn = self.group_size
        if not (isinstance(gm, int) and isinstance(gn, int) and gm >= 1 and gn >= 1):
            raise Rt3dError(f"bad group size {gm}x{gn}", "use positive integers such as 8x4 (filters x channels)")


class LayerUnits:
    """The prunable units of one Conv3d under a :class:`Structure`.

    ``norms(weight)`` gives every unit's L2 norm, differentiable, so regularizers can be
    computed on the live weight; ``expand(mask)`` turns a unit mask into a weight mask.
    """

    def __init__(self, name: str, conv: nn.Conv3d, structure: Structure, macs: int) -> None:
        if conv.groups != 1:
            raise Rt3dError(
                f"{name}: grouped conv3d (groups={conv.groups}) cannot take {structure.scheme} sparsity",
                "prune only ordinary convs; grouped convs are left dense",
            )
        self.name, self.conv, self.structure, self.macs = name, conv, structure, macs
        f, c = conv.weight.shape[:2]
        self.f, self.c = f, c
        self.k = conv.weight[0, 0].numel()
        gm, gn = structure.group_size
        self.gm, self.gn = min(gm, f), min(gn, c)
        self.g, self.b = -(-f // self.gm), -(-c // self.gn)
        rows = torch.clamp(f - torch.arange(self.g) * self.gm, max=self.gm)
        cols = torch.clamp(c - torch.arange(self.b) * self.gn, max=self.gn)
        if structure.scheme == "filter":
            sizes = torch.full((f,), c * self.k)
        elif structure.scheme == "vanilla":
            sizes = rows[:, None] * cols[None, :] * self.k
        else:
            sizes = (rows[:, None] * cols[None, :])[..., None].expand(self.g, self.b, self.k)
        self.sizes = sizes.to(torch.float64)  # weights per unit
        self.macs_per_weight = macs / (f * c * self.k)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.sizes.shape)

    @property
    def unit_macs(self) -> torch.Tensor:
        return self.sizes * self.macs_per_weight

    def _blocked(self, w: torch.Tensor) -> torch.Tensor:
        """[F, C, k...] -> [G, gM, B, gN, K], zero-padded at the ragged edges."""
        w = w.reshape(self.f, self.c, self.k)
        pad_f, pad_c = self.g * self.gm - self.f, self.b * self.gn - self.c
        if pad_f or pad_c:
            w = nn.functional.pad(w, (0, 0, 0, pad_c, 0, pad_f))
        return w.reshape(self.g, self.gm, self.b, self.gn, self.k)

    def squared_norms(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of squares of every unit (differentiable when ``weight`` requires grad)."""
        w = self.conv.weight if weight is None else weight
        if self.structure.scheme == "filter":
            return w.reshape(self.f, -1).pow(2).sum(1)
        sq = self._blocked(w).pow(2).sum(dim=(1, 3))  # [G, B, K]
        return sq.sum(-1) if self.structure.scheme == "vanilla" else sq

    def norms(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        return self.squared_norms(weight).clamp_min(1e-24).sqrt()

    def expand(self, mask: torch.Tensor) -> torch.Tensor:
        """Unit mask (``self.shape``) -> weight-shaped mask."""
        shape = self.conv.weight.shape
        if self.structure.scheme == "filter":
            return mask.reshape(-1, 1).expand(self.f, self.c * self.k).reshape(shape)
        m = mask if self.structure.scheme == "kgs" else mask[..., None].expand(self.g, self.b, self.k)
        full = m[:, None, :, None, :].expand(self.g, self.gm, self.b, self.gn, self.k)
        full = full.reshape(self.g * self.gm, self.b * self.gn, self.k)[: self.f, : self.c]
        return full.reshape(shape)

    def unit_mask_of(self, weight: torch.Tensor) -> torch.Tensor:
        """Units that hold any nonzero weight."""
        return self.squared_norms(weight.detach()) > 0


class ModelUnits:
    """Every prunable Conv3d of a model, its MACs, and the model's dense MACs.

    ``example`` is one input of the shape the model runs at (FLOPs depend on it).
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, structure: Structure) -> None:
        self.structure = structure
        macs = count_macs(model, example)
        self.dense_macs = sum(macs.values())
        self.layers: dict[str, LayerUnits] = {}
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Conv3d) and mod.groups == 1:
                self.layers[name] = LayerUnits(name, mod, structure, macs[name])
        if not self.layers:
            raise Rt3dError("the model has no Conv3d layer to prune", "pass a 3D CNN such as c3d, r2plus1d or s3d")
        self.conv_macs = sum(layer.macs for layer in self.layers.values())
        self.fixed_macs = self.dense_macs - self.conv_macs  # linear layers and grouped convs stay dense

    def kept_macs(self, masks: dict[str, torch.Tensor]) -> float:
        return self.fixed_macs + sum(float((lyr.unit_macs * masks[n]).sum()) for n, lyr in self.layers.items())

    def rate(self, masks: dict[str, torch.Tensor]) -> float:
        """Whole-model FLOPs reduction of ``masks`` (dense MACs / kept MACs)."""
        return self.dense_macs / max(1.0, self.kept_macs(masks))

    def full_masks(self) -> dict[str, torch.Tensor]:
        return {n: torch.ones(lyr.shape, dtype=torch.bool) for n, lyr in self.layers.items()}

    def masks_of(self) -> dict[str, torch.Tensor]:
        """Unit masks read from the weights' zeros."""
        return {n: lyr.unit_mask_of(lyr.conv.weight) for n, lyr in self.layers.items()}

    @torch.no_grad()
    def apply(self, masks: dict[str, torch.Tensor]) -> None:
        """Zero every pruned weight exactly (and its gradient, if any)."""
        for n, lyr in self.layers.items():
            wm = lyr.expand(masks[n]).to(lyr.conv.weight.dtype)
            lyr.conv.weight.mul_(wm)
            if lyr.conv.weight.grad is not None:
                lyr.conv.weight.grad.mul_(wm)

    def layer_report(self, masks: dict[str, torch.Tensor]) -> list[dict]:
        """Per-layer rates, MACs and parameter counts."""
        rows = []
        for n, lyr in self.layers.items():
            kept_w = float((lyr.sizes * masks[n]).sum())
            total_w = float(lyr.sizes.sum())
            rows.append({
                "layer": n, "shape": "x".join(str(s) for s in lyr.conv.weight.shape),
                "units": int(masks[n].numel()), "kept_units": int(masks[n].sum()),
                "params": int(total_w), "kept_params": int(kept_w),
                "macs": int(lyr.macs), "kept_macs": int(kept_w * lyr.macs_per_weight),
                "rate": total_w / max(1.0, kept_w),
            })
        return rows


def check_structure(
    model: nn.Module, structure: Structure, masks: dict[str, torch.Tensor] | None = None
) -> list[str]:
    """The saved zeros follow ``structure``; returns the violations (empty when all is well).

    Every unit must be either entirely zero (pruned) or hold no zero at all: trained float
    weights are never exactly zero by chance, so a partly zero unit means the zeros do not
    follow the scheme. With ``masks``, every unit they mark pruned must be exactly zero too.
    """
    problems = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Conv3d) or mod.groups != 1:
            continue
        lyr = LayerUnits(name, mod, structure, 0)
        w = mod.weight.detach()
        zero_units = lyr.squared_norms(w) == 0
        zeros_in_units = lyr.squared_norms((w == 0).to(w.dtype))  # zeros per unit
        partial = (zeros_in_units > 0) & ~zero_units
        if partial.any():
            problems.append(f"{name}: {int(partial.sum())} of {partial.numel()} units are partly zero")
        if masks is not None and name in masks:
            bad = (~masks[name].bool()) & ~zero_units
            if bad.any():
                problems.append(f"{name}: {int(bad.sum())} pruned units hold nonzero weights")
    return problems
