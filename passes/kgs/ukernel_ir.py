"""MLIR text of the microkernel lowering: the ``stream.executable`` and the dispatching helpers.

Why a module of its own: this is the f-string side of the microkernel path; it follows the
plans of ``ukernel_plan`` and the names of ``ukernel_abi`` and decides nothing itself.

The kernel enters IREE the documented way for custom code: a ``stream.executable`` whose
dispatch function calls the kernel (``hal.import.static``), the kernel's LLVM bitcode attached
as a ``hal.executable.objects`` entry (IREE links it with LTO and inlines it), and a
``flow.dispatch`` at tensor level. Stock ``iree-compile`` compiles the result, so ``rt3d opt``
output keeps working.

IREE 3.13 facts this relies on (each measured): ``hal.dispatch.extern`` crashes llvm-cpu;
an object needs a ``path`` even with ``data``, and its extension says bitcode vs native;
``flow.dispatch.workgroup.id`` is not lowered in such a shim (``hal.interface.workgroup.id``
is); binding subspans must carry ``strided<[1], offset: ?>`` or IREE drops the offset of
fused bindings.
"""

# MLIR text templates read best one op per line.
# ruff: noqa: E501

from __future__ import annotations

import re

import numpy as np

from .ukernel_abi import EXECUTABLE, FORMATS, Microkernel
from .ukernel_plan import FrameCall, UkernelCall, input_pad


def _dispatch_constants(call: UkernelCall | FrameCall, lines: list[str], prefix: str = "") -> tuple[str, str]:
    """Append the i32 constants (%{prefix}k_NAME) and workload (%{prefix}w0..2) of ``call``;
    return the constants' operand and type lists for its ``flow.dispatch``."""
    lines += [f"    %{prefix}k_{k} = arith.constant {v} : i32" for k, v in call.constants.items()]
    launch = [call.workload[d] for d in call.grid]  # workgroup counts (x, y, z): the workload in launch order
    lines += [f"    %{prefix}w{i} = arith.constant {v} : index" for i, v in enumerate(launch)]
    return ", ".join(f"%{prefix}k_{k}" for k in call.constants), ", ".join(["i32"] * len(call.constants))


def pool_helper_text(name: str, call: FrameCall) -> str:
    """Private function (x) -> out dispatching the pooling kernel on the flattened input."""
    x_t, out_t = _t(call.in_shape), _t(call.out_shape)
    flat_t = _t([int(np.prod(call.in_shape))])
    lines = [f"    %flat = tensor.collapse_shape %x [[0, 1, 2, 3, 4]] : {x_t} into {flat_t}"]
    consts, ctypes = _dispatch_constants(call, lines)
    lines.append(f"    %y = flow.dispatch @{EXECUTABLE}::@{call.export}[%w0, %w1, %w2](%flat, {consts}) : "
                 f"({flat_t}, {ctypes}) -> {out_t}")
    nl = "\n"
    return f"""
  func.func private @{name}(%x: {x_t}) -> {out_t} {{
{nl.join(lines)}
    return %y : {out_t}
  }}"""


def _t(shape, et: str = "f32") -> str:
    return "tensor<" + "x".join(str(s) for s in shape) + f"x{et}>"


def _decl(call: UkernelCall | FrameCall) -> str:
    """The kernel's C signature as MLIR types: (pointer, offset) per buffer, i32 constants,
    the three workgroup ids."""
    bufs = ["memref<f32>, index" if et == "f32" else "memref<i32>, index" for _, _, et in call.buffers()]
    return ", ".join(bufs + ["i32"] * len(call.constants) + ["index"] * 3)


def _export_op(call: UkernelCall | FrameCall) -> str:
    """The export: its workgroup count is the workload given at the dispatch."""
    return (f"    stream.executable.export public @{call.export} workgroups(%wq: index, %wg: index, %wr: index) "
            f"-> (index, index, index) {{\n      stream.return %wq, %wg, %wr : index, index, index\n    }}")


