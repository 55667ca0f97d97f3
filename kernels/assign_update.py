"""Fused assign-and-update: one pass over the points gives labels, distances and per-cluster sums and counts.

Shapes (b problems of n points in d features, k centers each)::

    X        (b, n, d)   uint8, float16, bfloat16, float32 or float64, any strides; read in its own dtype
    centers  (b, k, d)   float32 (float64 for float64 data): the compute dtype
    weights  (b, n)      compute dtype, or None
    labels   (b, n)      int64: index of the nearest center, ties to the lowest index
    min_sq   (b, n)      compute dtype: squared distance to that center
    sums     (b, k, d)   compute dtype: per-cluster sum of weight * point, accumulated in float64
    counts   (b, k)      compute dtype: per-cluster total weight, accumulated in float64

No n x k distance matrix is ever written: each program keeps a (BLOCK_N, BLOCK_K) tile of distances in
registers, walks the centers tile by tile with a running argmin, and reduces its points into the sums.

A distance tile is ``||c - s||^2 - 2 (x - s).(c - s)`` (the argmin does not need ``||x - s||^2``, which is
added only to the distance that is returned), where ``s`` is the mean of the problem's centers: distances
are translation invariant, and the shift keeps data far from the origin accurate. The product is computed

- for small d (1 to ``SMALL_D_MAX``, e.g. pixels): with one multiply-add per feature and center, no
  padding of d (``tl.dot`` would pad d = 3 to 16);
- for larger d: with ``tl.dot`` tiles of (BLOCK_N, BLOCK_D) x (BLOCK_D, BLOCK_K), looping over d.

Three ways to reduce the points into sums and counts (``REDUCE``):

- 1, one-hot in registers (small d, k <= ``ONEHOT_MAX_K``): each program walks ``blocks_per_prog`` blocks
  of points; a block's per-cluster sums and counts are one ``tl.dot`` of its weighted one-hot matrix
  (BLOCK_K, BLOCK_N) with its points (BLOCK_N, 16: the d features, a column of ones, zeros), in float32,
  added into a float64 accumulator; at the end one float64 atomic add per cluster and feature
  (fast mode), or a plain store into its own slot of a (b, programs, k, d) partial buffer that torch then
  sums in a fixed order (deterministic mode);
- 2, scatter (fast mode otherwise): one float64 atomic add per point and feature;
- 0, none: only labels are written here; the deterministic mode for large k or d then runs
  ``cluster_sums`` (a second pass, one-hot ``tl.dot`` per cluster tile into per-program partials).

Float32 block partials and float64 totals keep sums accurate under heavy contention (k = 2, 10^9 points).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .cluster_sums import PARTIAL_BUDGET, cluster_sums, empty_output

#: largest d whose distances are multiply-adds per feature (larger d uses tl.dot)
SMALL_D_MAX = 8
#: largest batch b of one launch: the batch is grid axis 1, limited to 65535 programs by CUDA
MAX_BATCH = 65535
#: largest k that uses the register one-hot reduction (small d only)
ONEHOT_MAX_K = 256
#: elements of one (BLOCK_N, BLOCK_K) distance tile (small d). With 8 warps this and the block sizes of the
#: large-d path compile for sm_90 without register spills (cuobjdump --dump-resource-usage; see GPU_NOTES.md)
_TILE = 4096
#: programs per problem that the register one-hot reduction aims for (more blocks per program above it)
_MAX_PROGRAMS = 4096


@triton.jit
def _shifted_column(x_rows, rmask, stride_xd, s_ptr, j):
    """Feature j of a block of points minus s[j], in the dtype of s (the compute dtype): (BLOCK_N,)."""
    s = tl.load(s_ptr + j)
    return tl.load(x_rows + j * stride_xd, mask=rmask, other=0).to(s.dtype) - s


@triton.jit
def _shifted_tile(x_rows, rmask, stride_xd, s_ptr, dd, dmask):
    """Features dd of a block of points minus s[dd] in the dtype of s, zero outside d: (BLOCK_N, BLOCK_D)."""
    s = tl.load(s_ptr + dd, mask=dmask, other=0.0)
    xt = tl.load(x_rows[:, None] + dd[None, :] * stride_xd, mask=rmask[:, None] & dmask[None, :], other=0)
    return tl.where(dmask[None, :], xt.to(s.dtype) - s[None, :], 0.0)


@triton.jit
def _assign_update_kernel(
    x_ptr,
    c_ptr,
    csq_ptr,
    shift_ptr,
    w_ptr,
    labels_ptr,
    min_sq_ptr,
    sums_ptr,
    counts_ptr,
    n,
    k,
    d,
    blocks_per_prog,
    stride_xb,
    stride_xn,
    stride_xd,
    stride_wb,
    stride_wn,
    SMALL_D: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_W: tl.constexpr,
    WRITE_LABELS: tl.constexpr,
    REDUCE: tl.constexpr,
    DETERMINISTIC: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    SUM_PRECISION: tl.constexpr,
):
    """One program: ``blocks_per_prog`` consecutive blocks of BLOCK_N points of problem ``program_id(1)``.

    x_ptr (b, n, d) any strides; c_ptr (b, k, d) contiguous, compute dtype: -2 (c - s); csq_ptr (b, k):
    ||c - s||^2; shift_ptr (b, d): s, the mean of the centers; w_ptr (b, n);
    labels_ptr / min_sq_ptr (b, n) contiguous; sums_ptr (b, k, d) and counts_ptr (b, k) float64, or with
    DETERMINISTIC the partials (b, programs, k, d) and (b, programs, k).
    DOT_DTYPE / DOT_PRECISION: operand dtype and input precision of the distance ``tl.dot`` (d > SMALL_D_MAX);
    SUM_PRECISION: input precision of the one-hot ``tl.dot`` (REDUCE == 1).
    SMALL_D > 0 selects the multiply-add path with d == SMALL_D; D_PAD (16 > SMALL_D) is the width of the
    one-hot product of REDUCE == 1.
    """
    pid = tl.program_id(0)
    bid = tl.program_id(1).to(tl.int64)
    x_base = x_ptr + bid * stride_xb
    c_base = c_ptr + bid * k * d
    cdt = c_ptr.dtype.element_ty
    arange_n = tl.arange(0, BLOCK_N)
    arange_k = tl.arange(0, BLOCK_K)
    if REDUCE == 1:
        cols = tl.arange(0, D_PAD)
        acc = tl.zeros((BLOCK_K, D_PAD), tl.float64)  # [:, :d] sums, [:, d] counts
    for i in range(blocks_per_prog):
        rows = (pid * blocks_per_prog + i).to(tl.int64) * BLOCK_N + arange_n
        rmask = rows < n
        x_rows = x_base + rows * stride_xn
        if HAS_W:
            w = tl.load(w_ptr + bid * stride_wb + rows * stride_wn, mask=rmask, other=0.0)
        else:
            w = tl.where(rmask, 1.0, 0.0).to(cdt)
        # --- assignment: running argmin over tiles of centers of ||c'||^2 - 2 x'.c' (x' = x - s, c' = c - s) ---
        best = tl.full((BLOCK_N,), float("inf"), cdt)
        best_idx = tl.zeros((BLOCK_N,), tl.int32)
        for k0 in range(0, k, BLOCK_K):
            kk = k0 + arange_k
            kmask = kk < k
            csq = tl.load(csq_ptr + bid * k + kk, mask=kmask, other=0.0)
            dist = tl.zeros((BLOCK_N, BLOCK_K), cdt) + csq[None, :]
            if SMALL_D > 0:  # one multiply-add per feature, no padding of d
                for j in tl.static_range(SMALL_D):
                    xj = _shifted_column(x_rows, rmask, stride_xd, shift_ptr + bid * d, j)
                    cj = tl.load(c_base + kk * d + j, mask=kmask, other=0.0)
                    dist += xj[:, None] * cj[None, :]
            else:
                for d0 in range(0, d, BLOCK_D):
                    dd = d0 + tl.arange(0, BLOCK_D)
                    dmask = dd < d
                    xt = _shifted_tile(x_rows, rmask, stride_xd, shift_ptr + bid * d, dd, dmask)
                    ct = tl.load(
                        c_base + kk[None, :] * d + dd[:, None], mask=kmask[None, :] & dmask[:, None], other=0.0
                    )
                    dist = tl.dot(xt.to(DOT_DTYPE), ct.to(DOT_DTYPE), dist, input_precision=DOT_PRECISION)
            dist = tl.where(kmask[None, :], dist, float("inf"))
            tile_min, tile_idx = tl.min(dist, axis=1, return_indices=True, return_indices_tie_break_left=True)
            better = tile_min < best
            best = tl.where(better, tile_min, best)
            best_idx = tl.where(better, tile_idx + k0, best_idx)
        if WRITE_LABELS:
            xsq = tl.zeros((BLOCK_N,), cdt)
            if SMALL_D > 0:
                for j in tl.static_range(SMALL_D):
                    xj = _shifted_column(x_rows, rmask, stride_xd, shift_ptr + bid * d, j)
                    xsq += xj * xj
            else:
                for d0 in range(0, d, BLOCK_D):
                    dd = d0 + tl.arange(0, BLOCK_D)
                    dmask = dd < d
                    xt = _shifted_tile(x_rows, rmask, stride_xd, shift_ptr + bid * d, dd, dmask)
                    xsq += tl.sum(xt * xt, axis=1)
            tl.store(labels_ptr + bid * n + rows, best_idx.to(tl.int64), mask=rmask)
            tl.store(min_sq_ptr + bid * n + rows, tl.maximum(best + xsq, 0.0), mask=rmask)
        # --- update: per-cluster sums and counts ---
        if REDUCE == 1:
            # BLOCK_K >= k here, so one tile holds every cluster. The block's per-cluster sums are one
            # (BLOCK_K, BLOCK_N) x (BLOCK_N, D_PAD) product: weighted one-hot times the points, with a column
            # of ones at index d that yields the counts. It runs on the tensor cores, in float32.
            onehot_t = tl.where(arange_k[:, None] == best_idx[None, :], w[None, :], 0.0)
            xt = tl.load(
                x_rows[:, None] + cols[None, :] * stride_xd, mask=rmask[:, None] & (cols < d)[None, :], other=0
            )
            xt = tl.where(cols[None, :] == d, 1.0, xt.to(cdt))
            acc += tl.dot(onehot_t, xt, input_precision=SUM_PRECISION).to(tl.float64)
        elif REDUCE == 2:
            tl.atomic_add(counts_ptr + bid * k + best_idx, w.to(tl.float64), mask=rmask, sem="relaxed")
            sums_rows = sums_ptr + bid * k * d + best_idx * d
            if SMALL_D > 0:
                for j in tl.static_range(SMALL_D):
                    xj = tl.load(x_rows + j * stride_xd, mask=rmask, other=0).to(cdt)
                    tl.atomic_add(sums_rows + j, (xj * w).to(tl.float64), mask=rmask, sem="relaxed")
            else:
                for d0 in range(0, d, BLOCK_D):
                    dd = d0 + tl.arange(0, BLOCK_D)
                    m2 = rmask[:, None] & (dd < d)[None, :]
                    xt = tl.load(x_rows[:, None] + dd[None, :] * stride_xd, mask=m2, other=0).to(cdt)
                    val = (xt * w[:, None]).to(tl.float64)
                    tl.atomic_add(sums_rows[:, None] + dd[None, :], val, mask=m2, sem="relaxed")
    if REDUCE == 1:
        kmask = arange_k < k
        m2 = kmask[:, None] & (cols < SMALL_D)[None, :]
        acc_counts = tl.sum(tl.where(cols[None, :] == SMALL_D, acc, 0.0), axis=1)
        if DETERMINISTIC:
            slot = bid * tl.num_programs(0) + pid
            tl.store(sums_ptr + slot * k * d + arange_k[:, None] * d + cols[None, :], acc, mask=m2)
            tl.store(counts_ptr + slot * k + arange_k, acc_counts, mask=kmask)
        else:
            tl.atomic_add(sums_ptr + bid * k * d + arange_k[:, None] * d + cols[None, :], acc, mask=m2)
            tl.atomic_add(counts_ptr + bid * k + arange_k, acc_counts, mask=kmask)


def is_interpreted() -> bool:
    """True when triton runs kernels with its CPU interpreter (TRITON_INTERPRET=1 when triton was imported)."""
    return type(_assign_update_kernel).__name__ == "InterpretedFunction"


#: ``precision`` of the large-d distance product -> (operand dtype or None for the compute dtype, tl.dot precision)
PRECISIONS = {
    "ieee": (None, "ieee"),  # exact float32 (or float64) multiply-adds, no tensor cores
    "tf32x3": (None, "tf32x3"),  # three TF32 tensor-core passes: about float32 accuracy
    "tf32": (None, "tf32"),  # one TF32 pass: 10-bit mantissas, the speed of other Triton k-means kernels
    # x - s and the centers rounded to float16, float32 accumulation: for 16-bit data whose shifted values stay
    # within float16's range (|v| < 65504). Also for bfloat16 data: float16 keeps more mantissa bits, at the same
    # speed (a bfloat16 operand mode is left out: the Triton 3.9 interpreter computes bfloat16 tl.dot wrongly,
    # so it could not be tested on the CPU).
    "fp16": (torch.float16, "ieee"),
}
_TL_DTYPES = {
    torch.bfloat16: tl.bfloat16,
    torch.float16: tl.float16,
    torch.float32: tl.float32,
    torch.float64: tl.float64,
}


def default_precision(dtype: torch.dtype, device: torch.device) -> str:
    """Precision of ``tl.dot``: IEEE where it is exact or emulated (float64, the interpreter), else 3-pass TF32."""
    if dtype == torch.float64 or device.type != "cuda" or is_interpreted():
        return "ieee"
    return "tf32x3"


def _blocks(k: int, d: int, exact_sums: bool, block_n: int | None, block_k: int | None) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, BLOCK_D) for a problem; block_n/block_k override them for tests and tuning.

    ``exact_sums``: the one-hot product runs in one TF32 pass (not three), which leaves registers for a
    larger block of points when k is small.
    """
    if d <= SMALL_D_MAX:
        bk = block_k or (max(16, triton.next_power_of_2(k)) if k <= ONEHOT_MAX_K else 128)
        tile = _TILE if exact_sums or bk > 16 else _TILE // 2
        return block_n or max(16, min(1024, tile // bk)), bk, 16
    bk = block_k or (64 if k > 32 else max(16, triton.next_power_of_2(k)))
    return block_n or 128, bk, 16


def assign_update(
    X: torch.Tensor,
    centers: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    *,
    compute_labels: bool = True,
    deterministic: bool = False,
    precision: str | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    max_programs: int = _MAX_PROGRAMS,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Launch the fused pass; returns ``(labels, min_sq, sums, counts)`` with the shapes of the module docstring.

    ``deterministic`` reduces per-program partials in a fixed order (bit-identical run after run) instead of
    float64 atomics. ``precision`` is that of the large-d distance product, a key of :data:`PRECISIONS`
    (default from :func:`default_precision`: float32 accuracy); the faster "tf32" and "fp16" trade
    labels at near-ties for speed. ``block_n``, ``block_k`` and ``max_programs`` override
    the launch configuration (tests use them to cover several blocks and programs with small inputs).
    """
    if X.ndim != 3 or centers.ndim != 3:
        raise ValueError(
            f"X and centers must be 3-D (b, n, d) and (b, k, d), got {tuple(X.shape)} and {tuple(centers.shape)}"
        )
    b, n, d = X.shape
    k = centers.shape[1]
    if centers.shape[0] != b or centers.shape[2] != d:
        raise ValueError(
            f"centers must have shape ({b}, k, {d}) to match X {tuple(X.shape)}, got {tuple(centers.shape)}"
        )
    if b > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} problems per launch (CUDA grid limit), got a batch of {b}")
    if n == 0 or k == 0 or d == 0:
        raise ValueError(f"X and centers must be non-empty, got X {tuple(X.shape)} and centers {tuple(centers.shape)}")
    cdt = centers.dtype
    if cdt not in (torch.float32, torch.float64):
        raise TypeError(f"centers must be float32 or float64, got {cdt}")
    if sample_weight is not None and (tuple(sample_weight.shape) != (b, n) or sample_weight.dtype != cdt):
        raise ValueError(
            f"sample_weight must be ({b}, {n}) {cdt}, got {tuple(sample_weight.shape)} {sample_weight.dtype}"
        )
    dev = X.device
    if centers.device != dev or (sample_weight is not None and sample_weight.device != dev):
        raise ValueError("X, centers and sample_weight must be on the same device")
    precision = precision or default_precision(cdt, dev)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if cdt == torch.float64 and precision != "ieee":
        raise ValueError(f"float64 data needs precision='ieee', got {precision!r}")
    dot_dtype, dot_precision = PRECISIONS[precision]
    if is_interpreted() and dot_precision != "ieee":
        dot_precision = "ieee"  # the interpreter computes tl.dot in float32 whatever the precision asked

    small = d <= SMALL_D_MAX
    # The one-hot product of the sums is exact in one TF32 pass when the weights are 0/1 and the data has at
    # most 11 significant bits (uint8, float16, bfloat16); otherwise 3-pass TF32 keeps float32 accuracy.
    exact_sums = sample_weight is None and X.dtype in (torch.uint8, torch.float16, torch.bfloat16)
    sum_precision = default_precision(cdt, dev)
    if exact_sums and sum_precision == "tf32x3":
        sum_precision = "tf32"
    bn, bk, bd = _blocks(k, d, exact_sums, block_n, block_k)
    # Distances are translation invariant: work around the centers' mean s so that data far from the origin
    # keeps its digits in ||x - s||^2 - 2 (x - s).(c - s) + ||c - s||^2 (as the torch reference does).
    shift = centers.mean(1).contiguous()  # (b, d)
    c = centers - shift.unsqueeze(1)
    csq = (c * c).sum(-1).contiguous()  # (b, k)
    c = (-2.0 * c).contiguous()  # scaling by -2 is exact
    if small and k <= ONEHOT_MAX_K and bk >= max(k, 16) and bn >= 16:  # tl.dot needs tiles of 16 or more
        reduce = 1
    else:
        reduce = 0 if deterministic else 2
    n_blocks = triton.cdiv(n, bn)
    if reduce == 1 and deterministic:  # one (k, d + 1) float64 partial per program: keep them within budget
        max_programs = max(1, min(max_programs, PARTIAL_BUDGET // (b * k * (d + 1))))
    blocks_per_prog = triton.cdiv(n_blocks, max_programs) if reduce == 1 else 1
    programs = triton.cdiv(n_blocks, blocks_per_prog)

    write_labels = compute_labels or reduce == 0
    labels = empty_output((b, n), torch.int64, dev) if write_labels else None
    min_sq = empty_output((b, n), cdt, dev) if write_labels else None
    if reduce == 1 and deterministic:
        sums = empty_output((b, programs, k, d), torch.float64, dev)
        counts = empty_output((b, programs, k), torch.float64, dev)
    else:
        sums = torch.zeros(b, k, d, dtype=torch.float64, device=dev)
        counts = torch.zeros(b, k, dtype=torch.float64, device=dev)
    w = sample_weight
    _assign_update_kernel[(programs, b)](
        X,
        c,
        csq,
        shift,
        X if w is None else w,
        X if labels is None else labels,
        X if min_sq is None else min_sq,
        sums,
        counts,
        n,
        k,
        d,
        blocks_per_prog,
        X.stride(0),
        X.stride(1),
        X.stride(2),
        0 if w is None else w.stride(0),
        0 if w is None else w.stride(1),
        SMALL_D=d if small else 0,
        D_PAD=16 if small else 1,  # one-hot product width: the d features, a column of ones, padding
        BLOCK_N=bn,
        BLOCK_K=bk,
        BLOCK_D=bd,
        HAS_W=w is not None,
        WRITE_LABELS=write_labels,
        REDUCE=reduce,
        DETERMINISTIC=deterministic,
        DOT_DTYPE=_TL_DTYPES[dot_dtype or cdt],
        DOT_PRECISION=dot_precision,
        SUM_PRECISION=sum_precision,
        num_warps=8,
        enable_fp_fusion=True,  # the small-d distances are meant as fused multiply-adds
    )
    if reduce == 1 and deterministic:
        sums, counts = sums.sum(1), counts.sum(1)  # fixed-order float64 reduction of the program partials
    elif reduce == 0:
        sums, counts = cluster_sums(X, labels, w, k, max_programs=max_programs)
    if not compute_labels:
        labels = min_sq = None
    return labels, min_sq, sums.to(cdt), counts.to(cdt)
