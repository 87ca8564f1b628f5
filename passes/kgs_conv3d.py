"""The ``rt3d-kgs-conv3d`` pass: linalg 3-D convolutions -> KGS-compacted gather matmuls.

Why: IREE lowers ``linalg.conv_3d_ncdhw_fcdhw`` about 10x slower than PyTorch, and it
cannot exploit structured zeros. In the im2col view a conv is ``W[F, C*K] @ X_col[C*K, P]``.
Kernel Group Structured (KGS) sparsity zeroes the same columns for every filter of a group
of ``gM`` filters, so each group is a dense, compacted matmul whose right-hand rows are
gathered from the padded input through a constant index table. We emit exactly that as a
single ``linalg.generic`` (an implicit GEMM: the gathered rows are never materialised) with
a lowering configuration that makes IREE's CPU codegen run it at matmul speed. A dense conv
is KGS with every column kept, so it takes the same fast path.

The pass reads weight values itself (including torch-mlir's ``dense_resource`` blobs), so
it speeds up any model whose zeros follow the structure, whoever pruned it. Convs it
cannot handle are left to IREE's default lowering with a logged reason.

Each rewritten conv becomes a ``func.call`` to a private helper function holding the
kernel; IREE's inliner folds it back in, and the helper keeps ``rt3d opt`` output readable.

With ``KgsConv3dOptions.microkernel`` (llvm-cpu targets), the helper instead dispatches the
hand-written kernel of plugins/ukernel (see kgs_ukernel.py): the same compacted weights and
gather offsets, run near the machine's peak, with bias and ReLU applied as it stores; 3-D max
pools then run on the same kernel library.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, func

from . import kgs_ukernel
from .kernel_config import CONFIGS, KernelConfig, SpirvKernelConfig, compilation_info, spirv_compilation_info
from .kgs_ukernel import Microkernel
from .weights import constant_value

logger = logging.getLogger(__name__)

PASS_NAME = "rt3d-kgs-conv3d"
CONV_OP = "linalg.conv_3d_ncdhw_fcdhw"
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class KgsConv3dOptions:
    """Options of the pass.

    Attributes:
        group_m: filters per group (gM). The compacted matmul keeps one column set per group.
        group_n: channels per group (gN). Used only to check and report KGS structure; the
            kept columns are found per filter group regardless, so any zero pattern is correct.
        target: key into ``kernel_config.CONFIGS`` choosing lowering configurations
            ("cpu" for llvm-cpu, "none" to let the backend choose).
        config: explicit kernel configuration overriding the target's default.
        max_padding_waste: when groups keep different numbers of columns, every group is
            padded to the largest; above this fraction of wasted MACs we still rewrite but log it.
        microkernel: llvm-cpu only: the hand-written kernel (passes/kgs_ukernel.py) for the
            target's ISA. Convs with stride 1 in H and W then call it; the others, and every
            conv when this is None, take the code generation path.
    """

    group_m: int = 8
    group_n: int = 4
    target: str = "cpu"
    config: KernelConfig | None = None
    max_padding_waste: float = 0.25
    microkernel: Microkernel | None = None

    def __post_init__(self) -> None:
        for name in ("group_m", "group_n"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1 or value > 1024:
                raise ValueError(
                    f"{name} must be an integer between 1 and 1024 (got {value!r}); "
                    "the paper uses gM=4 or 8 filters and gN=4 channels"
                )
        if self.target not in CONFIGS:
            raise ValueError(
                f"unknown kernel target {self.target!r}; choose one of {sorted(CONFIGS)}"
            )

    def kernel_config(self) -> KernelConfig | SpirvKernelConfig | None:
        return self.config if self.config is not None else CONFIGS[self.target]


@dataclass(frozen=True)
class ConvGeometry:
    """Static shape facts of a conv3d in NCDHW / FCDHW layout (input already padded)."""

    n: int
    c: int
    d: int
    h: int
    w: int
    f: int
    kd: int
    kh: int
    kw: int
    strides: tuple[int, int, int]
    dilations: tuple[int, int, int]
    od: int
    oh: int
    ow: int

    @property
    def kernel_volume(self) -> int:
        return self.kd * self.kh * self.kw

    @property
    def dense_macs(self) -> int:
        return self.n * self.f * self.c * self.kernel_volume * self.od * self.oh * self.ow

    @property
    def rows_contiguous(self) -> bool:
        """Stride 1 in H and W (or a single output row / column, where the stride never
        applies): a flat run over (h, padded w) is contiguous in the input."""
        return (self.strides[1] == 1 or self.oh == 1) and (self.strides[2] == 1 or self.ow == 1)


@dataclass
class KgsPlan:
    """What the rewrite emits for one conv: compacted weights and the gather table."""

    weights: np.ndarray  # [G, gM, n] float32, zero rows/columns where padded
    offsets: np.ndarray  # [G, n] int32, flat input offset of each kept column
    kept_per_group: np.ndarray  # [G] number of columns really kept per group
    group_m: int
    kgs_conforming: bool  # zeros follow KGS structure for (gM, gN)
    kd_start: np.ndarray | None = None  # [G, KD+1] first column of each kernel frame (by_frame)

    @property
    def groups(self) -> int:
        return self.weights.shape[0]

    @property
    def columns(self) -> int:
        return self.weights.shape[2]


@dataclass
class ConvReport:
    """One conv the pass looked at, for logs and for users' reports."""

    location: str
    rewritten: bool
    reason: str = ""
    dense_macs: int = 0
    kept_macs: int = 0
    executed_macs: int = 0
    kgs_conforming: bool = False
    kernel: str = ""  # "microkernel", "codegen" or "" (not rewritten / fully pruned)
    epilogue: str = ""  # microkernel: what it applies as it stores ("bias", "accumulate", "+relu")