def _dispatch_function(call: UkernelCall | FrameCall) -> str:
    """The export's function: binding subspans -> bare pointers + offsets -> the kernel."""
    bufs = call.buffers()
    binds = ", ".join(f"%b{nm}: !stream.binding" for nm, _, _ in bufs)
    consts = ", ".join(f"%k_{c}: i32" for c in call.constants)
    body = []
    for nm, ln, et in bufs:
        mt = f"memref<{ln}x{et}, strided<[1], offset: ?>>"
        body.append(f"        %m{nm} = stream.binding.subspan %b{nm}[%c0] : !stream.binding -> {mt}")
        body.append(f"        %p{nm}, %o{nm}, %s{nm}, %t{nm} = memref.extract_strided_metadata %m{nm} : {mt} "
                    f"-> memref<{et}>, index, index, index")
    args = ", ".join(f"%p{nm}, %o{nm}" for nm, _, _ in bufs) + ", " + ", ".join(f"%k_{c}" for c in call.constants)
    ids = ", ".join(f"%id{call.grid.index(d)}" for d in range(3))  # the kernel's ids, in workload order
    nl = "\n"
    return f"""      func.func @{call.export}({binds}, {consts}) {{
        %c0 = arith.constant 0 : index
{nl.join(body)}
        %id0 = hal.interface.workgroup.id[0] : index
        %id1 = hal.interface.workgroup.id[1] : index
        %id2 = hal.interface.workgroup.id[2] : index
        func.call @{call.symbol}({args}, {ids}) : ({_decl(call)}) -> ()
        return
      }}"""


_INLINE = re.compile(r'(path = "rt3d_kgs_conv3d_(\w+)\.bc", data = )dense<"0x([0-9A-F]+)">')
_RESOURCE = re.compile(r'(path = "rt3d_kgs_conv3d_(\w+)\.bc", data = )dense_resource<rt3d_kgs_conv3d_\w+>')
_ALIGN = "10000000"  # a resource blob's hex starts with its alignment (16) as 4 little-endian bytes


def resource_form(text: str) -> str:
    """Module text with the kernel bitcode moved into the ``dialect_resources`` section.

    Why, for the text `rt3d opt` writes: IREE prints the op of a failing executable with its
    attributes, so an inline blob turned one wrong-target error of stock iree-compile into
    443 KB of hex; a resource prints as its name. Why only there: IREE 3.13's bytecode reader
    loses a resource referenced from a ``#hal.executable.objects`` attribute (the key comes
    back renamed and without data), so modules stay inline everywhere else
    (:func:`inline_form` undoes this on reading).
    """
    blobs: dict[str, str] = {}

    def to_resource(m: re.Match) -> str:
        blobs[f"rt3d_kgs_conv3d_{m[2]}"] = m[3]
        return f"{m[1]}dense_resource<rt3d_kgs_conv3d_{m[2]}>"

    text = _INLINE.sub(to_resource, text)
    if not blobs:
        return text
    entries = "".join(f'      {key}: "0x{_ALIGN}{hexdata}",\n' for key, hexdata in blobs.items())
    marker = "dialect_resources: {\n    builtin: {\n"
    if marker in text:
        return text.replace(marker, marker + entries, 1)
    return text + "\n{-#\n  " + marker + entries.rstrip(",\n") + "\n    }\n  }\n#-}\n"


def opt_text(text: str, target_name: str) -> str:
    """What `rt3d opt` writes: :func:`resource_form`, and the kernel dispatches' binding ops
    located at a name that says which target they were built for.

    Why: stock iree-compile given another target's flags fails inside these dispatches (under
    Vulkan's flags, in SPIR-V type conversion); its error lines then begin with this name, so
    the first thing a user reads is what to do, not an MLIR line number.
    """
    where = (f"rt3d opt --target {target_name} wrote this kernel dispatch; for another target run "
             "rt3d opt --target THAT_TARGET")
    text = re.sub(r"(= stream\.binding\.subspan [^\n]*)", rf'\1 loc("{where}":0:0)', text)
    return resource_form(text)


