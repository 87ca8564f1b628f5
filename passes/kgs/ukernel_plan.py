"""Microkernel dispatch planning: sizes, constants, workgroup grids and tables, no IR.

Why a module of its own: this is where the pass chooses how to run the kernel (tile sizes,
groups per workgroup, streaming, when the pad kernel pays off), numpy only, so the choices can
be tested without MLIR; the kernel's fixed interface is ``ukernel_abi`` and the MLIR text that
carries these choices is ``ukernel_ir``. The tunables below are read at call time (tests patch
them here).

The kernel computes stride-1 rows; a conv strided in H or W is first rearranged into phase
planes (space-to-depth: x'[c, a, b, d, i, j] = x[c, d, i*sh + a, j*sw + b]), on which it is a
stride-1 conv whose columns read phase (kh % sh, kw % sw) at shift (kh // sh, kw // sw): one
copy of the input, and the same kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .options import ceil_div
from .ukernel_abi import (
    _CONSTANTS,
    _MAX_LANES,
    _PAD_CONSTANTS,
    _POOL_CONSTANTS,
    ACCUMULATE,
    KERNEL_SYMBOL,
    PAD_SYMBOL,
    POOL_SCRATCH,
    POOL_SMALL_MAX,
    POOL_SMALL_TAPS,
    POOL_SYMBOL,
    RELU,
    STREAM,
)

_MIN_TILE = 48  # output positions per workgroup tile, at least one full register tile
_SMALL_WEIGHTS = 512 * 1024  # bytes: below this, a workgroup runs every group over its tile
_STREAM_INPUT = 16 << 20  # bytes of conv input from which it is prefetched into L2 only (half this host's L3)
_TILE_INPUT = 384 * 1024  # bytes of input a position tile may touch (stays in the 1 MiB L2)
_POOL_SMALL_WORKGROUP_FLOATS = 16384  # output a small-plane pooling workgroup writes, at most (whole planes)
PAD_KERNEL_MIN = 1 << 21  # floats of padded input from which the pad kernel is used (pad_call)
_PAD_WORKGROUP_BYTES = 64 * 1024  # output a pad workgroup writes, at least (whole frames)


@dataclass
class UkernelCall:
    """What one conv needs: the dispatch's sizes and constants, for the export and the call."""

    export: str
    flat_len: int
    w_len: int
    off_len: int
    f: int
    out_shape: tuple[int, ...]
    channel_pad: int
    workload: tuple[int, int, int]
    constants: dict[str, int]
    tied: bool
    phase: tuple[int, int, int, int] | None = None  # (sh, sw, H', W') for strided rows
    frames: tuple[int, int] | None = None  # (depth padding before, input depth): frame ranges
    frame_ranges: np.ndarray | None = None  # [OD, 2]: kernel frames [lo, hi) each output frame reads
    residual: bool = False  # the output buffer holds r: out = epilogue(conv + bias + r), in place
    grid: tuple[int, int, int] = (0, 1, 2)  # workgroup id i (x, y, z) runs workload dimension grid[i]

    symbol = KERNEL_SYMBOL

    def buffers(self) -> list[tuple[str, int, str]]:
        return [("x", self.flat_len, "f32"), ("w", self.w_len, "f32"), ("o", self.off_len, "i32"),
                ("b", self.f, "f32"), ("y", int(np.prod(self.out_shape)), "f32")]


@dataclass
class FrameCall:
    """A kernel that maps [N, C, D, H, W] -> [N, C', D', H', W'] with workgroups over output
    frames (x: blocks of frames_per_workgroup) and planes b*C' + c (y: blocks of
    planes_per_workgroup): the max pool and the conv input's zero pad."""

    export: str
    symbol: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    constants: dict[str, int]
    frames_per_workgroup: int = 1
    planes_per_workgroup: int = 1
    grid = (0, 1, 2)  # launched in workload order

    @property
    def workload(self) -> tuple[int, int, int]:
        return (ceil_div(self.out_shape[2], self.frames_per_workgroup),
                ceil_div(self.out_shape[0] * self.out_shape[1], self.planes_per_workgroup), 1)

    def buffers(self) -> list[tuple[str, int, str]]:
        return [("x", int(np.prod(self.in_shape)), "f32"), ("y", int(np.prod(self.out_shape)), "f32")]


