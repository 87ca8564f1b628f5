"""MLIR text of the code generation path: one gather-matmul ``linalg.generic`` per conv.

Why a module of its own: the emitter is a long f-string generator with its own layout rules
(measured against IREE's CPU and SPIR-V code generation); it reads only a conv's geometry, its
plan and a kernel configuration, and needs no IR.
"""

# MLIR text templates read best one op per line.
# ruff: noqa: E501

from __future__ import annotations

from ..kernel_config import KernelConfig, SpirvKernelConfig, compilation_info, spirv_compilation_info
from .options import ConvGeometry, KgsPlan, ceil_div


def emit_kernel(
    name: str, geom: ConvGeometry, plan: KgsPlan, config: KernelConfig | SpirvKernelConfig | None
) -> str:
    """MLIR text of a private function computing the conv from the compacted form.

    Signature: (input, init, compact_weights, offsets) -> result, where ``init`` is the
    conv's accumulator (zeros or the broadcast bias) and is added to the product.

    Loops: g (filter group), f (filter in group), r (batch x output depth, omitted when 1),
    the output positions, and j (kept column, the reduction). Two layout choices are what
    make IREE generate a real matmul micro-kernel here, both measured:
    - the gather offset and row base are read with ``tensor.extract`` at loop indices
      rather than passed as generic operands, because the vectorizer proves a load
      contiguous only when every other index term is loop invariant (a block argument
      never is); otherwise each row load becomes a 16-lane scalar gather (2x slower);
    - the result is laid out [r, f, g, positions], so no two loops are adjacent in the
      same order in every indexing map: otherwise IREE collapses (g, f) or (r, q), turns
      the contiguous index into div/rem math and drops our lowering configuration (8x).
    """
    g, gm, nc = plan.groups, plan.group_m, plan.columns
    n, c, d, h, w = geom.n, geom.c, geom.d, geom.h, geom.w
    f, od, oh, ow = geom.f, geom.od, geom.oh, geom.ow
    s_d, s_h, s_w = geom.strides
    plane = h * w
    per_image = c * d * plane
    total = n * per_image
    fp = g * gm
    r = n * od
    bases = [b * per_image + k * s_d * plane for b in range(n) for k in range(od)]
    x_t = f"tensor<{n}x{c}x{d}x{h}x{w}xf32>"
    o_t = f"tensor<{n}x{f}x{od}x{oh}x{ow}xf32>"
    w_t = f"tensor<{g}x{gm}x{nc}xf32>"
    off_t = f"tensor<{g}x{nc}xi32>"
    use_r = r > 1
    # A loop of extent 1 is folded away by IREE, which then drops the lowering config
    # (measured 8x slower on C3D's first layer), so single-group layers get no g loop.
    use_g = g > 1
    g1 = [1] if use_g else []
    g0 = [0] if use_g else []
    r1 = [1] if use_r else []
    r0 = [0] if use_r else []
    pre: list[str] = []
    attr = None
    spirv = isinstance(config, SpirvKernelConfig)
    if spirv and gm == 1:
        raise ValueError("SPIR-V kernels need groups of at least 2 filters (plan with group_m >= 2)")
    # One output position per (image, frame) on a GPU: the position loop would have extent 1
    # (or be a 64-wide tile sliced to 1), IREE folds that unit loop, our tiling no longer fits
    # the loop nest, and lavapipe returned garbage (relative error 1.0, issue 18). The
    # subgroup then runs over the rows r (batch x output frames) instead. With one row too,
    # IREE's own config chose a 64-lane subgroup reduction, wrong on lavapipe's narrower
    # subgroups (relative error 1.06): one thread then runs the reduction in steps of 4.
    single = spirv and oh * ow == 1
    if geom.rows_contiguous and not single:
        # Output positions run over a flat (h, padded-w) grid of pitch w: position q reads
        # input element base + q + offset, contiguous in q, so loads vectorize. Columns
        # ow..w-1 of each row and the tail past oh*w are computed and dropped.
        q_valid = oh * w
        if spirv:
            vq, dq = config.thread_q, config.workgroup_q
        elif config:
            vq, dq = config.vector_q, config.distribution_q
        else:
            vq, dq = 16, q_valid
        # Whole tiles only: a partial tile is vectorized with masks, and a masked row load
        # becomes a scalar gather.
        n_tiles = ceil_div(q_valid, dq)
        q_tile = ceil_div(ceil_div(q_valid, n_tiles), vq) * vq
        if spirv:
            q_tile = dq  # the workgroup is a whole subgroup; extra positions are dropped
        q = q_tile * n_tiles
        max_index = max(bases) + (q - 1) + int(plan.offsets.max())
        extra = max(0, max_index + 1 - total)
        pos_dims, pos_shape, pos_terms = ["q"], [q], [("q", 1)]
        if spirv:
            attr = spirv_compilation_info(
                [[*g1, gm, *r1, q_tile, 0], [*g1, gm, *r1, config.thread_q, 0], [*g0, 0, *r0, 0, 4]],
                [q_tile // config.thread_q, 1, 1],
                config.pipeline,
            )
        elif config:
            attr = compilation_info(
                [*g1, gm, *r1, q_tile, 0],
                [*g1, min(config.vector_f, gm), *r1, config.vector_q, 0],
                [*g0, 0, *r0, 0, 1],
                config.pipeline,
            )
    else:
        # Strided rows: iterate the exact (oh, ow) grid; the gather is strided in w.
        extra = 0
        # A unit position loop is left out (IREE would fold it and our tiling would no
        # longer fit the loop nest; found by the fuzzer).
        pos = [(d, e, t) for d, e, t in (("oh", oh, s_h * w), ("ow", ow, s_w)) if e > 1]
        pos_dims, pos_shape = [p[0] for p in pos], [p[1] for p in pos]
        pos_terms = [(p[0], p[2]) for p in pos]
        if single:
            rt = min(r, config.workgroup_q)
            rt1, r0t = ([rt], [1]) if use_r else ([], [])
            attr = spirv_compilation_info(
                [[*g1, gm, *rt1, 0], [*g1, gm, *r0t, 0], [*g0, 0, *r0, 4]], [rt, 1, 1], config.pipeline
            )
        elif spirv:
            # One loop over the flattened (oh, ow) grid, split back with div/rem in the body:
            # with two position loops IREE collapses them, drops our tiling and picks a
            # subgroup reduction (found by the fuzzer). One subgroup-wide workgroup per tile.
            pos_dims, pos_shape, pos_terms = ["p"], [oh * ow], [("p", 0)]
            wq = config.workgroup_q
            attr = spirv_compilation_info(
                [[*g1, gm, *r1, wq, 0], [*g1, gm, *r1, 1, 0], [*g0, 0, *r0, 0, 4]],
                [wq, 1, 1],
                config.pipeline,
            )
    dims = (["g"] if use_g else []) + ["f"] + (["r"] if use_r else []) + pos_dims + ["j"]
    dim_list = ", ".join(dims)
    # Result layout. CPU: [r, f, g, positions], so that no two loops are adjacent in the same
    # order in every map (IREE would collapse them and drop our config). SPIR-V, measured on
    # lavapipe by the differential fuzzer: [g, r, f, positions] (the loop order would let
    # IREE collapse (r, positions), drop our tiling and pick a 64-lane subgroup reduction;
    # the CPU order [r, f, g, oh, ow] was computed wrong by IREE's SPIR-V codegen when G > 1).
    if not spirv:
        order = ["r", "f", "g"]
    elif attr is not None:
        order = ["g", "r", "f"]  # not [g, f, r, q]: IREE collapses (r, q) and drops our tiling
    else:
        order = ["g", "f", "r"]  # no GPU tiling (constant input, evaluated on the host)
    sizes = {"g": g, "f": gm, "r": r}
    present = {"g": use_g, "f": True, "r": use_r}
    y_dims = [d for d in order if present[d]] + pos_dims
    y_shape = [sizes[d] for d in order if present[d]] + pos_shape
    y_t = _tensor(y_shape)
    flat_len = total + extra
    flat_src = "%flat0"
    if extra:
        pre.append(
            f"    %flat = tensor.pad %flat0 low[0] high[{extra}] {{\n"
            f"    ^bb0(%pi: index):\n      tensor.yield %zero : f32\n"
            f"    }} : {_tensor([total])} to {_tensor([flat_len])}"
        )
        flat_src = "%flat"
    body = [
        "      %gi = linalg.index 0 : index" if use_g else "      %gi = arith.constant 0 : index",
        f"      %ji = linalg.index {len(dims) - 1} : index",
        f"      %o = tensor.extract %off[%gi, %ji] : {off_t}",
        "      %idx0 = arith.index_cast %o : i32 to index",
    ]
    acc = "%idx0"
    if use_r:
        pre.append(f"    %bases = arith.constant dense<[{', '.join(map(str, bases))}]> : tensor<{r}xi32>")
        body += [
            f"      %ri = linalg.index {dims.index('r')} : index",
            f"      %b = tensor.extract %bases[%ri] : tensor<{r}xi32>",
            "      %bi = arith.index_cast %b : i32 to index",
            f"      %idxb = arith.addi {acc}, %bi : index",
        ]
        acc = "%idxb"
    for k, (dim, scale) in enumerate(pos_terms):
        body.append(f"      %p{k} = linalg.index {dims.index(dim)} : index")
        term = f"%p{k}"
        if dim == "p":  # flattened (oh, ow): (p / ow) * s_h * w + (p % ow) * s_w
            body += [
                f"      %pw = arith.constant {ow} : index",
                f"      %ph = arith.divui %p{k}, %pw : index",
                f"      %pr = arith.remui %p{k}, %pw : index",
                f"      %sh = arith.constant {s_h * w} : index",
                f"      %sw = arith.constant {s_w} : index",
                "      %ph2 = arith.muli %ph, %sh : index",
                "      %pr2 = arith.muli %pr, %sw : index",
                "      %pp = arith.addi %ph2, %pr2 : index",
            ]
            term, scale = "%pp", 1
        if scale != 1:
            body.append(f"      %c{k} = arith.constant {scale} : index")
            body.append(f"      %t{k} = arith.muli %p{k}, %c{k} : index")
            term = f"%t{k}"
        body.append(f"      %idx{k + 1} = arith.addi {acc}, {term} : index")
        acc = f"%idx{k + 1}"
    iters = ", ".join(['"parallel"'] * (len(dims) - 1) + ['"reduction"'])
    info = f", compilation_info = {attr}" if attr else ""

    # Back to NCDHW: y -> y6 (the layout's slots with r split into (n, d) and the positions
    # as (h, w)), then one transposing add of the accumulator viewed as [N, G, gM, Do, Ho, Wo].
    post: list[str] = []
    full = [sizes[d] for d in order] + pos_shape
    cur, cur_shape = "%y", y_shape
    if full != y_shape:  # put back the unit g / r dims the kernel loop nest omits
        assoc: list[list[int]] = []
        pending: list[int] = []
        for i, d in enumerate(order + pos_dims):
            if d in present and not present[d]:
                if assoc:
                    assoc[-1].append(i)
                else:
                    pending.append(i)
            else:
                assoc.append([*pending, i])
                pending = []
        post.append(_reshape("expand", "%yf", cur, cur_shape, full, assoc))
        cur, cur_shape = "%yf", full
    ri = order.index("r")
    names = [x for d in order for x in (("n", "d") if d == "r" else (d,))] + ["h", "w"]
    fin = [x for d in order for x in ((n, od) if d == "r" else (sizes[d],))] + [oh, ow]
    split_r = [[i] for i in range(ri)] + [[ri, ri + 1]] + [[i + 1] for i in range(ri + 1, 3)]
    if geom.rows_contiguous and not single:
        sl = [*full[:3], oh * w]
        post.append(_slice("%y2", cur, cur_shape, sl))
        nxt = fin[:4] + [oh, w]
        post.append(_reshape("expand", "%y3", "%y2", sl, nxt, split_r + [[4, 5]]))
        post.append(_slice("%y6", "%y3", nxt, fin))
    else:
        if pos_dims != ["oh", "ow"]:  # put back the unit position dims / split p
            two = [*full[:3], oh, ow]
            assoc = {(): [[0], [1], [2, 3, 4]], ("ow",): [[0], [1], [2, 3], [4]],
                     ("oh",): [[0], [1], [2], [3, 4]], ("p",): [[0], [1], [2], [3, 4]]}[tuple(pos_dims)]
            post.append(_reshape("expand", "%yp", cur, cur_shape, two, assoc))
            cur, cur_shape = "%yp", two
        post.append(_reshape("expand", "%y6", cur, cur_shape, fin, split_r + [[4], [5]]))
    init = "%init"
    init_shape = [n, f, od, oh, ow]
    if fp != f:
        padded = [n, fp, od, oh, ow]
        post.append(
            f"    %initp = tensor.pad %init low[0, 0, 0, 0, 0] high[0, {fp - f}, 0, 0, 0] {{\n"
            f"    ^bb0(%i0: index, %i1: index, %i2: index, %i3: index, %i4: index):\n"
            f"      tensor.yield %zero : f32\n    }} : {o_t} to {_tensor(padded)}"
        )
        init, init_shape = "%initp", padded
    acc6 = [n, g, gm, od, oh, ow]
    post.append(_reshape("expand", "%init6", init, init_shape, acc6, [[0], [1, 2], [3], [4], [5]]))
    six = "(n, g, f, d, h, w)"
    par6 = ", ".join(['"parallel"'] * 6)
    post.append(
        f"    %sum = linalg.generic {{indexing_maps = [affine_map<{six} -> ({', '.join(names)})>, "
        f"affine_map<{six} -> {six}>], iterator_types = [{par6}]}} "
        f"ins(%y6 : {_tensor(fin)}) outs(%init6 : {_tensor(acc6)}) {{\n"
        f"    ^bb0(%u: f32, %v: f32):\n      %a = arith.addf %u, %v : f32\n      linalg.yield %a : f32\n"
        f"    }} -> {_tensor(acc6)}"
    )
    post.append(_reshape("collapse", "%res", "%sum", acc6, [n, fp, od, oh, ow], [[0], [1, 2], [3], [4], [5]]))
    result = "%res"
    if fp != f:
        post.append(_slice("%ress", "%res", [n, fp, od, oh, ow], [n, f, od, oh, ow]))
        result = "%ress"
    nl = "\n"
    w_dims, w_src, w_in_t, w_prep = "g, f, j", "%w", w_t, ""
    if not use_g:
        w_dims, w_src, w_in_t = "f, j", "%w2", f"tensor<{gm}x{nc}xf32>"
        w_prep = f"    %w2 = tensor.collapse_shape %w [[0, 1], [2]] : {w_t} into {w_in_t}"
    return f"""
  func.func private @{name}(%x: {x_t}, %init: {o_t}, %w: {w_t}, %off: {off_t}) -> {o_t} {{
    %zero = arith.constant 0.000000e+00 : f32
    %flat0 = tensor.collapse_shape %x [[0, 1, 2, 3, 4]] : {x_t} into {_tensor([total])}
{nl.join(pre)}
    %e = tensor.empty() : {y_t}
    %z = linalg.fill ins(%zero : f32) outs(%e : {y_t}) -> {y_t}
{w_prep}
    %y = linalg.generic {{indexing_maps = [affine_map<({dim_list}) -> ({w_dims})>, affine_map<({dim_list}) -> ({", ".join(y_dims)})>], iterator_types = [{iters}]{info}}} ins({w_src} : {w_in_t}) outs(%z : {y_t}) {{
    ^bb0(%wv: f32, %acc: f32):
{nl.join(body)}
      %xv = tensor.extract {flat_src}[{acc}] : {_tensor([flat_len])}
      %m = arith.mulf %wv, %xv : f32
      %s = arith.addf %acc, %m : f32
      linalg.yield %s : f32
    }} -> {y_t}
{nl.join(post)}
    return {result} : {o_t}
  }}"""


def _tensor(shape: list[int]) -> str:
    return "tensor<" + "x".join(str(s) for s in shape) + "xf32>"


def _reshape(kind: str, res: str, src: str, src_shape: list[int], dst_shape: list[int], assoc: list[list[int]]) -> str:
    """tensor.expand_shape / collapse_shape text; ``assoc`` groups the larger rank's dims."""
    groups = "[" + ", ".join("[" + ", ".join(map(str, a)) + "]" for a in assoc) + "]"
    if kind == "expand":
        out = ", ".join(map(str, dst_shape))
        return f"    {res} = tensor.expand_shape {src} {groups} output_shape [{out}] : {_tensor(src_shape)} into {_tensor(dst_shape)}"
    return f"    {res} = tensor.collapse_shape {src} {groups} : {_tensor(src_shape)} into {_tensor(dst_shape)}"


def _slice(res: str, src: str, src_shape: list[int], sizes: list[int]) -> str:
    """Leading-corner tensor.extract_slice of ``sizes`` from ``src``."""
    zeros = ", ".join("0" for _ in sizes)
    ones = ", ".join("1" for _ in sizes)
    return (
        f"    {res} = tensor.extract_slice {src}[{zeros}] [{', '.join(map(str, sizes))}] [{ones}] : "
        f"{_tensor(src_shape)} to {_tensor(sizes)}"
    )