def inline_form(text: str) -> str:
    """Undo :func:`resource_form` (the resource entry stays, unused)."""
    if "dense_resource<rt3d_kgs_conv3d_" not in text:
        return text

    def to_inline(m: re.Match) -> str:
        found = re.search(rf'\brt3d_kgs_conv3d_{m[2]}: "0x{_ALIGN}([0-9A-F]+)"', text)
        if found is None:
            raise ValueError(f"the module refers to the kernel bitcode rt3d_kgs_conv3d_{m[2]} but does not hold it")
        return f'{m[1]}dense<"0x{found[1]}">'

    return _RESOURCE.sub(to_inline, text)


def _foreign_objects(kernel: Microkernel) -> str:
    """Object entries for the other CPU formats: a path that says what went wrong.

    Why: ``rt3d opt`` output for one target compiled by stock iree-compile with another
    CPU's flags would otherwise fail to link with "undefined symbol"; IREE instead reports
    that it cannot find this file, whose name says what to do.
    """
    hint = f"rt3d-kernels-built-for-{kernel.isa}.run-rt3d-opt-again-for-your-target"
    return "".join(f'      #hal.executable.target<"llvm-cpu", "{fmt}"> = [#hal.executable.object<{{path = "{hint}.bc"}}>],\n'
                   for fmt in sorted(set(FORMATS.values()) - {kernel.format}))


def executable_text(calls: list[UkernelCall | FrameCall], kernel: Microkernel) -> str:
    """One ``stream.executable`` holding every conv's export, linking the kernel bitcode once."""
    data = "0x" + kernel.bitcode.hex().upper()
    obj = (f'#hal.executable.object<{{path = "rt3d_kgs_conv3d_{kernel.isa}.bc", '
           f'data = dense<"{data}"> : vector<{len(kernel.bitcode)}xi8>}}>')
    nl = "\n"
    first = {c.symbol: c for c in calls}  # one declaration per kernel used
    decls = [f"      func.func private @{sym}({_decl(c)}) attributes {{hal.import.static, llvm.bareptr = true}}"
             for sym, c in first.items()]
    return f"""
  stream.executable private @{EXECUTABLE} attributes {{
    hal.executable.objects = #hal.executable.objects<{{
{_foreign_objects(kernel)}      #hal.executable.target<"llvm-cpu", "{kernel.format}"> = [{obj}]
    }}>
  }} {{
{nl.join(_export_op(c) for c in calls)}
    builtin.module {{
{nl.join(decls)}
{nl.join(_dispatch_function(c) for c in calls)}
    }}
  }}"""


