"""Grouped and depthwise 3-D convolutions, rewritten before import into what torch-mlir lowers.

Why: torch-mlir (20261001) cannot lower ``aten.convolution`` with ``groups > 1`` in 3-D, so
X3D, channel-separated networks and MoViNet-style blocks stopped at import (issue 18). Two
rewrites, on the exported graph so that both ``nn.Module`` and ``.pt2`` users get them:

- a grouped conv (each group sees several input channels) becomes ``groups`` ordinary convs
  on channel slices, joined by ``cat``. Each gets its own constant weight, so the KGS pass
  finds the KGS structure per group and rewrites every one;
- a depthwise conv (one input channel per group, any channel multiplier) becomes one
  multiply-add per kernel position over strided slices of the padded input: ``groups``
  separate convs of one channel each would be hundreds of tiny dispatches (X3D-S has 432
  channels), while the slices fuse into one elementwise loop nest in IREE.

Both are exact up to float summation order; stride, padding and dilation are kept.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import torch
from torch import fx

from .errors import Rt3dError

logger = logging.getLogger(__name__)

aten = torch.ops.aten
_CONV3D = aten.conv3d.default
_CONVOLUTION = aten.convolution.default


def _conv_args(node: fx.Node) -> dict[str, Any] | None:
    """The arguments of a 3-D conv node with groups > 1, by name; None for anything else."""
    if node.op != "call_function" or node.target not in (_CONV3D, _CONVOLUTION):
        return None
    if node.target is _CONV3D:
        names = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
        defaults = [None, None, None, [1, 1, 1], [0, 0, 0], [1, 1, 1], 1]
    else:
        names = ["input", "weight", "bias", "stride", "padding", "dilation", "transposed", "output_padding",
                 "groups"]
        defaults = [None] * 9
    args = dict(zip(names, defaults, strict=True))
    args.update(zip(names, node.args, strict=False))
    args.update(node.kwargs)
    weight = args["weight"].meta.get("val") if isinstance(args["weight"], fx.Node) else None
    if weight is None or weight.dim() != 5 or not isinstance(args["groups"], int) or args["groups"] <= 1:
        return None
    if args.get("transposed"):
        raise Rt3dError(f"{node.name}: transposed 3-D convolution with groups={args['groups']} is not supported",
                        "use groups=1 for ConvTranspose3d, or upsample and use a Conv3d")
    for key in ("stride", "padding", "dilation"):
        value = args[key]
        args[key] = [int(v) for v in value] * (3 // len(value)) if len(value) in (1, 3) else value
    return args


def has_grouped_convs(program: torch.export.ExportedProgram) -> bool:
    return any(_conv_args(n) is not None for n in program.graph.nodes)


def split_grouped_convs(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with every grouped / depthwise 3-D conv rewritten (itself when it has none)."""
    if not has_grouped_convs(program):
        return program
    gm = program.module()
    count = 0
    for node in list(gm.graph.nodes):
        args = _conv_args(node)
        if args is None:
            continue
        if args["weight"].op != "get_attr":
            raise Rt3dError(f"{node.name}: a grouped conv whose weight is computed, not a parameter",
                            "make the conv weight an nn.Parameter or buffer of the model")
        with gm.graph.inserting_before(node):
            cin = args["input"].meta["val"].shape[1]
            out = (_depthwise if cin == args["groups"] else _groups)(gm, node, args)
        node.replace_all_uses_with(out)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.lint()
    gm.recompile()
    logger.info("rewrote %d grouped / depthwise conv3d before import", count)
    example = [torch.zeros(p.meta["val"].shape, dtype=p.meta["val"].dtype)
               for p in gm.graph.nodes if p.op == "placeholder"]
    return torch.export.export(gm, tuple(example))


def _attr(gm: fx.GraphModule, base: str, value: torch.Tensor) -> fx.Node:
    """A new constant buffer of the module and the node that reads it."""
    name = f"_rt3d_{base.replace('.', '_')}"
    for i in itertools.count():
        if not hasattr(gm, f"{name}_{i}"):
            name = f"{name}_{i}"
            break
    gm.register_buffer(name, value.detach().clone().contiguous())
    return gm.graph.get_attr(name)