@dataclass
class PassReport:
    convs: list[ConvReport] = field(default_factory=list)
    pools: int = 0  # 3-D max pools given to the microkernel as dispatches of their own
    fused_pools: int = 0  # 3-D max pools computed by the conv dispatch before them
    pads: int = 0  # conv inputs zero-padded by the microkernel's pad dispatch
    unpadded_pools: int = 0  # pooling dispatches that read their -inf-padded input unpadded
    fused_residuals: int = 0  # residual additions (conv + bias + r, ReLU after) done by the conv's store
    subsampled: int = 0  # strided 1x1x1 convs whose input the pooling kernel subsamples (no phase planes)

    @property
    def rewritten(self) -> int:
        return sum(c.rewritten for c in self.convs)

    @property
    def skipped(self) -> list[ConvReport]:
        return [c for c in self.convs if not c.rewritten]


class NotHandled(Exception):
    """A conv the pass leaves to IREE; the message is the reason users see in the log."""


def conv_geometry(op: ir.Operation) -> ConvGeometry:
    """Read the static geometry of a ``linalg.conv_3d_ncdhw_fcdhw`` op."""
    x_t = ir.RankedTensorType(op.operands[0].type)
    w_t = ir.RankedTensorType(op.operands[1].type)
    o_t = ir.RankedTensorType(op.results[0].type)
    for t in (x_t, w_t, o_t):
        if not t.has_static_shape:
            raise NotHandled("dynamic shapes are not supported")
        if str(t.element_type) != "f32":
            raise NotHandled(f"element type {t.element_type} is not f32")
    n, c, d, h, w = x_t.shape
    f, wc, kd, kh, kw = w_t.shape
    if wc != c:
        raise NotHandled(f"weight has {wc} input channels but input has {c} (grouped conv)")
    strides = tuple(int(v) for v in ir.DenseIntElementsAttr(op.attributes["strides"]))
    dilations = tuple(int(v) for v in ir.DenseIntElementsAttr(op.attributes["dilations"]))
    _, _, od, oh, ow = o_t.shape
    return ConvGeometry(n, c, d, h, w, f, kd, kh, kw, strides, dilations, od, oh, ow)


