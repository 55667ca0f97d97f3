"""Per-cluster sums and counts from labels, over the points sorted by label: the fast update for large d.

Shapes::

    X        (b, n, d)   uint8, float16, bfloat16, float32 or float64, any strides
    keys     (b n,)      int32, sorted: ``bid * k + label`` of each point, in sorted order
    order    (b n,)      int64: the flat index ``bid * n + row`` of each sorted point
    weights  (b, n)      float32 or float64, or None
    sums     (b, k, d)   float64, zeros; counts (b, k) float64, zeros: added into

Program (piece, feature tile) takes PIECE consecutive sorted points and one tile of BLOCK_D features. Its
points form a few runs of equal keys (a run per cluster present); for each run it sums the rows in float32
(float64 for float64 data) and adds the run's total into the float64 sums with one atomic add per feature.
With clusters of more than PIECE points that is one or two runs per piece: about (d + 1) * n / PIECE atomics
per pass instead of one per point and feature. The order of the float64 additions varies from run to run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: sorted points per program
PIECE = 128


@triton.jit
def _sorted_sums_kernel(
    x_ptr,
    keys_ptr,
    order_ptr,
    w_ptr,
    sums_ptr,
    counts_ptr,
    total,
    n,
    d,
    stride_xb,
    stride_xn,
    stride_xd,
    stride_wb,
    stride_wn,
    PIECE: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_W: tl.constexpr,
    F64: tl.constexpr,
):
    piece = tl.program_id(0)
    dtile = tl.program_id(1)
    pos = piece.to(tl.int64) * PIECE + tl.arange(0, PIECE)
    pmask = pos < total
    key = tl.load(keys_ptr + pos, mask=pmask, other=2147483647)
    flat = tl.load(order_ptr + pos, mask=pmask, other=0)
    bid = flat // n
    row = flat - bid * n
    dd = dtile * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = dd < d
    acc_dt: tl.constexpr = tl.float64 if F64 else tl.float32
    if HAS_W:
        w = tl.load(w_ptr + bid * stride_wb + row * stride_wn, mask=pmask, other=0.0).to(acc_dt)
    else:
        w = tl.where(pmask, 1.0, 0.0).to(acc_dt)
    x_rows = x_ptr + bid * stride_xb + row * stride_xn
    xt = tl.load(x_rows[:, None] + dd[None, :].to(tl.int64) * stride_xd, mask=pmask[:, None] & dmask[None, :], other=0)
    xt = xt.to(acc_dt) * w[:, None]
    run = tl.min(key)
    last = tl.max(tl.where(pmask, key, -1))
    while run <= last:
        hit = key == run
        tl.atomic_add(
            sums_ptr + run.to(tl.int64) * d + dd,
            tl.sum(tl.where(hit[:, None], xt, 0.0), axis=0).to(tl.float64),
            mask=dmask,
            sem="relaxed",
        )
        if dtile == 0:
            tl.atomic_add(counts_ptr + run, tl.sum(tl.where(hit, w, 0.0)).to(tl.float64), sem="relaxed")
        run = tl.min(tl.where(key > run, key, 2147483647))


def sorted_sums(
    X: torch.Tensor, labels: torch.Tensor, sample_weight: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 ``(sums (b, k, d), counts (b, k))`` of the points of each cluster; labels (b, n) int32."""
    b, n, d = X.shape
    if labels.shape != (b, n) or labels.dtype != torch.int32:
        raise ValueError(f"labels must be ({b}, {n}) int32, got {tuple(labels.shape)} {labels.dtype}")
    if b * k >= 2**31 - 1:
        raise ValueError(f"b * k must be below 2^31 - 1, got {b} * {k}")
    keys = labels
    if b > 1:
        keys = labels + (torch.arange(b, device=X.device, dtype=torch.int32) * k).unsqueeze(1)
    keys, order = torch.sort(keys.reshape(-1))
    sums = torch.zeros(b, k, d, dtype=torch.float64, device=X.device)
    counts = torch.zeros(b, k, dtype=torch.float64, device=X.device)
    w = sample_weight
    block_d = min(32 if X.dtype == torch.float64 else 64, max(16, triton.next_power_of_2(d)))
    grid = (triton.cdiv(b * n, PIECE), triton.cdiv(d, block_d))
    _sorted_sums_kernel[grid](
        X,
        keys,
        order,
        X if w is None else w,
        sums,
        counts,
        b * n,
        n,
        d,
        X.stride(0),
        X.stride(1),
        X.stride(2),
        0 if w is None else w.stride(0),
        0 if w is None else w.stride(1),
        PIECE=PIECE,
        BLOCK_D=block_d,
        HAS_W=w is not None,
        F64=X.dtype == torch.float64,
        num_warps=4,
    )
    return sums, counts
