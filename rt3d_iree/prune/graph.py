"""Graph: which conv output channels feed which layers one channel to one channel.

A removed filter (a conv output channel whose weights are all zero, under any scheme)
does not produce zeros: it produces a constant, act(bias) or act(BN shift). Every layer
that reads that channel through per-channel ops only (BatchNorm, activations, pooling,
dropout, identity, and flatten before a Linear) sees a constant input channel, so its
weights on that channel can be folded into its bias and then skipped. That is what makes
filter pruning fair: it removes the next layer's input channel too.

The links are found by tracing the model with torch.fx. Anything else on the way (a
residual ``add``, ``cat``, an unknown op, the graph output) means the channel is not
dead along that path: that use gets no credit, and the producer's own bias / BN affine
must stay, since that path still reads the constant. A model fx cannot trace gets no
credit at all (a warning is logged), never an error.

Folding is exact where the consumer reads the constant everywhere: 1x1x1 or unpadded
consumers, and Linear layers after flatten. A padded consumer reads zeros, not the
constant, at its borders, so there the fold is exact in the interior only (in eval mode;
in training mode a following BN's batch statistics also see the borders). A BatchNorm
on the path is evaluated in its mode at fold time (train: a constant channel comes out
as beta; eval: beta - gamma * running_mean / sqrt(running_var + eps)).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import fx, nn

logger = logging.getLogger(__name__)

Step = Callable[[torch.Tensor], torch.Tensor]

# Ops that act on each channel separately and map a constant channel to a constant.
_POOLS = (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)
_SAME = (nn.Identity, nn.Dropout, nn.Dropout3d)  # constant in, same constant out (in expectation)
_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.PReLU,
)
_F = nn.functional
_FN_ACTIVATIONS = {
    _F.relu, torch.relu, _F.relu6, _F.leaky_relu, _F.elu, _F.selu, _F.gelu, _F.silu, _F.mish, torch.sigmoid,
    _F.sigmoid, torch.tanh, _F.tanh, _F.hardswish, _F.hardsigmoid, _F.hardtanh, _F.softplus,
}
_FN_POOLS = {_F.max_pool3d, _F.avg_pool3d, _F.adaptive_avg_pool3d, _F.adaptive_max_pool3d}
_FN_DROPOUT = {_F.dropout, _F.dropout3d}
_METHOD_ACTIVATIONS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}
_METHOD_SAME = {"contiguous", "clone", "detach"}


@dataclass(frozen=True)
class Link:
    """A layer that reads a conv's output channels one to one.

    ``steps`` map the producer's per-channel constant (shape [1, C, 1, 1, 1]) to what the
    consumer reads. For a Linear after flatten, channel c is the input features
    c*spatial .. (c+1)*spatial - 1.
    """

    consumer: str
    kind: str  # "conv" or "linear"
    steps: tuple[Step, ...]
    spatial: int = 1

    def constant(self, base: torch.Tensor) -> torch.Tensor:
        """What the consumer reads, per channel, when the producer outputs ``base`` [C]."""
        v = base.detach().reshape(1, -1, 1, 1, 1).clone()
        for step in self.steps:
            v = step(v)
        return v.reshape(-1)


@dataclass
class ChannelGraph:
    """Producer conv -> the layers reading its channels one to one (see the module docstring)."""

    order: list[str]  # every conv, producers before their consumers
    links: dict[str, list[Link]] = field(default_factory=dict)
    sealed: dict[str, bool] = field(default_factory=dict)  # every use of the output is a link
    batchnorms: dict[str, list[str]] = field(default_factory=dict)  # BNs on a producer's paths
    bn_after: dict[str, str] = field(default_factory=dict)  # conv -> BN that is its only user


def _bn_step(bn: nn.modules.batchnorm._BatchNorm) -> Step:
    def step(v: torch.Tensor) -> torch.Tensor:
        c = v.shape[1]
        gamma = bn.weight.detach().reshape(1, c, 1, 1, 1) if bn.affine else torch.ones_like(v)
        beta = bn.bias.detach().reshape(1, c, 1, 1, 1) if bn.affine else torch.zeros_like(v)
        if bn.training or bn.running_mean is None:
            return beta.clone()  # batch statistics of a constant channel: mean = it, var = 0
        rm, rv = bn.running_mean.reshape(1, c, 1, 1, 1), bn.running_var.reshape(1, c, 1, 1, 1)
        return (v - rm) / torch.sqrt(rv + bn.eps) * gamma + beta

    return step


def _module_step(mod: nn.Module) -> Step:
    return lambda v: mod(v.clone())


def _function_step(fn: Callable, args: tuple, kwargs: dict) -> Step:
    return lambda v: fn(v.clone(), *args, **kwargs)


def _only_input(node: fx.Node, src: fx.Node) -> bool:
    """``src`` is the node's first argument and no other argument is a node."""
    if not node.args or node.args[0] is not src:
        return False
    found: list[fx.Node] = []
    fx.node.map_arg((node.args[1:], node.kwargs), found.append)
    return not found


