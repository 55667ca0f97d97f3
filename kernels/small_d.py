"""Assign-and-update for small d (1 to ``D_MAX`` features, e.g. pixels): each thread owns whole points.

Shapes (b problems of n points in d features, k centers each)::

    X        (b, n, d)        uint8, float16, bfloat16, float32 or float64, any strides; read in its own dtype
    centers  (b, k_pad, d)    compute dtype (float32, float64 for float64 data), contiguous; rows k.. are NaN
    weights  (b, n)           compute dtype, or None
    labels   (b, n)           any integer dtype that holds k - 1 (uint8, int16, int32, int64), optional
    min_sq   (b, n)           compute dtype: squared distance to the nearest center, optional
    partial  (b, P, k, d + 1) zeros: per-program sums ([..., :d]) and total weights ([..., d]), or None

Assignment: a program takes ``blocks_per_prog`` blocks of BLOCK_N points, each thread holding its points'
features in registers; it walks every center in order (centers are loaded as scalars, the same address in
every thread: a broadcast from L1), with ``UNROLL`` centers per loop trip, and keeps a running minimum of the
direct difference ``sum_j (x_j - c_j)^2``. A strict ``<`` keeps the lowest index on ties; the NaN rows that
pad k to a multiple of ``UNROLL`` never win. Direct differences (not ``||x||^2 - 2 x.c + ||c||^2``) keep
labels right for data far from the origin or with outliers (one value of 1e5 in float32 data).

Update, into the program's own slot of ``partial`` (b, programs, k, d + 1), which torch then sums over the
programs in a fixed order (float64); no other program touches a slot, and BLOCK_N does not depend on k:

- ``UPDATE`` 1 (k <= ``REDUCE_MAX_K``): per block and cluster, the block's sums of ``w x_j`` and ``w`` are
  reductions in registers (compute dtype, fixed order) added into a float64 slot: bit-identical run to run.
- ``UPDATE`` 2 (larger k): one atomic add per point and feature into a slot in the compute dtype (float32:
  the launcher keeps a program within 4096 points, or 65536 for unweighted 8-bit data, whose sums are then
  integers below 2^24 and so exact in any order: bit-identical run to run as well).
"""

from __future__ import annotations

import triton
import triton.language as tl

#: largest d of this path (d features are d registers per point; larger d uses tl.dot for the distances)
D_MAX = 8
#: largest k whose sums are reduced in registers (UPDATE 1); above it, atomic adds into the program's slot
REDUCE_MAX_K = 16


@triton.jit
def _col(x_rows, rmask, stride_xd, j: tl.constexpr, cdt: tl.constexpr):
    """Feature j of a block of points in the compute dtype: (BLOCK_N,). stride_xd is int64 (no overflow)."""
    return tl.load(x_rows + j * stride_xd, mask=rmask, other=0).to(cdt)


@triton.jit
def _red(s_rows, j: tl.constexpr, v, rmask):
    """s_rows[j] += v per point: an atomic add into the program's own slot (no other program touches it)."""
    tl.atomic_add(s_rows + j, v.to(s_rows.dtype.element_ty), mask=rmask, sem="relaxed")


