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
scale with the fraction of its weights that are kept. A removed filter (all of an output
channel's weights zero, under any scheme) also removes the next layer's matching input
channel: its constant output is folded into that layer's bias (graph.py), so the weights
reading it cost nothing, for a conv or for a Linear after flatten. Without that credit
filter pruning would be charged for its own zeros only, which builds the ordering KGS >
vanilla > filter into the count. Linear layers are otherwise counted dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import Rt3dError
from ..models import count_macs
from ..passes.kgs.options import DEFAULT_GROUP_SIZE
from .graph import fold_dead, folded_entries, trace_channels

SCHEMES = ("filter", "vanilla", "kgs")


@dataclass(frozen=True)
class Structure:
    """A scheme and its group size (gM filters x gN channels)."""

    scheme: str = "kgs"
    group_size: tuple[int, int] = DEFAULT_GROUP_SIZE

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

    ``example`` is one input of the shape the model runs at (FLOPs depend on it). The
    model is traced with torch.fx once here to find which layers read which conv's
    channels one to one (graph.py); ``order`` lists the convs producers first (``layers``
    keeps the model's definition order).
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, structure: Structure) -> None:
        self.structure = structure
        macs = count_macs(model, example)
        self.macs = macs
        self.dense_macs = sum(macs.values())
        layers: dict[str, LayerUnits] = {}
        for name, mod in model.named_modules():
            if isinstance(mod, nn.Conv3d) and mod.groups == 1:
                layers[name] = LayerUnits(name, mod, structure, macs[name])
        if not layers:
            raise Rt3dError("the model has no Conv3d layer to prune", "pass a 3D CNN such as c3d, r2plus1d or s3d")
        self.modules = dict(model.named_modules())
        self.graph = trace_channels(model, {n: lyr.conv for n, lyr in layers.items()})
        self.layers = layers  # in definition order, as before; ``order`` is the execution order
        self.order = [n for n in self.graph.order if n in layers]
        self.conv_macs = sum(layer.macs for layer in self.layers.values())
        self.fixed_macs = self.dense_macs - self.conv_macs  # linear layers and grouped convs stay dense
        self._applied: tuple | None = None  # apply()'s key, the masks it holds, what to keep zero

    def counter(self, masks: dict[str, torch.Tensor], credit: bool = True) -> FlopsCounter:
        """An exact, incrementally updatable count of ``masks``' kept MACs."""
        return FlopsCounter(self, masks, credit)

    def kept_macs(self, masks: dict[str, torch.Tensor], credit: bool = True) -> float:
        """MACs left under ``masks``; ``credit=False`` charges each conv for its own zeros only."""
        return self.counter(masks, credit).exact_kept()

    def rate(self, masks: dict[str, torch.Tensor], credit: bool = True) -> float:
        """Whole-model FLOPs reduction of ``masks`` (dense MACs / kept MACs)."""
        return self.dense_macs / max(1.0, self.kept_macs(masks, credit))

    def full_masks(self) -> dict[str, torch.Tensor]:
        return {n: torch.ones(lyr.shape, dtype=torch.bool) for n, lyr in self.layers.items()}

    def masks_of(self) -> dict[str, torch.Tensor]:
        """Unit masks read from the weights' zeros."""
        return {n: lyr.unit_mask_of(lyr.conv.weight) for n, lyr in self.layers.items()}

    def dead_channels(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per conv, the output channels that are constant under ``masks`` (bool tensors).

        A filter is dead when every weight it keeps reads a dead channel, so removal
        cascades: a filter left only with inputs from removed filters is removed too.
        """
        return self.counter(masks).dead()

    @torch.no_grad()
    def fold_dead_channels(self, masks: dict[str, torch.Tensor]) -> None:
        """Fold each dead channel's constant into the layers reading it and zero what it leaves.

        See :func:`graph.fold_dead`: the consumer's bias (or the running mean of the
        BatchNorm right after a bias-free conv) takes the constant's contribution, the
        consumer's weights on the channel become zero (so the compiler's KGS compaction
        drops those columns), and a producer all of whose uses are folded loses its bias
        and BN affine on the channel. Exact for unpadded and 1x1x1 consumers and for
        Linear layers; a padded consumer reads zeros, not the constant, at its borders, so
        there it is exact in the interior only. Idempotent. Call it again after loading
        other weights into the model: :meth:`apply` folds only when the masks change.
        """
        self._applied = None
        fold_dead(self.graph, self.modules, self.dead_channels(masks))

    @torch.no_grad()
    def apply(self, masks: dict[str, torch.Tensor], fold: bool = True) -> None:
        """Zero every pruned weight exactly (and its gradient, if any).

        With ``fold`` (the default), also fold the channels of removed filters into the
        next layers (:meth:`fold_dead_channels`) when ``masks`` differ from the last call's
        (new tensors, or changed in place), and on every call keep what the fold zeroed
        at zero: the consumers' weights on dead channels, and the bias and BN affine of
        sealed producers. Called after each optimizer step, that is one multiply per conv
        (the weight mask already excludes dead channels) plus a few index writes.
        """
        key = (fold, tuple((n, id(t), t._version) for n, t in masks.items()))
        if self._applied is None or self._applied[0] != key:
            for n, lyr in self.layers.items():
                wm = lyr.expand(masks[n]).to(lyr.conv.weight.dtype)
                lyr.conv.weight.mul_(wm)
                if lyr.conv.weight.grad is not None:
                    lyr.conv.weight.grad.mul_(wm)
            dead = self.dead_channels(masks) if fold else {}
            if fold:
                fold_dead(self.graph, self.modules, dead)
            # the masks are held, so their ids cannot be reused by other tensors
            self._applied = (key, dict(masks), self._keep_zero(masks, dead))
            return
        weight_masks, zeros = self._applied[2]
        for n, lyr in self.layers.items():
            wm = weight_masks[n]
            lyr.conv.weight.mul_(wm)
            if lyr.conv.weight.grad is not None:
                lyr.conv.weight.grad.mul_(wm)
        for param, index in zeros:
            param[index] = 0
            if param.grad is not None:
                param.grad[index] = 0

    def _keep_zero(self, masks: dict[str, torch.Tensor], dead: dict[str, torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], list[tuple[torch.Tensor, tuple]]]:
        """Weight masks that also exclude dead input channels, and the other zeroed entries."""
        dead_inputs, zeros = folded_entries(self.graph, self.modules, dead)
        weight_masks = {}
        for n, lyr in self.layers.items():
            wm = lyr.expand(masks[n])
            if n in dead_inputs:
                wm = wm & ~dead_inputs[n].reshape(1, -1, *([1] * (wm.dim() - 2)))
            weight_masks[n] = wm.to(lyr.conv.weight.dtype)
        return weight_masks, zeros

    def layer_report(self, masks: dict[str, torch.Tensor]) -> list[dict]:
        """Per-layer rates, MACs and parameter counts.

        ``kept_params`` counts the weights the masks keep; ``kept_macs`` also credits the
        input channels of removed filters (``dead_inputs``), and ``rate`` is MACs / kept MACs.
        """
        count = self.counter(masks)
        rows = []
        for n, lyr in self.layers.items():
            kept_w = float((lyr.sizes * masks[n]).sum())
            kept_macs = count.layer_kept(n)
            rows.append({
                "layer": n, "shape": "x".join(str(s) for s in lyr.conv.weight.shape),
                "units": int(masks[n].numel()), "kept_units": int(masks[n].sum()),
                "params": int(float(lyr.sizes.sum())), "kept_params": int(kept_w),
                "macs": int(lyr.macs), "kept_macs": int(round(kept_macs)),
                "dead_inputs": int((~count.live[n]).sum()), "dead_outputs": int((count.row[n] == 0).sum()),
                "rate": lyr.macs / max(1.0, kept_macs),
            })
        return rows


class FlopsCounter:
    """Kept MACs of unit masks, with the credit for dead channels, updated one unit at a time.

    Per conv it holds K[f, c], the kept kernel positions of filter f on input channel c;
    ``live[c]``, whether channel c is alive (its producer filter is not dead); and
    ``row[f]``, the kept weights of filter f on live channels (its MACs per position).
    A filter with ``row[f] == 0`` is dead and kills the channel it feeds in every linked
    consumer, recursively. ``remove`` / ``restore`` change one unit in O(its size) plus
    the channels it kills or revives, which is what lets selection hit a FLOPs window
    exactly: every tentative step is counted exactly, then kept or undone.
    """

    def __init__(self, units: ModelUnits, masks: dict[str, torch.Tensor], credit: bool = True) -> None:
        self.units = units
        self.links = units.graph.links if credit else {}
        self.mpw = {n: lyr.macs_per_weight for n, lyr in units.layers.items()}
        self.credit: dict[tuple[str, str], float] = {}
        for n, links in self.links.items():
            for link in links:
                if link.kind == "linear":
                    lin = units.modules[link.consumer]
                    self.credit[(n, link.consumer)] = units.macs.get(link.consumer, 0) * link.spatial / lin.in_features
        self.K: dict[str, np.ndarray] = {}
        self.live: dict[str, np.ndarray] = {}
        self.row: dict[str, np.ndarray] = {}
        for n, lyr in units.layers.items():
            wm = lyr.expand(masks[n].bool()).reshape(lyr.f, lyr.c, lyr.k)
            self.K[n] = wm.sum(-1).numpy().astype(np.int64)
            self.live[n] = np.ones(lyr.c, dtype=bool)
        self.kept = float(units.fixed_macs)
        for n in units.order:  # producers first: a consumer's live channels are final when it is reached
            row = self.K[n] @ self.live[n].astype(np.int64)
            self.row[n] = row
            self.kept += self.mpw[n] * float(row.sum())
            dead = row == 0
            if dead.any():
                for link in self.links.get(n, ()):
                    if link.kind == "conv":
                        self.live[link.consumer][dead] = False
                    else:
                        self.kept -= self.credit[(n, link.consumer)] * int(dead.sum())

    def exact_kept(self) -> float:
        """Kept MACs summed afresh from the integer counts (no drift from incremental updates)."""
        total = float(self.units.fixed_macs) + sum(self.layer_kept(n) for n in self.units.order)
        for n, links in self.links.items():
            dead = int((self.row[n] == 0).sum())
            total -= sum(self.credit[(n, lk.consumer)] * dead for lk in links if lk.kind == "linear")
        return total

    def layer_kept(self, name: str) -> float:
        return self.mpw[name] * float(self.row[name].sum())

    def dead(self) -> dict[str, torch.Tensor]:
        return {n: torch.from_numpy(self.row[n] == 0) for n in self.units.order}

    def _cell(self, name: str, unit: int) -> tuple[int, int, int, int, int]:
        """(rows, rows end, channels, channels end, kernel positions per weight) of a unit."""
        lyr = self.units.layers[name]
        if lyr.structure.scheme == "filter":
            return unit, unit + 1, 0, lyr.c, lyr.k
        if lyr.structure.scheme == "vanilla":
            g, b, kc = unit // lyr.b, unit % lyr.b, lyr.k
        else:
            g, b, kc = unit // (lyr.b * lyr.k), (unit // lyr.k) % lyr.b, 1
        return g * lyr.gm, min(lyr.f, (g + 1) * lyr.gm), b * lyr.gn, min(lyr.c, (b + 1) * lyr.gn), kc

    def remove(self, name: str, unit: int) -> None:
        """Prune a kept unit (flat index into the layer's unit mask)."""
        r0, r1, c0, c1, kc = self._cell(name, unit)
        self.K[name][r0:r1, c0:c1] -= kc
        dec = kc * int(self.live[name][c0:c1].sum())
        if dec:
            row = self.row[name]
            row[r0:r1] -= dec
            self.kept -= self.mpw[name] * dec * (r1 - r0)
            for r in np.flatnonzero(row[r0:r1] == 0):
                self._switch(name, r0 + int(r), False)

    def restore(self, name: str, unit: int) -> None:
        """Un-prune a pruned unit."""
        r0, r1, c0, c1, kc = self._cell(name, unit)
        self.K[name][r0:r1, c0:c1] += kc
        inc = kc * int(self.live[name][c0:c1].sum())
        if inc:
            row = self.row[name]
            row[r0:r1] += inc
            self.kept += self.mpw[name] * inc * (r1 - r0)
            for r in np.flatnonzero(row[r0:r1] == inc):
                self._switch(name, r0 + int(r), True)

    def _switch(self, name: str, channel: int, alive: bool) -> None:
        """Filter ``channel`` of conv ``name`` died (or came back): update every linked consumer."""
        sign = 1 if alive else -1
        for link in self.links.get(name, ()):
            if link.kind == "linear":
                self.kept += sign * self.credit[(name, link.consumer)]
                continue
            c = link.consumer
            self.live[c][channel] = alive
            col = self.K[c][:, channel]
            if not col.any():
                continue
            row = self.row[c]
            row += sign * col
            self.kept += sign * self.mpw[c] * float(col.sum())
            flipped = (row == col) if alive else (row == 0)
            for q in np.flatnonzero(flipped & (col > 0)):
                self._switch(c, int(q), alive)


def check_structure(
    model: nn.Module, structure: Structure, masks: dict[str, torch.Tensor] | None = None
) -> list[str]:
    """The saved zeros follow ``structure``; returns the violations (empty when all is well).

    Every unit must be either entirely zero (pruned) or hold no zero at all: trained float
    weights are never exactly zero by chance, so a partly zero unit means the zeros do not
    follow the scheme. With ``masks``, every unit they mark pruned must be exactly zero too.

    An input channel whose weights are zero in every filter is a folded dead channel (its
    producer filter was removed, see :meth:`ModelUnits.fold_dead_channels`): its zeros
    are not counted against the units that cross it.
    """
    problems = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Conv3d) or mod.groups != 1:
            continue
        lyr = LayerUnits(name, mod, structure, 0)
        w = mod.weight.detach()
        live = (w != 0).flatten(2).any(-1).any(0)  # [C]: channels some filter reads
        live = live.to(w.dtype).reshape(1, -1, *([1] * (w.dim() - 2)))
        zero_units = lyr.squared_norms(w) == 0
        zeros_in_units = lyr.squared_norms((w == 0).to(w.dtype) * live)  # zeros per unit, live channels
        partial = (zeros_in_units > 0) & ~zero_units
        if partial.any():
            problems.append(f"{name}: {int(partial.sum())} of {partial.numel()} units are partly zero")
        if masks is not None and name in masks:
            bad = (~masks[name].bool()) & ~zero_units
            if bad.any():
                problems.append(f"{name}: {int(bad.sum())} pruned units hold nonzero weights")
    return problems
