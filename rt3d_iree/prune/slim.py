"""Slim: drop conv output channels that nothing reads, before a model is compiled.

Why: filter pruning zeroes whole filters, and :func:`graph.fold_dead` then folds each removed
filter's constant into the layers that read it and zeroes their weights on that channel. The
channel is then computed by its producer and multiplied by zeros in every consumer: a sparse
model that runs at dense speed. The KGS pass skips zero columns and zero filter groups, but a
removed filter inside a partly kept gM group is still computed, and a whole removed filter
costs its consumers a gather of a zero column. Slicing the channel out of the producer (its
weight rows, bias, and the BatchNorms on its way) and out of every consumer (weight columns)
leaves a smaller dense model with exactly the same output, which every backend runs faster.
This is what Torch-Pruning calls physically removing channels.

A channel is dropped only where that is exact for any input: every use of the producer's
output is a one-to-one link (:class:`graph.ChannelGraph` ``sealed``: per-channel ops up to a
Conv3d or a flattened Linear; a residual add, a cat or the graph output keep the channel), and
every consumer's weights on it are zero. The producer's own weights do not matter: a channel
nobody reads is dead whatever it holds. Convs with groups > 1 on either side are left alone, as
are models with a per-channel PReLU (its slope would need slicing too).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from .graph import ChannelGraph, Link, trace_channels

logger = logging.getLogger(__name__)


@dataclass
class SlimReport:
    """Channels dropped per producer conv: name -> (channels before, channels after)."""

    channels: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(before - after for before, after in self.channels.values())

    def __str__(self) -> str:
        parts = [f"{n} {a}->{b}" for n, (a, b) in self.channels.items()]
        return f"dropped {self.dropped} dead channels in {len(parts)} convs ({', '.join(parts)})" if parts \
            else "no dead channels"


def _columns(link: Link, layer: nn.Module, channel_count: int) -> list[torch.Tensor]:
    """Per producer channel, the consumer's weight columns reading it (flattened to [out, n])."""
    w = layer.weight.detach()
    if link.kind == "conv":
        return [w[:, c].reshape(w.shape[0], -1) for c in range(channel_count)]
    s = link.spatial
    return [w[:, c * s:(c + 1) * s] for c in range(channel_count)]


def dead_channels(model: nn.Module, graph: ChannelGraph | None = None) -> dict[str, torch.Tensor]:
    """Per conv, a bool mask of the output channels nothing reads (only convs with any)."""
    modules = dict(model.named_modules())
    if any(isinstance(m, nn.PReLU) and m.num_parameters > 1 for m in modules.values()):
        logger.info("a per-channel PReLU: dead channels are kept (slicing its slopes is not supported)")
        return {}
    convs = {n: m for n, m in modules.items() if isinstance(m, nn.Conv3d)}
    graph = graph or trace_channels(model, convs, warn=False)
    out: dict[str, torch.Tensor] = {}
    for name in graph.order:
        links = graph.links.get(name) or []
        conv = convs[name]
        if not (graph.sealed.get(name) and links) or conv.groups != 1:
            continue
        if any(link.kind == "conv" and modules[link.consumer].groups != 1 for link in links):
            continue
        dead = torch.ones(conv.out_channels, dtype=torch.bool)
        for link in links:
            for c, col in enumerate(_columns(link, modules[link.consumer], conv.out_channels)):
                if dead[c] and bool(col.ne(0).any()):
                    dead[c] = False
        if bool(dead.all()):
            dead[0] = False  # a conv with no output channel cannot be exported: keep one, read by no one
        if bool(dead.any()):
            out[name] = dead
    return out


def _plan(model: nn.Module) -> tuple[ChannelGraph, dict[str, torch.Tensor]]:
    """The model's channel graph (traced once) and its dead channels."""
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv3d)}
    graph = trace_channels(model, convs, warn=False)
    return graph, dead_channels(model, graph)


@torch.no_grad()
def drop_dead_channels(model: nn.Module) -> SlimReport:
    """Remove, in place, every output channel nothing reads (module docstring); returns what went.

    The model's output is unchanged in eval and in training mode (a dropped channel's
    BatchNorm statistics are per channel and feed nothing). Call it on a copy if the original
    must keep its shapes, or use :func:`without_dead_channels`.
    """
    return _drop(model, *_plan(model))


def without_dead_channels(model: nn.Module) -> nn.Module:
    """``model`` itself when nothing is dead, else a copy with the dead channels removed (what
    ``rt3d_iree.compile`` imports). The graph is traced once, on the original: module names,
    which the plan refers to, are the same in the copy."""
    graph, dead = _plan(model)
    if not dead:
        return model
    slim = copy.deepcopy(model)
    _drop(slim, graph, dead)
    return slim


@torch.no_grad()
def _drop(model: nn.Module, graph: ChannelGraph, dead_by_conv: dict[str, torch.Tensor]) -> SlimReport:
    modules = dict(model.named_modules())
    report = SlimReport()
    for name, dead in dead_by_conv.items():
        idx = torch.nonzero(~dead).flatten()
        conv = modules[name]
        report.channels[name] = (conv.out_channels, int(idx.numel()))
        _slice(conv, "weight", idx, 0)
        if conv.bias is not None:
            _slice(conv, "bias", idx, 0)
        conv.out_channels = int(idx.numel())
        for bn_name in dict.fromkeys(graph.batchnorms.get(name, [])):
            bn = modules[bn_name]
            for attr in ("weight", "bias", "running_mean", "running_var"):
                if getattr(bn, attr, None) is not None:
                    _slice(bn, attr, idx, 0)
            bn.num_features = int(idx.numel())
        for link in graph.links[name]:
            layer = modules[link.consumer]
            if link.kind == "conv":
                _slice(layer, "weight", idx, 1)
                layer.in_channels = int(idx.numel())
            else:
                cols = (idx[:, None] * link.spatial + torch.arange(link.spatial)).flatten()
                _slice(layer, "weight", cols, 1)
                layer.in_features = int(cols.numel())
    if report.channels:
        logger.info("%s", report)
    return report


def _slice(module: nn.Module, attr: str, index: torch.Tensor, dim: int) -> None:
    value = getattr(module, attr)
    new = value.detach().index_select(dim, index).clone()
    if isinstance(value, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=value.requires_grad))
    else:
        setattr(module, attr, new)  # a registered buffer stays registered