@triton.jit
def _small_d_kernel(
    x_ptr,
    c_ptr,
    w_ptr,
    labels_ptr,
    min_sq_ptr,
    part_ptr,
    n,
    k,
    k_pad,
    blocks_per_prog,
    stride_xb,
    stride_xn,
    stride_xd,
    stride_wb,
    stride_wn,
    D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UNROLL: tl.constexpr,
    HAS_W: tl.constexpr,
    WRITE_LABELS: tl.constexpr,
    WRITE_DIST: tl.constexpr,
    UPDATE: tl.constexpr,
):
    """One program: ``blocks_per_prog`` consecutive blocks of BLOCK_N points of problem ``program_id(1)``."""
    pid = tl.program_id(0)
    bid = tl.program_id(1).to(tl.int64)
    cdt: tl.constexpr = c_ptr.dtype.element_ty
    x_base = x_ptr + bid * stride_xb
    stride_xd = tl.cast(stride_xd, tl.int64)  # j * stride_xd may pass 2^31 (a transposed view of a huge X)
    c_base = c_ptr + bid * k_pad * D
    slot = part_ptr + (bid * tl.num_programs(0) + pid) * k * (D + 1)
    arange_n = tl.arange(0, BLOCK_N)
    for i in range(blocks_per_prog):
        rows = (pid * blocks_per_prog + i).to(tl.int64) * BLOCK_N + arange_n
        rmask = rows < n
        x_rows = x_base + rows * stride_xn
        # --- assignment: the point's features stay in registers while every center goes by ---
        x0 = _col(x_rows, rmask, stride_xd, 0, cdt)
        if D > 1:
            x1 = _col(x_rows, rmask, stride_xd, 1, cdt)
        if D > 2:
            x2 = _col(x_rows, rmask, stride_xd, 2, cdt)
        if D > 3:
            x3 = _col(x_rows, rmask, stride_xd, 3, cdt)
        if D > 4:
            x4 = _col(x_rows, rmask, stride_xd, 4, cdt)
        if D > 5:
            x5 = _col(x_rows, rmask, stride_xd, 5, cdt)
        if D > 6:
            x6 = _col(x_rows, rmask, stride_xd, 6, cdt)
        if D > 7:
            x7 = _col(x_rows, rmask, stride_xd, 7, cdt)
        best = tl.full((BLOCK_N,), float("inf"), cdt)
        best_idx = tl.zeros((BLOCK_N,), tl.int32)
        for c0 in range(0, k_pad, UNROLL):
            for u in tl.static_range(UNROLL):
                c_row = c_base + (c0 + u) * D
                t = x0 - tl.load(c_row)
                dist = t * t
                if D > 1:
                    t = x1 - tl.load(c_row + 1)
                    dist = t * t + dist
                if D > 2:
                    t = x2 - tl.load(c_row + 2)
                    dist = t * t + dist
                if D > 3:
                    t = x3 - tl.load(c_row + 3)
                    dist = t * t + dist
                if D > 4:
                    t = x4 - tl.load(c_row + 4)
                    dist = t * t + dist
                if D > 5:
                    t = x5 - tl.load(c_row + 5)
                    dist = t * t + dist
                if D > 6:
                    t = x6 - tl.load(c_row + 6)
                    dist = t * t + dist
                if D > 7:
                    t = x7 - tl.load(c_row + 7)
                    dist = t * t + dist
                better = dist < best  # strict: an equal later center never replaces an earlier one
                best = tl.where(better, dist, best)
                best_idx = tl.where(better, c0 + u, best_idx)
        if WRITE_LABELS:
            tl.store(labels_ptr + bid * n + rows, best_idx.to(labels_ptr.dtype.element_ty), mask=rmask)
        if WRITE_DIST:
            tl.store(min_sq_ptr + bid * n + rows, best, mask=rmask)
        # --- update: per-cluster sums of w x and w into the program's slot (UPDATE 0: none, labels only) ---
        if HAS_W:
            w = tl.load(w_ptr + bid * stride_wb + rows * stride_wn, mask=rmask, other=0.0)
        else:
            w = tl.where(rmask, 1.0, 0.0).to(cdt)
        if UPDATE == 1:  # few clusters: block sums in registers (a tree per cluster and feature), fixed order
            for c in range(0, k):
                hit = best_idx == c
                s_row = slot + c * (D + 1)
                wc = tl.where(hit, w, 0.0)
                # scalar atomic adds: every add into this slot comes from this program, in program order
                # (coherence keeps that order for one location), so the float64 totals repeat run after run
                tl.atomic_add(s_row + D, tl.sum(wc).to(tl.float64), sem="relaxed")
                tl.atomic_add(s_row, tl.sum(x0 * wc).to(tl.float64), sem="relaxed")
                if D > 1:
                    tl.atomic_add(s_row + 1, tl.sum(x1 * wc).to(tl.float64), sem="relaxed")
                if D > 2:
                    tl.atomic_add(s_row + 2, tl.sum(x2 * wc).to(tl.float64), sem="relaxed")
                if D > 3:
                    tl.atomic_add(s_row + 3, tl.sum(x3 * wc).to(tl.float64), sem="relaxed")
                if D > 4:
                    tl.atomic_add(s_row + 4, tl.sum(x4 * wc).to(tl.float64), sem="relaxed")
                if D > 5:
                    tl.atomic_add(s_row + 5, tl.sum(x5 * wc).to(tl.float64), sem="relaxed")
                if D > 6:
                    tl.atomic_add(s_row + 6, tl.sum(x6 * wc).to(tl.float64), sem="relaxed")
                if D > 7:
                    tl.atomic_add(s_row + 7, tl.sum(x7 * wc).to(tl.float64), sem="relaxed")
        elif UPDATE == 2:  # many clusters: one atomic add per point and feature into the program's float32 slot
            s_rows = slot + best_idx * (D + 1)
            _red(s_rows, D, w, rmask)
            _red(s_rows, 0, x0 * w, rmask)
            if D > 1:
                _red(s_rows, 1, x1 * w, rmask)
            if D > 2:
                _red(s_rows, 2, x2 * w, rmask)
            if D > 3:
                _red(s_rows, 3, x3 * w, rmask)
            if D > 4:
                _red(s_rows, 4, x4 * w, rmask)
            if D > 5:
                _red(s_rows, 5, x5 * w, rmask)
            if D > 6:
                _red(s_rows, 6, x6 * w, rmask)
            if D > 7:
                _red(s_rows, 7, x7 * w, rmask)


def launch(
    X,
    centers_padded,
    w,
    labels,
    min_sq,
    partial,
    k: int,
    *,
    block_n: int,
    unroll: int,
    blocks_per_prog: int,
    update: int,
    num_warps: int,
):
    """Launch on a (programs, b) grid; ``partial`` (b, programs, k, d + 1) must be zeros: float64 for
    ``update`` 1, the compute dtype for ``update`` 2."""
    b, n, d = X.shape
    programs = triton.cdiv(triton.cdiv(n, block_n), blocks_per_prog) if partial is None else partial.shape[1]
    _small_d_kernel[(programs, b)](
        X,
        centers_padded,
        X if w is None else w,
        X if labels is None else labels,
        X if min_sq is None else min_sq,
        X if partial is None else partial,
        n,
        k,
        centers_padded.shape[1],
        blocks_per_prog,
        X.stride(0),
        X.stride(1),
        X.stride(2),
        0 if w is None else w.stride(0),
        0 if w is None else w.stride(1),
        D=d,
        BLOCK_N=block_n,
        UNROLL=unroll,
        HAS_W=w is not None,
        WRITE_LABELS=labels is not None,
        WRITE_DIST=min_sq is not None,
        UPDATE=update,
        num_warps=num_warps,
        enable_fp_fusion=True,  # (x - c)^2 + acc as one fused multiply-add
    )