def helper_text(name: str, geom, call: UkernelCall, source_pad: tuple[list[int], list[int], list[int]] | None = None,
                pad: FrameCall | None = None) -> str:
    """Private function (x, bias_or_init, w, off[, residual]) -> out that pads the input and dispatches.

    The input is padded as ``input_pad`` says, by the pad kernel's dispatch ``pad`` when given
    (it must be ``pad_call`` of that pad), else by ``tensor.pad``.
    """
    n, c, d = geom.n, geom.c, call.frames[1] if call.frames else geom.d
    sh, sw, hq, wq = call.phase or (1, 1, geom.h, geom.w)
    cp = call.channel_pad // (sh * sw)  # in input channels
    x_shape, low, high = input_pad(geom, call, source_pad)
    x_t = _t(x_shape)
    padded = [n, c + cp, d, hq * sh, wq * sw]
    xp_t = _t(padded)
    out_t = _t(call.out_shape)
    w_t, off_t, b_t, flat_t = _t([call.w_len]), _t([call.off_len], "i32"), _t([call.f]), _t([call.flat_len])
    lines = ["    %zero = arith.constant 0.000000e+00 : f32"]
    src = "%x"
    if pad is not None:
        assert list(pad.out_shape) == padded, (pad.out_shape, padded)
        x_flat_t = _t([int(np.prod(x_shape))])
        lines.append(f"    %xf = tensor.collapse_shape %x [[0, 1, 2, 3, 4]] : {x_t} into {x_flat_t}")
        pconsts, ptypes = _dispatch_constants(pad, lines, "p")
        lines.append(f"    %xpf = flow.dispatch @{EXECUTABLE}::@{pad.export}[%pw0, %pw1, %pw2](%xf, {pconsts}) : "
                     f"({x_flat_t}, {ptypes}) -> {_t([int(np.prod(padded))])}")
        lines.append(f"    %xp = tensor.expand_shape %xpf [[0, 1, 2, 3, 4]] output_shape [{', '.join(map(str, padded))}] : "
                     f"{_t([int(np.prod(padded))])} into {xp_t}")
        src = "%xp"
    elif any(low) or any(high):
        lines += [f"    %xp = tensor.pad %x low[{', '.join(map(str, low))}] high[{', '.join(map(str, high))}] {{",
                  "    ^bb0(%i0: index, %i1: index, %i2: index, %i3: index, %i4: index):",
                  "      tensor.yield %zero : f32", f"    }} : {x_t} to {xp_t}"]
        src = "%xp"
    if call.phase is None:
        lines.append(f"    %flat = tensor.collapse_shape {src} [[0, 1, 2, 3, 4]] : {xp_t} into {flat_t}")
    else:  # phase planes: [n, c, d, H', sh, W', sw] -> [n, c, sh, sw, d, H', W']
        split = [n, c + cp, d, hq, sh, wq, sw]
        phased = [n, c + cp, sh, sw, d, hq, wq]
        lines += [
            f"    %x7 = tensor.expand_shape {src} [[0], [1], [2], [3, 4], [5, 6]] output_shape "
            f"[{', '.join(map(str, split))}] : {xp_t} into {_t(split)}",
            f"    %e7 = tensor.empty() : {_t(phased)}",
            f"    %t7 = linalg.transpose ins(%x7 : {_t(split)}) outs(%e7 : {_t(phased)}) permutation = [0, 1, 4, 6, 2, 3, 5]",
            f"    %flat = tensor.collapse_shape %t7 [[0, 1, 2, 3, 4, 5, 6]] : {_t(phased)} into {flat_t}",
        ]
    consts, ctypes = _dispatch_constants(call, lines)
    ins_t = f"{flat_t}, {w_t}, {off_t}, {b_t}"
    target = f"@{EXECUTABLE}::@{call.export}[%w0, %w1, %w2]"
    extra = ""
    if call.residual:  # the bias, and the residual in the output buffer (tied: added in place)
        lines.append(f"    %y = flow.dispatch {target}(%flat, %wk, %off, %acc, %res, {consts}) : "
                     f"({ins_t}, {out_t}, {ctypes}) -> %res")
        second, extra = f"%acc: {b_t}", f", %res: {out_t}"
    elif call.tied:
        lines.append(f"    %bz = arith.constant dense<0.000000e+00> : {b_t}")
        lines.append(f"    %y = flow.dispatch {target}(%flat, %wk, %off, %bz, %acc, {consts}) : "
                     f"({ins_t}, {out_t}, {ctypes}) -> %acc")
        second = f"%acc: {out_t}"
    else:
        lines.append(f"    %y = flow.dispatch {target}(%flat, %wk, %off, %acc, {consts}) : ({ins_t}, {ctypes}) -> {out_t}")
        second = f"%acc: {b_t}"
    nl = "\n"
    return f"""
  func.func private @{name}(%x: {x_t}, {second}, %wk: {w_t}, %off: {off_t}{extra}) -> {out_t} {{
{nl.join(lines)}
    return %y : {out_t}
  }}"""
