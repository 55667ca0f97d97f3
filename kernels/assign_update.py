"""Fused assign-and-update: one pass over the points gives labels, distances and per-cluster sums and counts.

Shapes (b problems of n points in d features, k centers each)::

    X        (b, n, d)   uint8, float16, bfloat16, float32 or float64, any strides; read in its own dtype
    centers  (b, k, d)   float32 (float64 for float64 data): the compute dtype
    weights  (b, n)      compute dtype, or None
    labels   (b, n)      index of the nearest center (ties to the lowest index), in ``label_dtype``
    min_sq   (b, n)      compute dtype: squared distance to that center
    sums     (b, k, d)   compute dtype: per-cluster sum of weight * point, accumulated in float64
    counts   (b, k)      compute dtype: per-cluster total weight, accumulated in float64

Two paths; no n x k distance matrix is ever written:

- d <= ``small_d.D_MAX`` (pixels, x,y,R,G,B): ``kernels/small_d.py``. Each thread owns whole points and
  walks every center with direct differences; the sums come from per-program float64 slots (one-hot products
  on the tensor cores per tile of clusters), summed by torch in a fixed order: the same bits in both modes.
- larger d: :func:`_large_d_kernel` here. A program keeps its (BLOCK_N, d) tile of points resident (d up to
  a limit per precision, ``LARGE_CONFIGS``; above it the features are walked in tiles), walks the centers in
  tiles of BLOCK_K with
  ``tl.dot`` and a running argmin, and writes int32 labels. The sums then come from
  ``kernels/sorted_sums.py`` (fast mode: points sorted by label, one float64 atomic add per run of a cluster
  and feature) or ``kernels/cluster_sums.py`` (deterministic mode: per-program partials, fixed order).

Large d ranks the centers by ``||c - s||^2 - 2 (x - s).(c - s)`` (the argmin does not need ``||x - s||^2``),
where ``s`` is the mean of the problem's centers: distances are translation invariant, and the shift keeps data
far from the origin accurate. ``-2 (c - s)`` is passed in the operand dtype of the product (float16 for
``precision="fp16"``), so the kernel converts only its points. The distance that is returned is not the
product's: it is recomputed for the chosen center from direct differences in the compute dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import small_d
from .cluster_sums import PARTIAL_BUDGET, cluster_sums, empty_output
from .sorted_sums import sorted_sums

#: largest batch b of one launch: the batch is grid axis 1, limited to 65535 programs by CUDA
MAX_BATCH = 65535
#: programs per problem that the small-d path aims for (more blocks per program above it); shapes alone fix it
MAX_PROGRAMS = 1024
#: sm_90 (H100/H200) limits that every launch configuration must respect (checked by tests/test_sass.py)
SM90_SHARED_BYTES = 232448  # 227 KB of shared memory per block (opt-in maximum)
SM90_REGISTERS = 65536  # 32-bit registers per SM; at most 255 per thread
LABEL_DTYPES = {torch.uint8: 256, torch.int16: 1 << 15, torch.int32: 1 << 31, torch.int64: 1 << 63}


@triton.jit
def _shifted_tile(x_rows, rmask, stride_xd, s_ptr, dd, dmask):
    """Features dd of a block of points minus s[dd] in the dtype of s, zero outside d: (BLOCK_N, BLOCK_D)."""
    s = tl.load(s_ptr + dd, mask=dmask, other=0.0)
    xt = tl.load(x_rows[:, None] + dd[None, :] * stride_xd, mask=rmask[:, None] & dmask[None, :], other=0)
    return tl.where(dmask[None, :], xt.to(s.dtype) - s[None, :], 0.0)


@triton.jit
def _large_d_kernel(
    x_ptr,
    c_ptr,
    cx_ptr,
    csq_ptr,
    shift_ptr,
    labels_ptr,
    min_sq_ptr,
    n,
    k,
    d,
    stride_xb,
    stride_xn,
    stride_xd,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    RESIDENT: tl.constexpr,
    WRITE_DIST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    DIST_D: tl.constexpr,
):
    """One program: BLOCK_N points of problem ``program_id(1)``.

    x_ptr (b, n, d) any strides; c_ptr (b, k, d) contiguous, operand dtype: -2 (c - s); cx_ptr (b, k, d)
    contiguous, compute dtype: c - s; csq_ptr (b, k): ||c - s||^2 in the compute dtype; shift_ptr (b, d): s, the
    mean of the centers, compute dtype; labels_ptr (b, n) int32 and min_sq_ptr (b, n) contiguous. RESIDENT:
    BLOCK_D >= d, the points' tile is loaded and converted once; otherwise the features are walked in tiles of
    BLOCK_D for every center tile. The distance written (WRITE_DIST) is not the product's: it is recomputed
    from direct differences in the compute dtype, ||(x - s) - (c - s)||^2 for the chosen center, so that it
    keeps the accuracy of the compute dtype whatever the product's precision (one TF32 pass rounds to 11 bits).
    """
    pid = tl.program_id(0)
    bid = tl.program_id(1).to(tl.int64)
    cdt: tl.constexpr = csq_ptr.dtype.element_ty
    odt: tl.constexpr = c_ptr.dtype.element_ty
    stride_xd = tl.cast(stride_xd, tl.int64)  # dd * stride_xd may pass 2^31 (a transposed view of a huge X)
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    x_rows = x_ptr + bid * stride_xb + rows * stride_xn
    s_ptr = shift_ptr + bid * d
    c_base = c_ptr + bid * k * d
    arange_d = tl.arange(0, BLOCK_D)
    if RESIDENT:
        dmask = arange_d < d
        xs = _shifted_tile(x_rows, rmask, stride_xd, s_ptr, arange_d, dmask)
        x_op = xs.to(odt)
    best = tl.full((BLOCK_N,), float("inf"), cdt)
    best_idx = tl.zeros((BLOCK_N,), tl.int32)
    for k0 in range(0, k, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        kmask = kk < k
        csq = tl.load(csq_ptr + bid * k + kk, mask=kmask, other=0.0)
        dist = tl.zeros((BLOCK_N, BLOCK_K), cdt) + csq[None, :]
        if RESIDENT:
            ct = tl.load(c_base + kk[None, :] * d + arange_d[:, None], mask=kmask[None, :] & dmask[:, None], other=0.0)
            dist = tl.dot(x_op, ct, dist, input_precision=DOT_PRECISION, out_dtype=cdt)
        else:
            for d0 in range(0, d, BLOCK_D):
                dd = d0 + arange_d
                ddm = dd < d
                xt = _shifted_tile(x_rows, rmask, stride_xd, s_ptr, dd, ddm).to(odt)
                ct = tl.load(c_base + kk[None, :] * d + dd[:, None], mask=kmask[None, :] & ddm[:, None], other=0.0)
                dist = tl.dot(xt, ct, dist, input_precision=DOT_PRECISION, out_dtype=cdt)
        dist = tl.where(kmask[None, :], dist, float("inf"))
        tile_min, tile_idx = tl.min(dist, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = tile_min < best
        best = tl.where(better, tile_min, best)
        best_idx = tl.where(better, tile_idx + k0, best_idx)
    tl.store(labels_ptr + bid * n + rows, best_idx, mask=rmask)
    if WRITE_DIST:
        # the chosen center's row, gathered in tiles of DIST_D features (the resident tile is dead by now: its
        # registers are free again; the points' rows come back from L2)
        arange_e = tl.arange(0, DIST_D)
        c_rows = cx_ptr + bid * k * d + best_idx.to(tl.int64) * d
        exact = tl.zeros((BLOCK_N,), cdt)
        for d0 in range(0, d, DIST_D):
            dd = d0 + arange_e
            ddm = dd < d
            xt = _shifted_tile(x_rows, rmask, stride_xd, s_ptr, dd, ddm)
            ct = tl.load(c_rows[:, None] + dd[None, :], mask=rmask[:, None] & ddm[None, :], other=0.0)
            diff = xt - ct
            exact += tl.sum(diff * diff, axis=1)
        tl.store(min_sq_ptr + bid * n + rows, exact, mask=rmask)


def is_interpreted() -> bool:
    """True when triton runs kernels with its CPU interpreter (TRITON_INTERPRET=1 when triton was imported)."""
    return type(_large_d_kernel).__name__ == "InterpretedFunction"


#: ``precision`` of the large-d distance product -> (operand dtype or None for the compute dtype, tl.dot precision)
PRECISIONS = {
    "ieee": (None, "ieee"),  # exact float32 (or float64) multiply-adds, no tensor cores
    "tf32x3": (None, "tf32x3"),  # three TF32 tensor-core passes: about float32 accuracy
    "tf32": (None, "tf32"),  # one TF32 pass (10-bit mantissas): the default for 8-to-32-bit data
    # x - s and the centers rounded to float16, float32 accumulation: for data whose shifted values stay within
    # float16's range (|v| < 65504). Also for bfloat16 data: float16 keeps more mantissa bits, at the same
    # speed (a bfloat16 operand mode is left out: the Triton 3.9 interpreter computes bfloat16 tl.dot wrongly,
    # so it could not be tested on the CPU).
    "fp16": (torch.float16, "ieee"),
}


def default_precision(dtype: torch.dtype) -> str:
    """Precision of the large-d ``tl.dot``: IEEE for float64, one TF32 pass otherwise.

    One TF32 pass rounds the shifted points and centers to 11 significant bits: it moves only points whose two
    nearest centers are within about 1e-3 relative, and the inertia stays within 1e-4 relative of float32's
    (tests/test_triton.py::test_tf32_inertia_within_1e-4 checks this on a TF32 emulation). Its floor is a third
    of that of "tf32x3".
    """
    return "ieee" if dtype == torch.float64 else "tf32"


def small_config(d: int, k: int, dtype: torch.dtype) -> dict:
    """Launch configuration of the small-d path: block sizes, unrolling, warps (every choice: ``all_configs``)."""
    f64 = dtype == torch.float64
    # 4 warps: 8 points per thread (4 for float64), whose loads of each center are shared by 32 pairs. With the
    # register reductions of k <= 16, 2 warps for d <= 4 (16 points per thread share each reduction tree: 14
    # instead of 35 SASS per point and cluster at d = 3), else 8 warps (ptxas spills a few bytes with 4 at d = 6);
    # float64 stays at 4 (triton 3.6 spills with 8)
    warps = 4
    if k <= small_d.REDUCE_MAX_K:
        warps = 4 if f64 else 2 if d <= 4 else 8
    return {"block_n": 512 if f64 else 1024, "unroll": 4 if k >= 4 else 1, "num_warps": warps}


#: Large-d launch configurations per precision ("f64": float64 data): the largest d whose tile of points stays
#: resident, and (BLOCK_N, BLOCK_K, num_warps) per BLOCK_D, "tiles" for d above it (features in tiles of
#: ``FEATURE_TILE``). Chosen by compiling every candidate for sm_90 with triton 3.9 and 3.6 (fewest SASS
#: instructions per pair among those without register spills); a resident float32 tile costs BLOCK_N * d / 32
#: / warps registers, so it stops at d = 128 for one TF32 pass and earlier for the costlier precisions.
LARGE_CONFIGS = {
    "tf32": {
        "resident": 128,
        16: (128, 64, 8),
        32: (128, 64, 8),
        64: (128, 64, 8),
        128: (128, 32, 8),
        "tiles": (128, 64, 8),
    },
    "tf32x3": {"resident": 64, 16: (128, 64, 8), 32: (128, 64, 8), 64: (128, 64, 8), "tiles": (128, 64, 8)},
    "ieee": {"resident": 32, 16: (128, 32, 8), 32: (128, 32, 8), "tiles": (64, 32, 8)},
    "fp16": {
        "resident": 128,  # a resident 256-wide float16 tile spills on triton 3.6 with every candidate
        16: (128, 64, 8),
        32: (128, 64, 8),
        64: (128, 64, 8),
        128: (128, 64, 8),
        "tiles": (128, 64, 8),
    },
    "f64": {"resident": 32, 16: (128, 64, 8), 32: (128, 32, 8), "tiles": (64, 32, 8)},
}
#: exceptions for uint8 data: (precision, BLOCK_D) -> (BLOCK_N, BLOCK_K, num_warps) (its conversion costs registers)
UINT8_CONFIGS = {("tf32", 128): (64, 32, 4)}
#: features per tile above the resident limit
FEATURE_TILE = 32
#: features per tile of the distance recomputed for the chosen center (``WRITE_DIST``)
DIST_TILE = 32


def large_config(d: int, k: int, dtype: torch.dtype, precision: str, x_dtype: torch.dtype | None = None) -> dict:
    """Launch configuration of the large-d path (every choice: ``all_configs``); ``dtype`` is the compute dtype,
    ``x_dtype`` that of the data."""
    table = LARGE_CONFIGS["f64" if dtype == torch.float64 else precision]
    resident = d <= table["resident"]
    block_d = max(16, triton.next_power_of_2(d)) if resident else FEATURE_TILE
    block_n, block_k, warps = table[block_d] if resident else table["tiles"]
    if x_dtype == torch.uint8 and (precision, block_d) in UINT8_CONFIGS and resident:
        block_n, block_k, warps = UINT8_CONFIGS[precision, block_d]
    return {
        "block_n": block_n,
        "block_k": block_k,
        "block_d": block_d,
        "resident": resident,
        "num_warps": warps,
        "num_stages": 2,
    }


def all_configs() -> list[dict]:
    """Every (path, dtype, constexpr, launch) combination the launcher can pick, for the sm_90 limits test.

    Flags that only remove work (no weights, no labels or distances written) are taken at their heaviest, and
    k only matters through the unrolling and the update of the small-d path: a BLOCK_K tile masks the rest.
    For uint8/float16/bfloat16 data only their default large-d precision is listed (the operands are the same
    as float32 data's; only the width of the loads differs); float32 data covers every precision.
    """
    out = []
    for dtype in (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64):
        wide = dtype in (torch.float32, torch.float64)
        for d in range(1, small_d.D_MAX + 1) if wide else (3, small_d.D_MAX):
            for k in (3, 16, 64):  # unroll 1 and 4; update 1 and 2
                out.append({"path": "small", "dtype": dtype, "d": d, "k": k, **small_config(d, k, dtype)})
        precisions = ["ieee"] if dtype == torch.float64 else list(PRECISIONS)
        if dtype in (torch.uint8, torch.float16, torch.bfloat16):
            precisions = [default_precision(dtype)]  # the load width only; float32 data covers the others
        for prec in precisions:
            table = LARGE_CONFIGS["f64" if dtype == torch.float64 else prec]
            for d in sorted({max(9, bd) for bd in table if isinstance(bd, int)} | {table["resident"] + 1}):
                out.append(
                    {
                        "path": "large",
                        "dtype": dtype,
                        "d": d,
                        "k": 64,
                        "precision": prec,
                        **large_config(d, 64, dtype, prec, dtype),
                    }
                )
    return out


def assign_update(
    X: torch.Tensor,
    centers: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    *,
    compute_labels: bool = True,
    compute_distances: bool | None = None,
    label_dtype: torch.dtype = torch.int64,
    deterministic: bool = False,
    precision: str | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    max_programs: int = MAX_PROGRAMS,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Launch the fused pass; returns ``(labels, min_sq, sums, counts)`` with the shapes of the module docstring.

    ``compute_distances`` (default: ``compute_labels``) asks for ``min_sq``; without it None is returned and
    nothing is written. ``label_dtype`` is the integer dtype of the labels (uint8, int16, int32 or int64; it
    must hold k - 1). ``deterministic`` gives bit-identical results run after run (the small-d path always
    does; for large d it takes a second pass, ``cluster_sums``, instead of sorted runs and float64 atomics).
    ``precision`` is that of the large-d distance product, a key of :data:`PRECISIONS` (default from
    :func:`default_precision`). ``block_n``, ``block_k`` and ``max_programs`` override the launch
    configuration (tests use them to cover several blocks and programs with small inputs).
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
    if label_dtype not in LABEL_DTYPES:
        raise ValueError(f"label_dtype must be uint8, int16, int32 or int64, got {label_dtype}")
    if k > LABEL_DTYPES[label_dtype]:
        raise ValueError(f"label_dtype {label_dtype} cannot hold labels up to {k - 1}")
    dev = X.device
    if centers.device != dev or (sample_weight is not None and sample_weight.device != dev):
        raise ValueError("X, centers and sample_weight must be on the same device")
    precision = precision or default_precision(cdt)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if cdt == torch.float64 and precision != "ieee":
        raise ValueError(f"float64 data needs precision='ieee', got {precision!r}")
    if compute_distances is None:
        compute_distances = compute_labels
    w = sample_weight
    min_sq = empty_output((b, n), cdt, dev) if compute_distances else None
    if d <= small_d.D_MAX:
        labels = empty_output((b, n), label_dtype, dev) if compute_labels else None
        cfg = small_config(d, k, cdt)
        bn = block_n or cfg["block_n"]
        unroll = cfg["unroll"]
        k_pad = triton.cdiv(k, unroll) * unroll
        c_pad = torch.full((b, k_pad, d), float("nan"), dtype=cdt, device=dev)  # NaN rows never win
        c_pad[:, :k] = centers
        update = 1 if k <= small_d.REDUCE_MAX_K else 2
        integer_sums = w is None and X.dtype == torch.uint8  # float32 sums of < 2^24 are exact in any order
        if update == 2 and deterministic and not integer_sums:
            # atomic float32 adds are not order-free here: labels, then the fixed-order second pass
            lab = empty_output((b, n), torch.int32, dev)
            small_d.launch(
                X,
                c_pad,
                w,
                lab,
                min_sq,
                None,
                k,
                block_n=bn,
                unroll=unroll,
                blocks_per_prog=1,
                update=0,
                num_warps=cfg["num_warps"],
            )
            sums, counts = cluster_sums(X, lab, w, k, max_programs=max_programs)
            labels = (lab if label_dtype == torch.int32 else lab.to(label_dtype)) if compute_labels else None
            return labels, min_sq, sums.to(cdt), counts.to(cdt)
        labels = empty_output((b, n), label_dtype, dev) if compute_labels else None
        n_blocks = triton.cdiv(n, bn)
        # points per program: float32 slots stay exact (uint8) or as accurate as a block partial (others)
        span = 65536 if integer_sums else 4096
        programs = max(1, min(n_blocks, max_programs, PARTIAL_BUDGET // (b * k * (d + 1))))
        if update == 2:
            programs = max(programs, min(triton.cdiv(n, span), PARTIAL_BUDGET // (b * k * (d + 1))))
        blocks_per_prog = triton.cdiv(n_blocks, programs)
        programs = triton.cdiv(n_blocks, blocks_per_prog)
        slot_dt = torch.float64 if update == 1 else cdt
        partial = torch.zeros(b, programs, k, d + 1, dtype=slot_dt, device=dev)
        small_d.launch(
            X,
            c_pad,
            w,
            labels,
            min_sq,
            partial,
            k,
            block_n=bn,
            unroll=unroll,
            blocks_per_prog=blocks_per_prog,
            update=update,
            num_warps=cfg["num_warps"],
        )
        total = partial.sum(1, dtype=torch.float64)  # fixed-order float64 reduction of the program slots
        return labels, min_sq, total[..., :d].to(cdt, copy=True), total[..., d].to(cdt, copy=True)  # no aliases

    dot_dtype, dot_precision = PRECISIONS[precision]
    if is_interpreted() and dot_precision != "ieee":
        dot_precision = "ieee"  # the interpreter computes tl.dot in float32 whatever the precision asked
    cfg = large_config(d, k, cdt, precision, X.dtype)
    bn = block_n or cfg["block_n"]
    # Distances are translation invariant: work around the centers' mean s so that data far from the origin
    # keeps its digits in ||x - s||^2 - 2 (x - s).(c - s) + ||c - s||^2 (as the torch reference does).
    shift = centers.mean(1).contiguous()  # (b, d)
    c = centers - shift.unsqueeze(1)
    csq = (c * c).sum(-1).contiguous()  # (b, k)
    c_op = (-2.0 * c).to(dot_dtype or cdt).contiguous()  # scaling by -2 is exact
    lab32 = empty_output((b, n), torch.int32, dev)
    _large_d_kernel[(triton.cdiv(n, bn), b)](
        X,
        c_op,
        c.contiguous() if min_sq is not None else c_op,  # read only for the distances written
        csq,
        shift,
        lab32,
        X if min_sq is None else min_sq,
        n,
        k,
        d,
        X.stride(0),
        X.stride(1),
        X.stride(2),
        BLOCK_N=bn,
        BLOCK_K=block_k or cfg["block_k"],
        BLOCK_D=cfg["block_d"],
        RESIDENT=cfg["resident"],
        WRITE_DIST=min_sq is not None,
        DOT_PRECISION=dot_precision,
        DIST_D=DIST_TILE,
        num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"],
    )
    if deterministic:
        sums, counts = cluster_sums(X, lab32, w, k, max_programs=max_programs)
    else:
        sums, counts = sorted_sums(X, lab32, w, k)
    labels = None
    if compute_labels:
        labels = lab32 if label_dtype == torch.int32 else lab32.to(label_dtype)
    return labels, min_sq, sums.to(cdt), counts.to(cdt)