def _fetch(gm: fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The constant a get_attr node reads; None for no node (a conv without bias)."""
    if not isinstance(node, fx.Node):
        return None
    value: Any = gm
    for part in node.target.split("."):
        value = getattr(value, part)
    return value.detach()


def _name_after(new: fx.Node, old: fx.Node, suffix: str) -> None:
    """Give ``new`` the module path of ``old`` plus ``suffix`` (re-export keeps it), so pass
    messages name the layer ("blocks.3.conv_b group 2 (Conv3d)")."""
    stack = dict(old.meta.get("nn_module_stack") or {})
    if stack:
        key, (path, kind) = list(stack.items())[-1]
        stack[key] = (f"{path} {suffix}", kind)
        new.meta["nn_module_stack"] = stack
    if old.meta.get("stack_trace"):
        new.meta["stack_trace"] = old.meta["stack_trace"]


def _groups(gm: fx.GraphModule, node: fx.Node, a: dict[str, Any]) -> fx.Node:
    """``groups`` ordinary convs on channel slices, joined by cat."""
    g = a["groups"]
    weight, bias = _fetch(gm, a["weight"]), _fetch(gm, a["bias"])
    cin = a["input"].meta["val"].shape[1]
    step_in, step_out = cin // g, weight.shape[0] // g
    parts = []
    for i in range(g):
        x = gm.graph.call_function(aten.slice.Tensor, (a["input"], 1, i * step_in, (i + 1) * step_in))
        w = _attr(gm, f"{node.name}_w{i}", weight[i * step_out:(i + 1) * step_out])
        b = _attr(gm, f"{node.name}_b{i}", bias[i * step_out:(i + 1) * step_out]) if bias is not None else None
        conv = gm.graph.call_function(_CONV3D, (x, w, b, a["stride"], a["padding"], a["dilation"], 1))
        _name_after(conv, node, f"group {i}")
        parts.append(conv)
    return gm.graph.call_function(aten.cat.default, (parts, 1))


def _depthwise(gm: fx.GraphModule, node: fx.Node, a: dict[str, Any]) -> fx.Node:
    """Sum over kernel positions of (strided slice of the padded input) x (that position's weights)."""
    weight, bias = _fetch(gm, a["weight"]), _fetch(gm, a["bias"])
    n, c, *size = a["input"].meta["val"].shape
    mult = weight.shape[0] // c
    kernel = weight.shape[2:]
    (st, sh, sw), (pt, ph, pw), (dt, dh, dw) = a["stride"], a["padding"], a["dilation"]
    out = [(size[i] + 2 * p - d * (k - 1) - 1) // s + 1
           for i, (p, d, k, s) in enumerate(zip((pt, ph, pw), (dt, dh, dw), kernel, (st, sh, sw), strict=True))]
    x = a["input"]
    if pt or ph or pw:
        x = gm.graph.call_function(aten.constant_pad_nd.default, (x, [pw, pw, ph, ph, pt, pt], 0.0))
    if mult > 1:  # [N, C, 1, T, H, W] against weights [1, C, m, 1, 1, 1]: out channel c * m + j
        x = gm.graph.call_function(aten.unsqueeze.default, (x, 2))
    w = weight.reshape(c, mult, -1)
    acc = None
    for k, (i, j, m) in enumerate(itertools.product(*(range(e) for e in kernel))):
        s = x
        for dim, start, stride, length in zip(range(2, 5), (i * dt, j * dh, m * dw), (st, sh, sw), out, strict=True):
            d = dim + (mult > 1)
            s = gm.graph.call_function(aten.slice.Tensor, (s, d, start, start + (length - 1) * stride + 1, stride))
        wk = w[:, :, k].reshape(1, c, mult, 1, 1, 1) if mult > 1 else w[:, 0, k].reshape(1, c, 1, 1, 1)
        term = gm.graph.call_function(aten.mul.Tensor, (s, _attr(gm, f"{node.name}_k{k}", wk)))
        acc = term if acc is None else gm.graph.call_function(aten.add.Tensor, (acc, term))
    if mult > 1:
        acc = gm.graph.call_function(aten.reshape.default, (acc, [n, c * mult, *out]))
    if bias is not None:
        acc = gm.graph.call_function(aten.add.Tensor, (acc, _attr(gm, f"{node.name}_b", bias.reshape(1, -1, 1, 1, 1))))
    return acc