def _flatten_at_1(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        mod = modules.get(str(node.target))
        return isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1
    if node.op == "call_function" and node.target is torch.flatten or node.op == "call_method" and (
        node.target == "flatten"
    ):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    return False


def _pass_step(node: fx.Node, modules: dict[str, nn.Module], flat: bool) -> tuple[bool, Step | None]:
    """(known, step): whether ``node`` acts per channel, and its map of a constant (None: unchanged)."""
    if node.op == "call_module":
        mod = modules.get(str(node.target))
        if isinstance(mod, nn.BatchNorm3d) and not flat:
            return True, _bn_step(mod)
        if isinstance(mod, _POOLS):
            return not flat and not getattr(mod, "return_indices", False), None
        if isinstance(mod, _SAME):
            return True, None
        if isinstance(mod, _ACTIVATIONS):
            if isinstance(mod, nn.PReLU) and flat and mod.num_parameters != 1:
                return False, None  # per-feature slopes after flatten are not per channel
            return True, _module_step(mod)
        return False, None
    if node.op == "call_function":
        if node.target in _FN_POOLS:
            indices = node.kwargs.get("return_indices") or any(a is True for a in node.args[1:])
            return not flat and not indices, None
        if node.target in _FN_DROPOUT:
            return True, None
        if node.target in _FN_ACTIVATIONS:
            return True, _function_step(node.target, tuple(node.args[1:]), dict(node.kwargs))
        return False, None
    if node.op == "call_method":
        if node.target in _METHOD_SAME:
            return True, None
        if node.target in _METHOD_ACTIVATIONS:
            name = str(node.target).rstrip("_")
            return True, lambda v: getattr(v.clone(), name)()
    return False, None


def trace_channels(model: nn.Module, convs: dict[str, nn.Conv3d], *, warn: bool = True) -> ChannelGraph:
    """Links from every conv in ``convs`` to the convs / Linears reading its channels one to one.

    Conservative: a conv or Linear called more than once, any op not known to act per
    channel, and a Linear whose input is not the flattened channels get no link. On a
    tracing failure the graph has no links and a warning is logged (``warn=False``: a debug
    message, for callers to whom the links are only an optimisation).
    """
    try:
        traced = fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any user model may fail to trace: fall back, never crash
        (logger.warning if warn else logger.debug)(
            "torch.fx cannot trace %s (%s): removed filters get no credit in the next layer, and their "
            "constants are not folded", type(model).__name__, (str(exc).splitlines() or [""])[0])
        return ChannelGraph(order=list(convs))
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    order = [str(n.target) for n in traced.graph.nodes if n.op == "call_module" and str(n.target) in convs]
    order = list(dict.fromkeys(order)) + [n for n in convs if n not in order]
    graph = ChannelGraph(order=order)
    for node in traced.graph.nodes:
        name = str(node.target)
        if node.op != "call_module" or name not in convs or calls[name] != 1:
            continue
        links: list[Link] = []
        bns: list[str] = []
        sealed = _follow(node, (), False, convs[name].out_channels, modules, calls, convs, links, bns)
        graph.links[name], graph.sealed[name], graph.batchnorms[name] = links, sealed, bns
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and _only_input(users[0], node):
            bn = modules.get(str(users[0].target))
            if isinstance(bn, nn.BatchNorm3d):
                graph.bn_after[name] = str(users[0].target)
    return graph


def _follow(node: fx.Node, steps: tuple[Step, ...], flat: bool, channels: int, modules: dict[str, nn.Module],
            calls: dict[str, int], convs: dict[str, nn.Conv3d], links: list[Link], bns: list[str]) -> bool:
    """Walk the users of ``node``; record links; True when every use ends in a link."""
    sealed = True
    for user in node.users:
        target = str(user.target)
        mod = modules.get(target) if user.op == "call_module" else None
        if not _only_input(user, node):
            sealed = False
        elif mod is not None and target in convs and not flat and calls[target] == 1:
            links.append(Link(target, "conv", steps))
        elif isinstance(mod, nn.Linear) and flat and calls[target] == 1 and mod.in_features % channels == 0:
            links.append(Link(target, "linear", steps, mod.in_features // channels))
        elif not flat and _flatten_at_1(user, modules):
            sealed &= _follow(user, steps, True, channels, modules, calls, convs, links, bns)
        else:
            known, step = _pass_step(user, modules, flat)
            if not known:
                sealed = False
                continue
            if isinstance(mod, nn.BatchNorm3d):
                bns.append(target)
            more = steps if step is None else (*steps, step)
            sealed &= _follow(user, more, flat, channels, modules, calls, convs, links, bns)
    return sealed


@torch.no_grad()
def fold_dead(graph: ChannelGraph, modules: dict[str, nn.Module], dead: dict[str, torch.Tensor]) -> None:
    """Fold the constant of every dead channel into the layers reading it, then zero what is left.

    ``dead`` holds, per conv, a bool tensor of its output channels that are constant (a
    removed filter, or one that reads only dead channels). Producers are visited before
    their consumers, so a consumer's bias already holds what it received when its own
    dead filters are folded further. For every link: the consumer's weights on the channel,
    summed over kernel positions (or the channel's flattened features) and times the
    constant, go into the consumer's output (see :func:`_add_to_bias`), then those weights
    are zeroed. Where every use of a producer is a link, its bias and the BatchNorm affine
    of the channel are zeroed too, so the channel is exactly zero and nothing of the filter
    survives. Gradients of zeroed entries are zeroed as well.

    Idempotent: a folded consumer holds zeros on the channel, so folding again adds nothing.
    """
    for producer in graph.order:
        rows = dead.get(producer)
        if rows is None or producer not in graph.links or not bool(rows.any()):
            continue
        idx = torch.nonzero(rows).flatten()
        conv = modules[producer]
        base = conv.bias.detach().clone() if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
        for link in graph.links[producer]:
            layer = modules[link.consumer]
            w = layer.weight
            if link.kind == "conv":
                cols: torch.Tensor | slice = idx
                received = w[:, idx].flatten(2).sum(-1)  # [F, n]
            else:
                cols = (idx[:, None] * link.spatial + torch.arange(link.spatial)).flatten()
                received = w[:, cols].reshape(w.shape[0], idx.numel(), link.spatial).sum(-1)
            if bool(received.ne(0).any()):
                const = link.constant(base)[idx].to(w.dtype)
                delta = (received * const).sum(1)
                if bool(delta.ne(0).any()):
                    _add_to_bias(link.consumer, delta, modules, graph)
                w[:, cols] = 0
            if w.grad is not None:
                w.grad[:, cols] = 0
    _, zeros = folded_entries(graph, modules, dead)
    for param, index in zeros:
        if param.ndim == 1:  # the Linear columns were zeroed above, with their fold
            param[index] = 0
            if param.grad is not None:
                param.grad[index] = 0


def folded_entries(graph: ChannelGraph, modules: dict[str, nn.Module], dead: dict[str, torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], list[tuple[torch.Tensor, tuple]]]:
    """What :func:`fold_dead` leaves at zero: per consumer conv, its dead input channels
    (bool [C]); and (parameter, index) pairs for the rest: Linear columns, and the bias and
    BN affine of every sealed producer's dead channels."""
    dead_inputs: dict[str, torch.Tensor] = {}
    zeros: list[tuple[torch.Tensor, tuple]] = []
    for producer, rows in dead.items():
        if producer not in graph.links or not bool(rows.any()):
            continue
        idx = torch.nonzero(rows).flatten()
        for link in graph.links[producer]:
            if link.kind == "conv":
                layer = modules[link.consumer]
                mask = dead_inputs.setdefault(link.consumer, torch.zeros(layer.in_channels, dtype=torch.bool))
                mask[idx] = True
            else:
                cols = (idx[:, None] * link.spatial + torch.arange(link.spatial)).flatten()
                zeros.append((modules[link.consumer].weight, (slice(None), cols)))
        if graph.sealed.get(producer):
            conv = modules[producer]
            params = [conv.bias] if conv.bias is not None else []
            for name in graph.batchnorms.get(producer, []):
                bn = modules[name]
                params += [bn.weight, bn.bias] if bn.affine else []
            zeros += [(p, (idx,)) for p in params]
    return dead_inputs, zeros


def _add_to_bias(name: str, delta: torch.Tensor, modules: dict[str, nn.Module], graph: ChannelGraph) -> None:
    """Add ``delta`` to layer ``name``'s output, per output channel.

    Into its bias when it has one. A bias-free conv whose only user is a BatchNorm gets it
    through the BN instead: in training mode a per-channel shift is removed by the batch
    mean anyway, and in eval mode lowering ``running_mean`` by ``delta`` gives the same
    output. Otherwise a bias parameter is created (the model's state_dict gains that key;
    the project's models never need it: C3D has biases, R(2+1)D and S3D follow every conv
    with a BN).
    """
    layer = modules[name]
    if layer.bias is not None:
        layer.bias += delta
        return
    bn_name = graph.bn_after.get(name)
    if bn_name is not None:
        bn = modules[bn_name]
        if bn.running_mean is not None:
            bn.running_mean -= delta.to(bn.running_mean.dtype)
        return
    layer.bias = nn.Parameter(delta.clone())
    logger.info("%s had no bias: created one to hold the folded constants of removed input channels", name)
