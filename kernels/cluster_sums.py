"""Deterministic per-cluster sums and counts from labels: the second pass of the deterministic mode.

Shapes::

    X        (b, n, d)   uint8, float16, bfloat16, float32 or float64, any strides
    labels   (b, n)      int32 or int64 in [0, k), contiguous
    weights  (b, n)      float32 or float64, or None
    sums     (b, k, d)   float64
    counts   (b, k)      float64

Program (tile, g, problem) owns rows [g * rows_per_prog, (g + 1) * rows_per_prog) and one
(BLOCK_K, BLOCK_D) tile of clusters and features. It walks its rows in order, block by block, turns each
block into a one-hot (BLOCK_N, BLOCK_K) matrix of weights and adds ``one_hot^T @ x`` (float32 per block,
IEEE) into a float64 accumulator, then stores that into its own slot of a (b, groups, k, d) partial
buffer. Torch sums the partials over groups in float64. No atomics anywhere, so the same input gives the
same bits run after run. Used by ``assign_update`` in deterministic mode when the register one-hot
reduction of the fused kernel does not apply (d > 8 or k > 256): it reads X once more per cluster tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

#: float64 elements that a (b, programs, k, d) partial buffer of the deterministic mode may hold
PARTIAL_BUDGET = 1 << 25


def empty_output(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocate an output that the kernels fully overwrite (one place, so tests can poison it)."""
    return torch.empty(shape, dtype=dtype, device=device)


@triton.jit
def _cluster_sums_kernel(
    x_ptr,
    labels_ptr,
    w_ptr,
    psums_ptr,
    pcounts_ptr,
    n,
    k,
    d,
    rows_per_prog,
    stride_xb,
    stride_xn,
    stride_xd,
    stride_wb,
    stride_wn,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_W: tl.constexpr,
    F64: tl.constexpr,
):
    """psums_ptr (b, groups, k, d) and pcounts_ptr (b, groups, k) float64, every element written once."""
    tile = tl.program_id(0)  # axis 0: up to 2^31 - 1 tiles (k = 65536 and d = 1024 give 131072)
    g = tl.program_id(1)
    bid = tl.program_id(2).to(tl.int64)
    groups = tl.num_programs(1)
    n_dt = tl.cdiv(d, BLOCK_D)
    kk = (tile // n_dt) * BLOCK_K + tl.arange(0, BLOCK_K)
    dd = (tile % n_dt) * BLOCK_D + tl.arange(0, BLOCK_D)
    kmask = kk < k
    dmask = dd < d
    wdt = tl.float64 if F64 else tl.float32  # the compute dtype: weights' dtype, float64 for float64 data
    acc = tl.zeros((BLOCK_K, BLOCK_D), tl.float64)
    acc_counts = tl.zeros((BLOCK_K,), tl.float64)
    start = g.to(tl.int64) * rows_per_prog
    stop = tl.minimum(start + rows_per_prog, n)
    for r0 in range(start, stop, BLOCK_N):
        rows = r0 + tl.arange(0, BLOCK_N)
        rmask = rows < stop
        lab = tl.load(labels_ptr + bid * n + rows, mask=rmask, other=-1)
        hit = (lab[:, None] == kk[None, :]) & rmask[:, None]
        if tl.max(hit.to(tl.int32)) > 0:  # skip blocks with no point in this cluster tile
            if HAS_W:
                w = tl.load(w_ptr + bid * stride_wb + rows * stride_wn, mask=rmask, other=0.0)
            else:
                w = tl.where(rmask, 1.0, 0.0).to(wdt)
            onehot = tl.where(hit, w[:, None], 0.0)
            xt = tl.load(
                x_ptr + bid * stride_xb + rows[:, None] * stride_xn + dd[None, :].to(tl.int64) * stride_xd,
                mask=rmask[:, None] & dmask[None, :],
                other=0,
            ).to(wdt)
            acc += tl.dot(tl.trans(onehot), xt, input_precision="ieee", out_dtype=wdt).to(tl.float64)
            acc_counts += tl.sum(onehot, axis=0).to(tl.float64)
    slot = bid * groups + g
    tl.store(psums_ptr + slot * k * d + kk[:, None] * d + dd[None, :], acc, mask=kmask[:, None] & dmask[None, :])
    if tile % n_dt == 0:
        tl.store(pcounts_ptr + slot * k + kk, acc_counts, mask=kmask)


def cluster_sums(
    X: torch.Tensor,
    labels: torch.Tensor,
    sample_weight: torch.Tensor | None,
    k: int,
    *,
    max_programs: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster float64 ``(sums (b, k, d), counts (b, k))``, reduced in a fixed order.

    ``max_programs`` bounds the row groups per problem; the partial buffer is also kept under
    ``PARTIAL_BUDGET`` elements. The grouping depends only on the shapes, never on the device.
    """
    b, n, d = X.shape
    if labels.shape != (b, n) or labels.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"labels must be ({b}, {n}) int32 or int64, got {tuple(labels.shape)} {labels.dtype}")
    labels = labels.contiguous()
    block_n, block_k, block_d = 64, 32, 16  # with 4 warps: no register spills on sm_90 (cuobjdump)
    wdt = torch.float32 if sample_weight is None else sample_weight.dtype
    if X.dtype == torch.float64:
        wdt = torch.float64
    w = None if sample_weight is None else sample_weight.to(wdt)
    groups = max(1, min(max_programs, triton.cdiv(n, block_n), PARTIAL_BUDGET // max(1, b * k * d)))
    rows_per_prog = triton.cdiv(triton.cdiv(n, groups), block_n) * block_n
    groups = triton.cdiv(n, rows_per_prog)
    psums = empty_output((b, groups, k, d), torch.float64, X.device)
    pcounts = empty_output((b, groups, k), torch.float64, X.device)
    tiles = triton.cdiv(k, block_k) * triton.cdiv(d, block_d)
    _cluster_sums_kernel[(tiles, groups, b)](
        X,
        labels,
        X if w is None else w,
        psums,
        pcounts,
        n,
        k,
        d,
        rows_per_prog,
        X.stride(0),
        X.stride(1),
        X.stride(2),
        0 if w is None else w.stride(0),
        0 if w is None else w.stride(1),
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        BLOCK_D=block_d,
        HAS_W=w is not None,
        F64=wdt == torch.float64,
    )
    return psums.sum(1), pcounts.sum(1)
