"""KGS planning: each filter group's kept columns, compacted weights and gather offsets.

Why a module of its own: planning is numpy only (no MLIR), shared by the code generation and
the microkernel paths, and is what tests check against dense reference numbers.
"""

from __future__ import annotations

import numpy as np

from .options import ConvGeometry, KgsPlan


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