def pool_call(export: str, in_shape, out_shape, window, strides, low=(0, 0, 0)) -> FrameCall:
    """The pooling dispatch on the unpadded input ``in_shape``, ``low`` (D, H, W) of -inf
    padding before it and whatever the windows reach past its end after it; the caller checks
    that the rows fit the kernel (POOL_ROW_MAX) and that every window holds an input element."""
    d, h, w = in_shape[2:]
    od, oh, ow = out_shape[2:]
    planes = out_shape[0] * out_shape[1]
    small = pool_small(in_shape, out_shape, window, strides)
    frames = od if small else 1  # the small-plane path does every output frame of its planes
    ppw = 1  # (more planes per workgroup on the row path: S3D's larger pools 20-50% slower)
    if small:  # whole small planes: several per workgroup, but enough workgroups for two threads
        ppw = max(1, min(ceil_div(planes, 16), _POOL_SMALL_WORKGROUP_FLOATS // (frames * oh * ow)))
        ppw = ceil_div(planes, ceil_div(planes, ppw))  # balanced: no short last block
    values = (d, h, w, od, oh, ow, *window, *strides, *low, planes, ppw)
    constants = dict(zip(_POOL_CONSTANTS, values, strict=True))
    return FrameCall(export, POOL_SYMBOL, tuple(in_shape), tuple(out_shape), constants, frames, ppw)


def pool_small(in_shape, out_shape, window, strides) -> bool:
    """The kernel's test (plugins/ukernel/src/pool.h, pool_small) for its small-plane path: stride 1 in H
    and W, planes of the input's size, the input's frames in its buffer (POOL_SMALL_MAX),
    windows of at most POOL_SMALL_TAPS rows and columns."""
    d, h, w = in_shape[2:]
    return (strides[1] == strides[2] == 1 and tuple(out_shape[3:]) == (h, w) and d * h * w <= POOL_SMALL_MAX
            and max(window[1:]) <= POOL_SMALL_TAPS)


def pad_call(export: str, in_shape, low, high) -> FrameCall | None:
    """The zero-pad dispatch for a conv input (zeros before D, H, W; after C, D, H, W), or
    None where IREE's tensor.pad does it better: a pad of another form, or a small tensor.

    Measured (dispatch statistics): on R(2+1)D's 14-32 MB inputs the kernel saves IREE's fill
    of the whole output (whole model -2 ms); below a few MB a dispatch of its own costs more
    than IREE's pad (S3D +1.5 ms with every pad on the kernel).
    """
    if any(low[:2]) or high[0] or any(v < 0 for v in (*low, *high)):
        return None
    out_shape = tuple(int(s + lo + hi) for s, lo, hi in zip(in_shape, low, high, strict=True))
    if int(np.prod(out_shape)) < PAD_KERNEL_MIN:
        return None
    frame = out_shape[3] * out_shape[4] * 4
    fpw = max(1, min(out_shape[2], _PAD_WORKGROUP_BYTES // frame))
    values = (*in_shape[1:], *out_shape[1:], *low[2:], fpw)
    return FrameCall(export, PAD_SYMBOL, tuple(in_shape), out_shape, dict(zip(_PAD_CONSTANTS, values, strict=True)),
                     fpw)


def phase_shape(geom) -> tuple[int, int, int, int]:
    """(sh, sw, H', W') of the phase-plane layout of a conv's padded input."""
    sh, sw = geom.strides[1], geom.strides[2]
    return sh, sw, ceil_div(geom.h, sh), ceil_div(geom.w, sw)


def phase_column_offsets(geom) -> np.ndarray:
    """Flat offset of every column (c, kd, kh, kw) in the phase-plane layout [C, sh, sw, D, H', W']."""
    sh, sw, hp, wp = phase_shape(geom)
    dl = geom.dilations
    ci, kdi, khi, kwi = np.meshgrid(np.arange(geom.c), np.arange(geom.kd), np.arange(geom.kh), np.arange(geom.kw),
                                    indexing="ij")
    kh, kw = khi * dl[1], kwi * dl[2]
    plane = geom.d * hp * wp
    channel = (ci * sh + kh % sh) * sw + kw % sw
    return (channel * plane + kdi * dl[0] * hp * wp + (kh // sh) * wp + kw // sw).reshape(-1)


def frame_column_offsets(geom, dl: int, d_in: int) -> np.ndarray:
    """Flat offset of every column (c, kd, kh, kw) in the input not padded in depth, relative
    to output frame k's first input frame k*sd - dl (so the kernel's segment base stays k*SEG)."""
    plane = geom.h * geom.w
    dl_d, dl_h, dl_w = geom.dilations
    ci, kdi, khi, kwi = np.meshgrid(np.arange(geom.c), np.arange(geom.kd), np.arange(geom.kh), np.arange(geom.kw),
                                    indexing="ij")
    return (ci * d_in * plane + (kdi * dl_d - dl) * plane + khi * dl_h * geom.w + kwi * dl_w).reshape(-1)


def frame_ranges_fit(geom, d_in: int) -> bool:
    """True if the kernel may read a conv padded in depth only without any padded copy: its
    last vectors stay inside every input frame (no row padding, whole vectors of positions),
    so no extra channel is needed past the input."""
    last = ceil_div(geom.oh * geom.w, _MAX_LANES) * _MAX_LANES - 1
    last += (geom.kh - 1) * geom.dilations[1] * geom.w + (geom.kw - 1) * geom.dilations[2]
    return d_in >= 1 and last < geom.h * geom.w


def _frame_ranges(geom, dl: int, d_in: int) -> np.ndarray:
    """[OD, 2]: for each output frame, the kernel frames [lo, hi) whose input frame exists."""
    out = np.zeros((geom.od, 2), np.int32)
    for k in range(geom.od):
        ok = [kd for kd in range(geom.kd) if 0 <= k * geom.strides[0] + kd * geom.dilations[0] - dl < d_in]
        if ok:  # contiguous: the frames of a window are increasing
            out[k] = (ok[0], ok[-1] + 1)
    return out


def pool_rows(geom, group_m: int, pool: tuple[int, int, int]) -> int:
    """Pooled rows per workgroup when a pool is fused: as many as the kernel's stack buffer
    holds (gM filters x rows x OW floats), at most all; 0 if not even one fits."""
    _, ph, _ = pool
    return min(geom.oh // ph, POOL_SCRATCH // (group_m * ph * geom.ow))


def plan_call(export: str, geom, plan, relu: bool, tied: bool, phased: bool = False,
              pool: tuple[int, int, int] | None = None, frames: tuple[int, int] | None = None,
              residual: bool = False) -> UkernelCall:
    """Sizes, constants and workgroup grid of the microkernel dispatch for one conv.

    ``phased``: the input is read in the phase-plane layout (strided rows, see above).
    ``pool``: the window (= stride) of a max pool fused into the dispatch (the caller checks
    ``pool_rows`` > 0 and that the conv's accumulator is not tied).
    ``frames``: (depth padding before, input depth) of a conv padded in depth only, read
    unpadded with frame ranges (the plan's columns sorted by frame, ``frame_ranges_fit``).
    ``residual``: the bias is added and the output holds a residual the result is added to.
    """
    n, c, d, h, w = geom.n, geom.c, geom.d, geom.h, geom.w
    if frames is not None:
        d = frames[1]
    cg = 1  # channels of the layout per input channel
    if phased:
        sh, sw, h, w = phase_shape(geom)
        cg = sh * sw
        c *= cg
    vol, seg = d * h * w, h * w
    qvalid = geom.oh * w
    last_segment = (geom.od - 1) * geom.strides[0] * seg
    # The last vector of a tile may run a whole vector past the last position (the pooled
    # path's tiles end at any row).
    last = last_segment + ceil_div(qvalid, _MAX_LANES) * _MAX_LANES + _MAX_LANES - 1 + int(plan.offsets.max())
    channel_pad = max(0, ceil_div(last + 1 - c * vol, vol))
    if frames is not None:
        channel_pad = 0  # only columns inside the input are read (frame_ranges_fit)
    channel_pad = ceil_div(channel_pad, cg) * cg  # whole input channels
    img = (c + channel_pad) * vol
    groups, segments = plan.groups, n * geom.od
    max_tiles = max(1, ceil_div(qvalid, _MIN_TILE))
    segment_input = c * geom.kd * seg * 4  # bytes of input one output frame reads
    span = (geom.kh - 1) * geom.dilations[1] * w + geom.kw  # positions a tile reaches past its end
    # Rows of input one position reads over all groups (their columns' union): with every
    # group in one workgroup, the tile's input must hold them all, not one group's columns.
    union = np.unique(np.concatenate([plan.offsets[g, :k] for g, k in enumerate(plan.kept_per_group)])).size
    qt = max(_MIN_TILE, (_TILE_INPUT // (max(1, union) * 4) - span) // _MIN_TILE * _MIN_TILE)
    dense = int(plan.kept_per_group.min()) == geom.c * geom.kernel_volume
    pointwise = geom.kh == 1 and geom.kw == 1  # rows of different columns do not overlap
    if ((dense or pointwise) and groups > 1 and groups * plan.columns * plan.group_m * 4 <= _SMALL_WEIGHTS
            and segment_input > 2 * _TILE_INPUT and min(max_tiles, ceil_div(qvalid, qt)) * segments >= 32):
        # Small weights, an input frame larger than the cache (early layers, temporal 3x1x1
        # convs): every group runs over a tile whose input fits in cache, so the input is read
        # from memory once, not once per group. (Measured on S3D: dense 86 -> 64 ms. R(2+1)D's
        # first temporal convs, KGS 3.2x: 3.5 -> 3.0 ms. KGS convs with kh x kw windows ran
        # slower, 6.2 -> 6.7 ms: their columns' rows overlap, so the union overstates the input
        # and the tiles come out too small; they keep one group per workgroup.)
        gpw = groups
        tiles = ceil_div(qvalid, qt)
    else:
        gpw = 1
        # Enough workgroups to keep two threads busy to the end, each at least one register tile.
        tiles = min(max_tiles, max(1, ceil_div(64, groups * segments)))
    qt = ceil_div(ceil_div(qvalid, tiles), _MAX_LANES) * _MAX_LANES
    tiles = ceil_div(qvalid, qt)
    out_shape = (n, geom.f, geom.od, geom.oh, geom.ow)
    pd, ph, pw = pool or (1, 1, 1)
    if pool is not None:
        out_shape = (n, geom.f, geom.od // pd, geom.oh // ph, geom.ow // pw)
        poh, segments = out_shape[3], n * out_shape[2]
        tiles = ceil_div(poh, pool_rows(geom, plan.group_m, pool))  # tiles of pooled rows the buffer holds
        if gpw == 1:  # enough workgroups for two threads to the end
            tiles = max(tiles, min(poh, ceil_div(32, groups * segments)))
        qt = ceil_div(poh, tiles)  # balanced: no short last tile
        tiles = ceil_div(poh, qt)
    flags = (ACCUMULATE if tied or residual else 0) | (RELU if relu else 0)
    # An input that streams from memory is prefetched into L2 only (R(2+1)D's first temporal
    # convs: 10-14% faster; with every conv streaming, C3D's and S3D's in-cache layers ran 6-30% slower).
    if n * img * 4 >= _STREAM_INPUT:
        flags |= STREAM
    # Launch order: output frames fastest, so the workgroups that run one after another read
    # neighbouring frames (temporal convs: the same input frames; R(2+1)D dense 197 -> 193 ms,
    # KGS ~1%). The fused pool keeps tiles fastest (its frames are pooled into one output).
    grid = (0, 1, 2) if pool is not None else (2, 1, 0)
    kdn = geom.kd if frames is not None else 0
    values = (plan.columns, plan.group_m, geom.f, geom.od, geom.oh, geom.ow, w, qt, img, geom.strides[0] * seg, flags,
              gpw, pd, ph, pw, kdn)
    constants = dict(zip(_CONSTANTS, values, strict=True))  # in the ABI's order, as the pool and pad calls
    ranges = _frame_ranges(geom, *frames) if frames is not None else None
    off_len = groups * plan.columns + groups + (groups * (kdn + 1) + 2 * geom.od if frames is not None else 0)
    return UkernelCall(
        export=export, flat_len=n * img, w_len=groups * plan.columns * plan.group_m,
        off_len=off_len, f=geom.f, out_shape=out_shape,
        channel_pad=channel_pad, workload=(tiles, ceil_div(groups, gpw), segments), constants=constants, tied=tied,
        grid=grid,
        phase=phase_shape(geom) if phased else None, frames=frames, frame_ranges=ranges,
        residual=residual,
    )


def offset_table(plan, call: UkernelCall | None = None) -> np.ndarray:
    """Gather offsets [G][n] followed by the number of columns each group keeps [G]: the
    kernel runs each group's own reduction length (groups are padded to the largest). With
    frame ranges, then each group's first column per kernel frame [G][KD+1] and each output
    frame's kernel frames [OD][2]."""
    parts = [plan.offsets.reshape(-1), plan.kept_per_group]
    if call is not None and call.frames is not None:
        parts += [plan.kd_start.reshape(-1), call.frame_ranges.reshape(-1)]
    return np.concatenate(parts).astype(np.int32)


def packed_weights(plan) -> np.ndarray:
    """Compacted weights as the kernel reads them: [G][n][gM] (one broadcast per filter)."""
    return np.ascontiguousarray(plan.weights.transpose(0, 2, 1))


def input_pad(
    geom, call: UkernelCall, source_pad: tuple[list[int], list[int], list[int]] | None = None,
) -> tuple[list[int], list[int], list[int]]:
    """(shape of the helper's x, low, high): the one zero pad that gives the kernel its input.

    ``x`` is the conv's padded NCDHW input, or, with ``source_pad = (shape, low, high)``, the
    tensor torch-mlir padded: the two pads then become one (one copy of the input, not two).
    Its channels are padded further with zeros so that the kernel's whole-vector loads past
    the last output stay in bounds, and its rows and columns up to whole strides for the phases.
    """
    n, c, d, h, w = geom.n, geom.c, geom.d, geom.h, geom.w
    sh, sw, hq, wq = call.phase or (1, 1, h, w)
    cp = call.channel_pad // (sh * sw)  # in input channels
    if source_pad is None:
        x_shape, low, high = [n, c, d, h, w], [0] * 5, [0] * 5
    else:
        x_shape, low, high = (list(v) for v in source_pad)
    high = [high[0], high[1] + cp, high[2], high[3] + hq * sh - h, high[4] + wq * sw - w]
    return x_shape, low, high