def plan_kgs(
    weight: np.ndarray, geom: ConvGeometry, group_m: int, group_n: int, max_kernel_rows: int = 16,
    col_offset: np.ndarray | None = None, by_frame: bool = False,
) -> KgsPlan:
    """Find each filter group's kept columns and build compacted weights + gather offsets.

    ``by_frame``: each group's columns are sorted by kernel frame kd (stable), and
    ``kd_start`` says where each frame's columns begin (the microkernel's frame ranges).

    A column (c, kd, kh, kw) is kept for a group if any of the group's filters has a
    nonzero weight there; the result is exact for any zero pattern. ``F`` not divisible by
    ``gM`` is handled by padding the last group with zero filters. Neighbouring groups with
    identical column sets are merged into kernel groups of up to ``max_kernel_rows`` filters.
    """
    f, c, k = geom.f, geom.c, geom.kernel_volume
    groups = -(-f // group_m)
    w2 = np.zeros((groups * group_m, c * k), dtype=np.float32)
    w2[:f] = weight.reshape(f, c * k)
    kept = np.any(w2.reshape(groups, group_m, c * k) != 0, axis=1)  # [G, C*K]
    conforming = _is_kgs(kept, weight.shape, group_m, group_n)
    # Merge runs of neighbouring groups that keep the same columns (always true for dense
    # layers): more filters share each gathered row, which is what bounds the kernel's speed.
    merge = 1
    for m in range(max(1, max_kernel_rows // group_m), 1, -1):
        if groups % m == 0 and np.all(kept.reshape(groups // m, m, -1) == kept[::m, None, :]):
            merge = m
            break
    if merge > 1:
        group_m *= merge
        groups //= merge
        kept = kept[::merge]
    wg = w2.reshape(groups, group_m, c * k)
    kept_per_group = kept.sum(axis=1)
    n_cols = int(kept_per_group.max()) if groups else 0

    # Flat offset of column (c, kd, kh, kw) in the padded NCDHW input.
    sd, sh = geom.h * geom.w, geom.w
    dl = geom.dilations
    ci, kdi, khi, kwi = np.meshgrid(
        np.arange(c), np.arange(geom.kd), np.arange(geom.kh), np.arange(geom.kw), indexing="ij"
    )
    if col_offset is None:  # else the caller's layout (the microkernel's phase planes)
        col_offset = (
            ci * geom.d * sd + kdi * dl[0] * sd + khi * dl[1] * sh + kwi * dl[2]
        ).reshape(-1)

    weights = np.zeros((groups, group_m, n_cols), dtype=np.float32)
    offsets = np.zeros((groups, n_cols), dtype=np.int64)
    kd_of = kdi.reshape(-1)
    kd_start = np.zeros((groups, geom.kd + 1), dtype=np.int32) if by_frame else None
    for g in range(groups):
        cols = np.nonzero(kept[g])[0]
        if by_frame:
            cols = cols[np.argsort(kd_of[cols], kind="stable")]
            kd_start[g, 1:] = np.cumsum(np.bincount(kd_of[cols], minlength=geom.kd))
        weights[g, :, : cols.size] = wg[g][:, cols]
        offsets[g, : cols.size] = col_offset[cols]
        if 0 < cols.size < n_cols:
            # Padding columns read a valid element (the last kept one) times a zero weight.
            offsets[g, cols.size :] = col_offset[cols[-1]]
    return KgsPlan(
        weights=weights,
        offsets=offsets.astype(np.int32),
        kept_per_group=kept_per_group,
        group_m=group_m,
        kgs_conforming=conforming,
        kd_start=kd_start,
    )


def _is_kgs(kept: np.ndarray, wshape: tuple[int, ...], group_m: int, group_n: int) -> bool:
    """True if, within every gN-channel block, all channels keep the same kernel positions."""
    groups = kept.shape[0]
    c = wshape[1]
    k = int(np.prod(wshape[2:]))
    per = kept.reshape(groups, c, k)
    blocks = -(-c // group_n)
    for b in range(blocks):
        blk = per[:, b * group_n : (b + 1) * group_n]
        if not np.all(blk == blk[:, :1]):
            return False
    return True


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
    if geom.rows_contiguous:
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
        n_tiles = _ceil_div(q_valid, dq)
        q_tile = _ceil_div(_ceil_div(q_valid, n_tiles), vq) * vq
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
        if spirv:
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
    if geom.rows_contiguous:
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


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


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


def _is_constant_expr(value: ir.Value, limit: int = 10_000) -> bool:
    """True if ``value`` is computed from constants only (no function argument reaches it)."""
    stack, seen = [value], 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > limit or isinstance(v.owner, ir.Block):
            return False  # a block argument: the function's input (or too deep to tell)
        stack.extend(v.owner.operands)
    return True


def _is_generic_conv3d(op: ir.Operation) -> bool:
    """A linalg.generic that slides a 3-D window: an input map with three ``dX + dY`` results,
    at least three reduction loops and a multiply in its body (how torch-mlir writes grouped
    conv3d; padded 3-D max pooling slides a window too, but takes a maximum)."""
    try:
        maps = ir.ArrayAttr(op.attributes["indexing_maps"])
        iters = str(op.attributes["iterator_types"])
    except (KeyError, ValueError):
        return False
    if iters.count("reduction") < 3 or not len(maps):
        return False
    results = str(maps[0]).split("->", 1)[-1]
    if results.count("+") < 3:
        return False
    body = op.regions[0].blocks[0]
    return any(o.operation.name in ("arith.mulf", "arith.muli") for o in body.operations)


class KgsConv3dPass:
    """Python-defined MLIR pass; add it with ``PassManager.add(KgsConv3dPass(options))``.

    After it runs, ``report`` lists every conv it saw and what it did.
    """

    name = PASS_NAME

    def __init__(self, options: KgsConv3dOptions | None = None) -> None:
        self.options = options or KgsConv3dOptions()
        self.report = PassReport()

    def __call__(self, op: ir.Operation, pass_: object | None = None) -> None:
        module_op = op.operation if isinstance(op, ir.OpView) else op
        convs: list[ir.Operation] = []

        def collect(o: ir.Operation) -> ir.WalkResult:
            if o.name == CONV_OP:
                convs.append(o)
            elif o.name.startswith("linalg.") and "conv_3d" in o.name:
                self.report.convs.append(
                    ConvReport(str(o.location), False, f"{o.name} is not supported (only {CONV_OP})")
                )
                logger.info("leaving %s at %s to IREE: unsupported conv form", o.name, o.location)
            elif o.name == "linalg.generic" and _is_generic_conv3d(o):
                reason = ("a 3-D convolution written as linalg.generic (torch-mlir emits grouped conv3d, "
                          "groups > 1, this way) is not supported")
                self.report.convs.append(ConvReport(str(o.location), False, reason))
                logger.info("leaving conv at %s to IREE: %s", o.location, reason)
            return ir.WalkResult.ADVANCE

        module_op.walk(collect)
        body = module_op.regions[0].blocks[0]
        self._ukernel_calls: list[kgs_ukernel.UkernelCall | kgs_ukernel.FrameCall] = []
        self._ukernel_helpers: list[str] = []
        for index, conv in enumerate(convs):
            try:
                self.report.convs.append(self._rewrite(conv, body, f"rt3d_kgs_conv3d_{index}"))
            except NotHandled as exc:
                logger.info("leaving conv at %s to IREE: %s", conv.location, exc)
                self.report.convs.append(ConvReport(str(conv.location), False, str(exc)))
        # Pools not fused into a conv above get a dispatch of their own.
        pools: list[ir.Operation] = []
        if self.options.microkernel is not None and not isinstance(self.options.kernel_config(), SpirvKernelConfig):
            def collect_pools(o: ir.Operation) -> ir.WalkResult:
                if o.name == "linalg.generic" and _maxpool_window(o) is not None:
                    pools.append(o)
                return ir.WalkResult.ADVANCE

            module_op.walk(collect_pools)
        for index, pool in enumerate(pools):
            self._rewrite_pool(pool, f"rt3d_maxpool3d_{index}")
        if self._ukernel_calls:
            # Parsed together: the helpers' flow.dispatch ops refer to the executable's exports.
            text = kgs_ukernel.executable_text(self._ukernel_calls, self.options.microkernel)
            with module_op.context, ir.Location.unknown():
                parsed = ir.Module.parse("module {" + text + "".join(self._ukernel_helpers) + "\n}")
                for op in list(parsed.body.operations):
                    op.operation.move_before(body.operations[0])

    def _rewrite(self, conv: ir.Operation, body: ir.Block, name: str) -> ConvReport:
        opts = self.options
        geom = conv_geometry(conv)
        weight = constant_value(conv.operands[1])
        if weight is None:
            raise NotHandled("weight is not a constant tensor (the pass reads weight values)")
        total = geom.n * geom.c * geom.d * geom.h * geom.w
        if total + geom.c * geom.d * geom.h * geom.w > _INT32_MAX:
            raise NotHandled("input too large for 32-bit gather offsets")
        init = conv.operands[2]
        result = conv.results[0]
        config = opts.kernel_config()
        spirv = isinstance(config, SpirvKernelConfig)
        # A conv whose input is constant (after a fully pruned conv) is evaluated by IREE at
        # compile time for the compiling machine: the target's kernel object is not linked
        # there (found by the fuzzer on aarch64: undefined symbol) and a GPU tiling does not
        # lower there ("gpu.thread_id ... LLVM IR"). Such convs take plain code generation.
        constant_input = _is_constant_expr(conv.operands[0])
        ukernel = opts.microkernel is not None and not spirv and not constant_input
        subsampled = None
        if ukernel and geom.kernel_volume == 1 and not geom.rows_contiguous and _zero_pad_of(conv.operands[0]) is None:
            # A strided 1x1x1 conv (ResNet downsampling) reads one input element in sd*sh*sw:
            # the pooling kernel with a 1x1x1 window copies just those (the phase planes below
            # copy all of it, R(2+1)D: 0.6 ms of its 0.7 for three; IREE's strided
            # tensor.extract_slice 0.4), then it is a stride-1 conv.
            subsampled = self._subsample(conv.operands[0], geom, conv, name + "_subsample")
            geom = replace(geom, d=geom.od, h=geom.oh, w=geom.ow, strides=(1, 1, 1))
        # Strided rows: the microkernel reads the input as phase planes (kgs_ukernel.py).
        col_offset = kgs_ukernel.phase_column_offsets(geom) if ukernel and not geom.rows_contiguous else None
        # Padded in depth only (temporal convs): the kernel reads the unpadded input, each output
        # frame only the kernel frames inside it, so the input is not copied at all.
        frames = _frames_only_pad(conv.operands[0], geom) if ukernel and geom.rows_contiguous else None
        if frames is not None:
            col_offset = kgs_ukernel.frame_column_offsets(geom, *frames)
        plan = plan_kgs(weight, geom, opts.group_m, opts.group_n, col_offset=col_offset, by_frame=frames is not None)
        if spirv and plan.group_m == 1:
            # A unit filter loop is folded by IREE, after which our SPIR-V tiling no longer
            # fits (wrong results or failed compiles, found by the fuzzer) and IREE's own
            # choice is a subgroup reduction assuming the target's width: pair the filters.
            plan = plan_kgs(weight, geom, 2, opts.group_n)
        k_total = geom.c * geom.kernel_volume
        kept = int(plan.kept_per_group.sum())
        positions = geom.n * geom.od * geom.oh * geom.ow
        per_col = positions * plan.group_m
        real_rows = np.minimum(plan.group_m, geom.f - np.arange(plan.groups) * plan.group_m)
        report = ConvReport(
            location=str(conv.location),
            rewritten=True,
            dense_macs=geom.dense_macs,
            kept_macs=int((plan.kept_per_group * real_rows).sum()) * positions,
            executed_macs=plan.groups * plan.columns * per_col,
            kgs_conforming=plan.kgs_conforming,
        )
        if plan.columns == 0:
            # Fully pruned layer: the output is the accumulator (bias or zeros).
            result.replace_all_uses_with(init)
            conv.erase()
            logger.info("conv at %s is fully pruned: replaced by its bias", report.location)
            return report
        if ukernel:
            report.kernel = "microkernel"
            report.executed_macs = kept * per_col  # it runs each group's own column count
            report.epilogue = self._rewrite_ukernel(conv, geom, plan, name, frames, subsampled)
            return report
        report.kernel = "codegen"
        waste = 1 - kept / max(1, plan.groups * plan.columns)
        if waste > opts.max_padding_waste:
            logger.info(
                "conv at %s: unbalanced groups waste %.0f%% of MACs on padding", report.location, waste * 100
            )
        if spirv and constant_input:
            config = None  # no GPU tiling where IREE evaluates it on the host (see above)
        text = emit_kernel(name, geom, plan, config)
        with conv.context, conv.location:
            helper = ir.Module.parse("module {" + text + "\n}")
            fn = helper.body.operations[0]
            fn.operation.move_before(body.operations[0])
            with ir.InsertionPoint(conv):
                w_attr = ir.DenseElementsAttr.get(np.ascontiguousarray(plan.weights))
                off_attr = ir.DenseElementsAttr.get(np.ascontiguousarray(plan.offsets))
                w_val = arith.ConstantOp(w_attr.type, w_attr).result
                off_val = arith.ConstantOp(off_attr.type, off_attr).result
                args = [conv.operands[0], init, w_val, off_val]
                call = func.CallOp([result.type], ir.FlatSymbolRefAttr.get(name), args)
        result.replace_all_uses_with(call.results[0])
        conv.erase()
        logger.debug(
            "rewrote conv at %s: %d groups x %d columns of %d (%.1f%% kept)",
            report.location, plan.groups, plan.columns, k_total, 100 * kept / max(1, plan.groups * k_total),
        )
        return report

    def _rewrite_pool(self, pool: ir.Operation, name: str) -> None:
        """Replace a 3-D max pool by the microkernel's pooling dispatch (IREE's own lowering of
        the pooling generic ran at a quarter of memory speed; C3D spends 25 ms in pools)."""
        window, strides = _maxpool_window(pool)
        x, result = pool.operands[0], pool.results[0]
        if _is_constant_expr(x):
            return  # evaluated at compile time on this machine (see _rewrite)
        out_shape = ir.RankedTensorType(result.type).shape
        low, pad_op = (0, 0, 0), None
        slice_op = _leading_slice(x)  # rt3d-trim-window-inputs cut the padding's end
        padded_x = x if slice_op is None else slice_op.operands[0]
        padded = _constant_pad_of(padded_x, float("-inf"))
        if padded is not None and _pool_pad_foldable(*padded, out_shape, window, strides):
            # The kernel reads the input unpadded (the padding is -inf: skipped). IREE would
            # fill the padded tensor and copy the input into it.
            pad_op = _defining_op(padded_x)
            x, low = pad_op.operands[0], tuple(padded[1][2:])
        pooled = self._pool_dispatch(x, out_shape, window, strides, low, name, pool)
        result.replace_all_uses_with(pooled)
        pool.erase()
        if pad_op is not None:
            self.report.unpadded_pools += 1
            for dead in (slice_op, pad_op):
                if dead is not None and not list(dead.results[0].uses):
                    dead.erase()
        self.report.pools += 1

    def _subsample(self, x: ir.Value, geom: ConvGeometry, before: ir.Operation, name: str) -> ir.Value:
        """``x[:, :, ::sd, ::sh, ::sw]`` cut to ``geom``'s output extent, by the pooling
        dispatch (a 1x1x1 window), called before ``before``."""
        self.report.subsampled += 1
        out_shape = [geom.n, geom.c, geom.od, geom.oh, geom.ow]
        return self._pool_dispatch(x, out_shape, (1, 1, 1), geom.strides, (0, 0, 0), name, before)

    def _pool_dispatch(self, x: ir.Value, out_shape, window, strides, low, name: str,
                       before: ir.Operation) -> ir.Value:
        """The pooling kernel's dispatch on ``x`` (helper ``name``), called before ``before``."""
        call = kgs_ukernel.pool_call(f"pool{len(self._ukernel_calls)}", ir.RankedTensorType(x.type).shape,
                                     out_shape, window, strides, low)
        self._ukernel_calls.append(call)
        self._ukernel_helpers.append(kgs_ukernel.pool_helper_text(name, call))
        with before.context, before.location, ir.InsertionPoint(before):
            out_t = ir.RankedTensorType.get(list(out_shape), ir.RankedTensorType(x.type).element_type)
            return func.CallOp([out_t], ir.FlatSymbolRefAttr.get(name), [x]).results[0]

    def _rewrite_ukernel(self, conv: ir.Operation, geom: ConvGeometry, plan: KgsPlan, name: str,
                         frames: tuple[int, int] | None = None, x: ir.Value | None = None) -> str:
        """Replace ``conv`` by a call to a helper that dispatches the microkernel.

        The bias is passed to the kernel when the conv's accumulator is a broadcast constant
        (how torch-mlir writes a conv's bias); otherwise the kernel adds into the accumulator.
        A ReLU that is the conv's only user is applied by the kernel as it stores. So is a
        residual addition (ResNet blocks: ``relu(conv(x) + bias + r)``): the kernel adds into
        ``r`` in place, which saves the elementwise dispatch's pass over memory (R(2+1)D:
        eight of them, 12.8 MB each in its first stage).
        """
        init, result = conv.operands[2], conv.results[0]
        bias = _constant_bias(init, geom.f)
        relu = _sole_relu_user(result)
        residual = _sole_residual_add(result) if bias is not None and relu is None else None
        if residual is not None and not _available_at(residual[1], conv):
            residual = None  # r is computed after the conv (then r's own conv may take the addition)
        if residual is not None:
            relu = _sole_relu_user(residual[0].results[0])
        pool = None
        if bias is not None and residual is None and geom.rows_contiguous and frames is None:
            pool = _fusable_pool(relu.results[0] if relu is not None else result, geom, plan.group_m)
        call = kgs_ukernel.plan_call(f"conv{len(self._ukernel_calls)}", geom, plan, relu is not None, bias is None,
                                     phased=not geom.rows_contiguous, pool=pool[1] if pool else None, frames=frames,
                                     residual=residual is not None)
        self._ukernel_calls.append(call)
        x = conv.operands[0] if x is None else x  # (``x``: the conv's input, subsampled)
        source_pad = _zero_pad_of(x)
        pad_op = None
        if source_pad is not None:
            pad_op = _defining_op(x)
            x = pad_op.operands[0]
            if frames is not None:  # the kernel reads it as it is
                source_pad = (source_pad[0], [0] * 5, [0] * 5)
        pad = None
        x_shape, low, high = kgs_ukernel.input_pad(geom, call, source_pad)
        if call.phase is None and (any(low) or any(high)):  # the phase layout keeps tensor.pad + transpose
            pad = kgs_ukernel.pad_call(f"pad{len(self._ukernel_calls)}", x_shape, low, high)
            if pad is not None:
                self._ukernel_calls.append(pad)
                self.report.pads += 1
        self._ukernel_helpers.append(kgs_ukernel.helper_text(name, geom, call, source_pad, pad))
        with conv.context, conv.location, ir.InsertionPoint(conv):
            w_attr = ir.DenseElementsAttr.get(kgs_ukernel.packed_weights(plan).reshape(-1))
            off_attr = ir.DenseElementsAttr.get(kgs_ukernel.offset_table(plan, call))
            if bias is None:
                second = init
            else:
                b_attr = ir.DenseElementsAttr.get(bias)
                second = arith.ConstantOp(b_attr.type, b_attr).result
            args = [x, second, arith.ConstantOp(w_attr.type, w_attr).result,
                    arith.ConstantOp(off_attr.type, off_attr).result]
            if residual is not None:
                args.append(residual[1])
            out_type = pool[0].results[0].type if pool else result.type
            call_op = func.CallOp([out_type], ir.FlatSymbolRefAttr.get(name), args)
        if pool is not None:
            pool_op = pool[0]
            pool_init = pool_op.operands[2].owner
            pool_op.results[0].replace_all_uses_with(call_op.results[0])
            pool_op.erase()
            pool_init = pool_init.operation if isinstance(pool_init, ir.OpView) else pool_init
            if not list(pool_init.results[0].uses):  # its -inf fill
                pool_init.erase()
        if relu is not None:
            if pool is None:
                relu.results[0].replace_all_uses_with(call_op.results[0])
            relu.erase()
        if residual is not None:
            residual[0].results[0].replace_all_uses_with(call_op.results[0])
            residual[0].erase()
            self.report.fused_residuals += 1
        if pool is None:
            result.replace_all_uses_with(call_op.results[0])
        conv.erase()
        if pad_op is not None and not list(pad_op.results[0].uses):  # torch-mlir's pad, now read by no one
            pad_op.erase()
        producer = init.owner
        if bias is not None and not list(init.uses):  # the bias broadcast / fill is now dead
            (producer.operation if isinstance(producer, ir.OpView) else producer).erase()
        epilogue = ("accumulate" if bias is None else "bias") + ("+residual" if residual is not None else "")
        epilogue += "+relu" if relu is not None else ""
        if pool is not None:
            self.report.fused_pools += 1
            epilogue += "+maxpool" + "x".join(map(str, pool[1]))
        return epilogue


def _constant_bias(init: ir.Value, filters: int) -> np.ndarray | None:
    """The per-filter bias if ``init`` broadcasts a constant along the filter dim, else None."""
    op = init.owner
    if not isinstance(op, (ir.Operation, ir.OpView)):
        return None
    op = op.operation if isinstance(op, ir.OpView) else op
    if op.name == "linalg.fill":
        value = _float_constant(op.operands[0])
        return None if value is None else np.full(filters, value, np.float32)
    if op.name == "linalg.broadcast" and list(ir.DenseI64ArrayAttr(op.attributes["dimensions"])) == [0, 2, 3, 4]:
        value = constant_value(op.operands[0])
        if value is not None and value.shape == (filters,):
            return value.astype(np.float32)
    return None


_POOL_TERM = re.compile(r"^d(\d)(?:\s*\*\s*(\d+))?\s*\+\s*d(\d)$")


def _maxpool_window(op: ir.Operation) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """(window, strides) if ``op`` is torch-mlir's 3-D max pool the pooling kernel computes.

    The form: ins(x [N,C,D,H,W], window [kd,kh,kw]) outs(fill -inf), maps
    (d0, d1, d2 * sd + d5, d3 * sh + d6, d4 * sw + d7), (d5, d6, d7), identity; body
    ``maximumf(in, out)``; no dilation; rows no wider than the kernel's row buffer.
    """
    if len(op.operands) != 3 or len(op.results) != 1:
        return None
    try:
        maps = [str(m).split("->", 1)[1].strip().rstrip(">").strip()
                for m in ir.ArrayAttr(op.attributes["indexing_maps"])]
        iters = str(op.attributes["iterator_types"])
    except (KeyError, ValueError):
        return None
    if iters.count("parallel") != 5 or iters.count("reduction") != 3:
        return None
    if maps[1] != "(d5, d6, d7)" or maps[2] != "(d0, d1, d2, d3, d4)":
        return None
    terms = [t.strip() for t in maps[0].removeprefix("(").removesuffix(")").split(",")]
    if len(terms) != 5 or terms[:2] != ["d0", "d1"]:
        return None
    strides = []
    for i, term in enumerate(terms[2:]):
        m = _POOL_TERM.fullmatch(term)
        if not m or int(m.group(1)) != 2 + i or int(m.group(3)) != 5 + i:
            return None
        strides.append(int(m.group(2) or 1))
    types = [ir.RankedTensorType(v.type) for v in op.operands]
    if any(not t.has_static_shape or str(t.element_type) != "f32" for t in types) or types[0].rank != 5:
        return None
    ops = [o.operation for o in op.regions[0].blocks[0].operations]
    block = op.regions[0].blocks[0]
    if [o.name for o in ops] != ["arith.maximumf", "linalg.yield"]:
        return None
    if list(ops[0].operands) != [block.arguments[0], block.arguments[2]]:
        return None
    init = op.operands[2].owner
    init = init.operation if isinstance(init, ir.OpView) else init
    if not isinstance(init, ir.Operation) or init.name != "linalg.fill" or _float_constant(init.operands[0]) != float("-inf"):
        return None
    window = tuple(types[1].shape)
    ow = ir.RankedTensorType(op.results[0].type).shape[4]
    if (ow - 1) * strides[2] + window[2] > kgs_ukernel.POOL_ROW_MAX:
        return None
    return window, tuple(strides)


def _fusable_pool(value: ir.Value, geom: ConvGeometry, group_m: int) -> tuple[ir.Operation, tuple[int, int, int]] | None:
    """(pool op, window) if ``value``'s only user is a 3-D max pool the kernel can fuse: window
    equal to its stride (no overlap), no padding, floor sizes, and a stack buffer big enough
    for one pooled row (kgs_ukernel.pool_rows)."""
    uses = list(value.uses)
    if len(uses) != 1:
        return None
    user = uses[0].owner
    user = user.operation if isinstance(user, ir.OpView) else user
    if user.name != "linalg.generic" or user.operands[0] != value:
        return None
    found = _maxpool_window(user)
    if found is None or found[0] != found[1]:
        return None
    window = found[0]
    pooled = tuple(ir.RankedTensorType(user.results[0].type).shape)
    if pooled != (geom.n, geom.f, geom.od // window[0], geom.oh // window[1], geom.ow // window[2]):
        return None
    if min(pooled[2:]) < 1 or kgs_ukernel.pool_rows(geom, group_m, window) < 1:
        return None
    return user, window


def _frames_only_pad(x: ir.Value, geom: ConvGeometry) -> tuple[int, int] | None:
    """(depth padding before, input depth) if the conv's input ``x`` is a zero pad in depth
    only that the kernel can do without (kgs_ukernel.frame_ranges_fit), else None."""
    found = _zero_pad_of(x)
    if found is None:
        return None
    shape, low, high = found
    if any(low[i] or high[i] for i in (0, 1, 3, 4)) or not (low[2] or high[2]):
        return None
    if not kgs_ukernel.frame_ranges_fit(geom, shape[2]):
        return None
    return low[2], shape[2]


def _zero_pad_of(value: ir.Value) -> tuple[list[int], list[int], list[int]] | None:
    """(source shape, low, high) if ``value`` is a static zero ``tensor.pad`` of a 5-D tensor."""
    return _constant_pad_of(value, 0.0)


def _pool_pad_foldable(shape: list[int], low: list[int], high: list[int], out_shape: list[int],
                       window: tuple[int, int, int], strides: tuple[int, int, int]) -> bool:
    """Whether the pooling kernel can read a pool's -inf-padded input unpadded: padding in D,
    H, W only, and every window holds at least one input element (else its maximum would be
    -inf from padding alone, which the kernel does not compute)."""
    if any(low[:2]) or any(high[:2]) or min(low) < 0 or min(high) < 0 or low[4] > kgs_ukernel.POOL_PAD_MAX:
        return False
    return all(lo < k and (o - 1) * s - lo < n
               for n, o, k, s, lo in zip(shape[2:], out_shape[2:], window, strides, low[2:], strict=True))


def _defining_op(value: ir.Value) -> ir.Operation | None:
    """The operation that defines ``value`` (None for a block argument)."""
    op = value.owner
    if isinstance(op, ir.OpView):
        return op.operation
    return op if isinstance(op, ir.Operation) else None


def _leading_slice(value: ir.Value) -> ir.Operation | None:
    """The op if ``value`` is a static ``tensor.extract_slice`` at offset 0 with unit strides
    (a leading corner: what rt3d-trim-window-inputs makes of a pool's padded input)."""
    op = _defining_op(value)
    if op is None or op.name != "tensor.extract_slice" or len(op.operands) != 1:  # dynamic parts: operands
        return None
    offsets = list(ir.DenseI64ArrayAttr(op.attributes["static_offsets"]))
    strides = list(ir.DenseI64ArrayAttr(op.attributes["static_strides"]))
    if any(offsets) or any(s != 1 for s in strides):
        return None
    return op


def _constant_pad_of(value: ir.Value, fill: float) -> tuple[list[int], list[int], list[int]] | None:
    """(source shape, low, high) if ``value`` is a static ``tensor.pad`` of a 5-D tensor with ``fill``."""
    op = _defining_op(value)
    if op is None or op.name != "tensor.pad" or len(op.operands) != 1:  # dynamic low / high come as operands
        return None
    yielded = op.regions[0].blocks[0].operations[0]
    if yielded.operation.name != "tensor.yield" or _float_constant(yielded.operands[0]) != fill:
        return None
    src = ir.RankedTensorType(op.operands[0].type)
    if not src.has_static_shape or src.rank != 5:
        return None
    low = list(ir.DenseI64ArrayAttr(op.attributes["static_low"]))
    high = list(ir.DenseI64ArrayAttr(op.attributes["static_high"]))
    return list(src.shape), low, high


def _float_constant(value: ir.Value) -> float | None:
    """The value of a scalar float ``arith.constant``, else None."""
    owner = value.owner
    if not isinstance(owner, (ir.Operation, ir.OpView)):
        return None
    owner = owner.operation if isinstance(owner, ir.OpView) else owner
    if owner.name != "arith.constant":
        return None
    try:
        return ir.FloatAttr(owner.attributes["value"]).value
    except ValueError:
        return None


def _sole_elementwise_user(result: ir.Value, inputs: int) -> ir.Operation | None:
    """The 5-D elementwise ``linalg.generic`` (identity maps, ``inputs`` inputs, ``result``'s
    type) that is ``result``'s only user, if there is one; ``result`` is among its inputs."""
    uses = list(result.uses)
    if len(uses) != 1:
        return None
    user = uses[0].owner
    user = user.operation if isinstance(user, ir.OpView) else user
    if user.name != "linalg.generic" or len(user.operands) != inputs + 1 or user.results[0].type != result.type:
        return None
    if result not in list(user.operands)[:inputs]:
        return None
    if str(user.attributes["iterator_types"]).count("parallel") != 5:
        return None
    identity = "(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)"
    if any(identity not in str(m) for m in ir.ArrayAttr(user.attributes["indexing_maps"])):
        return None
    return user


def _sole_relu_user(result: ir.Value) -> ir.Operation | None:
    """The elementwise ``max(x, 0)`` generic that is ``result``'s only user, if there is one.

    torch-mlir writes ReLU as ``select(cmpf ugt x, 0), x, 0)``; ``arith.maximumf`` is also taken.
    """
    user = _sole_elementwise_user(result, 1)
    if user is None:
        return None
    block = user.regions[0].blocks[0]
    ops = [o.operation for o in block.operations]
    arg = block.arguments[0]

    def is_zero(v: ir.Value) -> bool:
        return _float_constant(v) == 0.0

    names = [o.name for o in ops]
    if names == ["arith.maximumf", "linalg.yield"]:
        m = ops[0]
        ok = (m.operands[0] == arg and is_zero(m.operands[1])) or (m.operands[1] == arg and is_zero(m.operands[0]))
        return user if ok and ops[1].operands[0] == m.results[0] else None
    if names == ["arith.cmpf", "arith.select", "linalg.yield"]:
        cmp, sel, yld = ops
        pred = str(cmp.attributes["predicate"])
        # ogt / ugt are arith.cmpf predicates 2 / 9
        if not (cmp.operands[0] == arg and is_zero(cmp.operands[1]) and pred.split(":")[0].strip() in ("2", "9")):
            return None
        if sel.operands[0] != cmp.results[0] or sel.operands[1] != arg or not is_zero(sel.operands[2]):
            return None
        return user if yld.operands[0] == sel.results[0] else None
    return None


def _available_at(value: ir.Value, op: ir.Operation) -> bool:
    """True if ``value`` is defined before ``op`` in its block (or is an argument of it)."""
    owner = value.owner
    if isinstance(owner, ir.Block):
        return owner == op.block
    owner = owner.operation if isinstance(owner, ir.OpView) else owner
    return owner.block == op.block and owner.is_before_in_block(op)


def _sole_residual_add(result: ir.Value) -> tuple[ir.Operation, ir.Value] | None:
    """(the add, r) if ``result``'s only user is the elementwise ``result + r`` of a tensor
    ``r`` of its type (torch-mlir's residual connection), else None."""
    user = _sole_elementwise_user(result, 2)
    if user is None:
        return None
    a, b = user.operands[0], user.operands[1]
    if a == b or a.type != b.type:
        return None
    block = user.regions[0].blocks[0]
    ops = [o.operation for o in block.operations]
    if [o.name for o in ops] != ["arith.addf", "linalg.yield"] or ops[1].operands[0] != ops[0].results[0]:
        return None
    if {ops[0].operands[0], ops[0].operands[1]} != {block.arguments[0], block.arguments[1]}:
        return None
    return user, b if a == result else a


def run_pass(module: ir.Module, options: KgsConv3dOptions | None = None) -> PassReport:
    """Run the pass on ``module`` in place through an MLIR PassManager; return its report."""
    from iree.compiler.passmanager import PassManager

    kgs = KgsConv3dPass(options)
    with module.context:
        pm = PassManager("builtin.module")
        pm.add(kgs, name=PASS_NAME, argument=PASS_NAME, description=__doc__.splitlines()[0])
        pm.run(module.operation)
    return kgs.report
