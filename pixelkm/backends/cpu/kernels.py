"""numba kernels of the CPU backend: one fused parallel loop per pass (distances, argmin, per-block sums).

Every kernel works on ONE problem: ``X`` (n, d) in its own dtype (uint8, float32 or float64), centers (k, d) in the
compute dtype (float32 or float64). Squared distances are direct differences ``sum_f (x_f - c_f)^2`` computed in the
compute dtype feature by feature in a fixed order (fused multiply-adds after the first square), never the expansion
``|x|^2 - 2 x.c + |c|^2`` (which loses all digits for data far from the centers); the GEMM path of large ``d`` uses
the expansion only to rule centers out and recomputes the remaining candidates directly, so that every path gives
the same labels.

Load: each kernel is one parallel region in which ``nthreads`` workers take blocks from a shared counter (an atomic
fetch-and-add) until none is left, so that a worker whose core is busy with another process takes fewer blocks
instead of holding the others at the end of a static split.

Determinism: the points are cut into blocks of :data:`BLOCK` rows (a constant, not a function of the thread count);
each block adds its points, in order, into its own float64 partial sums, and the partials are added into the
running sums block after block in order. The result is bit-identical whatever the number of threads and whatever
the caller's chunking (as long as chunks are whole blocks, which the backend ensures).

The small-``d`` pass takes the number of features as the length of a tuple argument (``dims = (0,) * d``: the
length of a tuple is part of its type, hence a compile-time constant, and a call from Python dispatches on it
without recompiling). Per tile of :data:`TILE` points (transposed: a row per feature), :func:`.simd.scan_group`
scans every center for groups of points held in vector registers (explicit vector IR; see :mod:`.simd` for why and
for the arithmetic every kernel here shares: ``u_0^2``, then fused multiply-adds ``fma(u_f, u_f, dd)``).
``mode`` is a plain int (0 = labels and sums, 1 = also the distance to the second-nearest center), tested once per
group outside the loop over the centers, so that both modes share one compiled variant: every variant costs about
two seconds of compile on first use (cached on disk after), and the variants multiply (input dtype x d).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import (
    CHUNKS,
    GROUP_MAX,
    PANEL_ROWS,
    dist_chunks,
    expansion_tile,
    fma,
    group_points,
    lanes_nearest_two,
    rows_sq_norms,
    scan_group,
    scan_pruned,
)

#: the SHA-256 of simd.py, whose intrinsics are compiled into these kernels: numba's disk cache keys on the text of
#: this file only, so a change there must change this line (tests/test_cpu_backend.py checks it), or a cached
#: kernel would keep the old code
SIMD_SHA256 = "db4b0332746aa28c0a12a48ae825d33691fa96240d72dace6f637196f6fd1bf0"
#: rows per block of partial sums (fixed: results do not depend on the thread count)
BLOCK = 4096
#: points per tile of the small-d kernel, scanned in register-held groups of up to GROUP_MAX points (its buffers
#: stay in L1 up to d = 16)
TILE = 256
assert TILE % GROUP_MAX == 0
#: blocks a worker scans in full after a block where pruning kept more than half of the centers (see small_pass)
PRUNE_BACKOFF = 32
#: bytes of padding after each block's partial sums and after its counts: two workers add into neighbouring blocks at
#: once, and partials sharing a cache line (or an adjacent-line prefetch pair) bounce between the cores on every
#: add (false sharing). Padded, a pass over the 12 MP photo's 960,825 weighted colors at K = 1 / 2 / 4 took
#: 2.88 / 2.63 / 2.79 ms against 8.42 / 6.59 / 4.31 unpadded (benchmarks/cpu_pass_k.py, 2 threads, 2-core AMD EPYC,
#: 2026-12-03; docs/cpu.md)
PARTIALS_GAP = 128


def block_partials(nb: int, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 scratch for the per-block partial sums ``(nb, k + pad, d)`` and counts ``(nb, k + pad')`` of ``nb``
    blocks, ``k`` centers, ``d`` features: the rows beyond ``k`` are padding (:data:`PARTIALS_GAP`), zeroed with
    their block and never reduced (the kernels take ``k`` and ``d`` from the sums they add into)."""
    ps = np.empty((nb, k + -(-PARTIALS_GAP // (8 * d)), d))
    pc = np.empty((nb, k + PARTIALS_GAP // 8))
    return ps, pc


#: no fast-math reassociation or implicit contraction (the fused multiply-adds are explicit, :func:`.simd.fma`): the
#: same operations in the same order in every kernel, so that the bounded pass finds exactly the distances (and
#: labels) of the full pass
_FM = {"nnan", "ninf", "nsz"}


@intrinsic
def fetch_add(typingctx, counter):
    """Atomically add 1 to ``counter[0]`` (an int64 array) and return its old value."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [context.get_constant(types.intp, 0)])
        return builder.atomic_rmw("add", ptr, context.get_constant(types.int64, 1), "seq_cst")

    return types.int64(counter), codegen


@njit(cache=True, inline="always")
def _add_point(ps, pc, X, i, lab, w, has_w, d):
    """Add point ``i`` of X (its ``d`` features; weighted by ``w[i]`` when ``has_w``) into block partials
    ``ps[lab]`` and ``pc[lab]``, in float64, feature by feature (exact for pixels: the order of the additions is the
    caller's). ``d`` a compile-time constant where the caller has one (the small-d pass, from its tile: 1.16x at
    K = 8)."""
    if has_w:
        wi = np.float64(w[i])
        for f in range(d):
            ps[lab, f] += np.float64(X[i, f]) * wi
        pc[lab] += wi
    else:
        for f in range(d):
            ps[lab, f] += np.float64(X[i, f])
        pc[lab] += 1.0


#: features up to which the small-d pass keeps the sums of a run of points with the same label in registers (the
#: points of a photo or of its sorted colors come in runs): a tuple of ``1 + RUN_D`` float64 values, the count first
RUN_D = 8  # (_run_load, _run_add and small_pass's first ``acc`` spell out its 1 + 8 values)


@njit(cache=True, inline="always")
def _run_load(ps, pc, lab, D):
    """Label ``lab``'s partials (``pc[lab]``, then ``ps[lab, :D]``; zeros beyond ``D``, a compile-time constant) as a
    tuple that LLVM keeps in registers."""
    z = 0.0
    return (
        pc[lab],
        ps[lab, 0],
        ps[lab, 1] if D > 1 else z,
        ps[lab, 2] if D > 2 else z,
        ps[lab, 3] if D > 3 else z,
        ps[lab, 4] if D > 4 else z,
        ps[lab, 5] if D > 5 else z,
        ps[lab, 6] if D > 6 else z,
        ps[lab, 7] if D > 7 else z,
    )


@njit(cache=True, inline="always")
def _run_store(ps, pc, lab, a, D):
    """Write the run's tuple ``a`` back into label ``lab``'s partials (the inverse of :func:`_run_load`; at the end
    of a run only, so the tuple's index may be a loop variable)."""
    pc[lab] = a[0]
    for f in range(D):
        ps[lab, f] = a[1 + f]


@njit(cache=True, inline="always")
def _run_add(a, xt, p, wi, D):
    """The run's tuple ``a`` plus point ``p`` of the transposed tile ``xt`` with weight ``wi`` (1.0 unweighted):
    :func:`_add_point`'s operations (``x * w`` rounded, then added; ``x * 1.0`` is ``x``), hence its bits."""
    z = 0.0
    return (
        a[0] + wi,
        a[1] + np.float64(xt[0, p]) * wi,
        a[2] + np.float64(xt[1, p]) * wi if D > 1 else z,
        a[3] + np.float64(xt[2, p]) * wi if D > 2 else z,
        a[4] + np.float64(xt[3, p]) * wi if D > 3 else z,
        a[5] + np.float64(xt[4, p]) * wi if D > 4 else z,
        a[6] + np.float64(xt[5, p]) * wi if D > 5 else z,
        a[7] + np.float64(xt[6, p]) * wi if D > 6 else z,
        a[8] + np.float64(xt[7, p]) * wi if D > 7 else z,
    )


@njit(cache=True, inline="always")
def _keep_two(best, sec, bidx, p, dd, j):
    """Center ``j`` at squared distance ``dd`` from point ``p`` into its nearest (``best``, ``bidx``) and
    second-nearest (``sec``) distances: strict <, so the lowest index wins ties, as in :func:`.simd.scan_group`."""
    bp = best[p]
    if dd < bp:
        sec[p] = bp
        best[p] = dd
        bidx[p] = j
    elif dd < sec[p]:
        sec[p] = dd


@njit(cache=True, parallel=True, fastmath=_FM)
def small_pass(X, C, w, labels, prev, moved, mind, second, part_s, part_c, sums, counts, dims, mode, prune, nthreads):
    """One pass of the small-d kernel over X (n, d); ``sums`` (k, d) and ``counts`` (k,) float64 are added to.

    ``prune`` (mode 0 only): each group scans only the centers its bounding box cannot rule out
    (:func:`.simd.scan_pruned`: the same results bit for bit, fewer distances where points come in runs of similar
    values, as a photo's pixels or its sorted colors do). A worker whose block kept more than half of the centers
    per group on average (points in no useful order: the bounds cost more than they save) scans its next
    :data:`PRUNE_BACKOFF` blocks in full, then tries again.

    The sums: up to :data:`RUN_D` features, a tile whose labels change at most at a quarter of its points keeps the
    sums of each run of one label in registers (:func:`_run_add`; the additions of :func:`_add_point` in the same
    order, hence the same bits, without a store and a reload per point); other tiles add point by point.

    ``w``, ``labels``, ``mind``, ``second``: arrays of length n, or of length 0 when not wanted (``second``
    is written only when ``mode`` is 1). ``part_s`` (>= ceil(n / BLOCK), k, d) and ``part_c`` (same, k)
    are float64 scratch.
    ``prev`` (int64, length n or 0): the labels of the previous pass; then ``moved[b]`` gets the number of labels of
    block b that differ from them (``moved`` has ceil(n / BLOCK) entries, or none when ``prev`` is empty).
    """
    D = len(dims)
    n = X.shape[0]
    has_w = w.shape[0] > 0
    has_lab = labels.shape[0] > 0
    has_dist = mind.shape[0] > 0
    has_prev = prev.shape[0] > 0
    nb = (n + BLOCK - 1) // BLOCK
    ct = C.dtype.type
    k = C.shape[0]
    prune = prune and mode == 0
    gl = group_points(C, dims)
    kp = (k + gl - 1) // gl * gl if prune else 0
    CT = np.full((D, kp), np.inf, C.dtype)  # the centers transposed, padded to whole vectors
    for j in range(k if prune else 0):
        for f in range(D):
            CT[f, j] = C[j, f]
    ctr = np.zeros(1, np.int64)  # the next block to take: threads take blocks as they finish
    for _t in prange(nthreads):
        backoff = 0  # blocks this worker still scans in full
        while True:
            b = fetch_add(ctr)
            if b >= nb:
                break
            pruning = prune and backoff == 0
            backoff = max(backoff - 1, 0)
            kept = 0  # candidates scanned in this block, and groups
            groups = 0
            s0 = b * BLOCK
            e0 = min(n, s0 + BLOCK)
            ps = part_s[b]
            pc = part_c[b]
            ps[:] = 0.0
            pc[:] = 0.0
            nm = 0
            cur = -1  # the label of the run of points whose sums are in ``acc`` (none yet)
            acc = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # (1 + RUN_D values)
            xt = np.zeros((D, TILE), C.dtype)
            best = np.empty(TILE, C.dtype)
            sec = np.empty(TILE, C.dtype)
            bidx = np.empty(TILE, np.int32)
            cand = np.empty(kp, np.int32)
            near = np.empty(kp, C.dtype)
            xtT = xt.T
            G = group_points(xt, dims)
            for t0 in range(s0, e0, TILE):
                m = min(TILE, e0 - t0)
                xs = X[t0 : t0 + m]  # (indices from range into slices: no negative-index wraparound to test)
                for p in range(m):
                    for f in range(D):
                        xt[f, p] = ct(xs[p, f])
                for p in range(m, TILE):
                    for f in range(D):
                        xt[f, p] = 0
                for g in range(0, m, G):  # (the tile's padding beyond m: zeros, not scanned)
                    if pruning:
                        kept += scan_pruned(xt, g, CT, C, cand, near, best, bidx, dims)
                        groups += 1
                    else:
                        scan_group(xt, g, C, best, sec, bidx, dims, mode)
                # runs of one label: their sums in registers; points in no useful order (a label change at more
                # than a quarter of them) take the per-point adds, which need no branch on the label
                use_run = False
                if D <= RUN_D:
                    ch = 0
                    for p in range(1, m):
                        ch += bidx[p] != bidx[p - 1]
                    use_run = 4 * ch <= m
                if not use_run and cur >= 0:
                    _run_store(ps, pc, cur, acc, D)
                    cur = -1
                ls = labels[t0 : t0 + m] if has_lab else labels
                vs = prev[t0 : t0 + m] if has_prev else prev
                ds = mind[t0 : t0 + m] if has_dist else mind
                ss = second[t0 : t0 + m] if mode == 1 else second
                ws = w[t0 : t0 + m] if has_w else w
                for p in range(m):
                    lab = bidx[p]
                    if has_lab:
                        ls[p] = lab
                    if has_prev:
                        nm += vs[p] != lab
                    if has_dist:
                        ds[p] = best[p]
                    if mode == 1:
                        ss[p] = sec[p]
                    # (from the tile, which holds the values of X exactly in the compute dtype)
                    if use_run:  # the same additions in the same order, in registers while the label repeats
                        if lab != cur:
                            if cur >= 0:
                                _run_store(ps, pc, cur, acc, D)
                            cur = lab
                            acc = _run_load(ps, pc, lab, D)
                        acc = _run_add(acc, xt, p, np.float64(ws[p]) if has_w else 1.0, D)
                    else:
                        _add_point(ps, pc, xtT, p, lab, ws, has_w, D)
            if cur >= 0:
                _run_store(ps, pc, cur, acc, D)
            if has_prev:
                moved[b] = nm
            if pruning and 2 * kept > k * groups:
                backoff = PRUNE_BACKOFF
    _reduce(part_s, part_c, nb, sums, counts)


@njit(cache=True)
def _reduce(part_s, part_c, nb, sums, counts):
    """Add the per-block partials into the running sums, block after block (a fixed order)."""
    k, d = sums.shape
    for b in range(nb):
        ps = part_s[b]
        pc = part_c[b]
        for j in range(k):
            for f in range(d):
                sums[j, f] += ps[j, f]
            counts[j] += pc[j]


@njit(cache=True, parallel=True, fastmath=_FM)
def gemm_pass(
    X, C, CP, csq, chunks, slack, w, labels, prev, moved, mind, second, part_s, part_c, sums, counts, MODE, nthreads
):
    """One pass of the large-d kernel over X (n, d) in the compute dtype; ``sums`` and ``counts`` are added to.

    Each worker takes blocks of :data:`BLOCK` rows; per group of :data:`.simd.PANEL_ROWS` rows,
    :func:`.simd.expansion_tile` computes the expansion ``v_j = |c_j|^2 - 2 x.c_j`` against the centers in panels
    (``CP``, ``csq``, ``chunks``: :func:`.backend.center_panels`) with each row's smallest two ``v`` kept in
    registers. ``v`` orders the centers up to its rounding error, at most ``err = slack * (|x|^2 + max |c|^2)``.
    When the smallest two are more than twice that apart the smallest is the nearest center (also in direct
    differences); otherwise every center within twice that of the smallest is a candidate, and the candidates'
    squared distances are computed directly (the small-d kernel's arithmetic), the lowest index winning ties. The
    points are added in order into the block's float64 partials (``part_s`` (>= ceil(n / BLOCK), k, d), ``part_c``),
    reduced block after block as the small-d kernel's. One parallel region per pass; bit-identical whatever the
    number of threads. ``prev`` (int64, length n or 0): the labels of the previous pass; then ``moved[b]`` gets the
    number of labels of block b that differ from them (as :func:`small_pass`).

    Per tile, :func:`.simd.expansion_tile` reads the rows where they lie in X (no transposed copy), each row's
    nearest two come out of the lanes without a branch (:func:`.simd.lanes_nearest_two`), ``|x|^2`` comes from
    :func:`.simd.rows_sq_norms` (the features a vector at a time), a close call's candidates are rechecked four at a
    time and the distances to the labels computed four rows at a time (:func:`_sq_dist4`: each pair's operations in
    feature order, the bits of :func:`_sq_dist`). Measured against the same pass with a transposed copy of every
    tile and ``|x|^2`` summed over its rows as lanes (in one process, interleaved, min of 15, n = 200,000 float32
    points around 16 blobs, 2 threads, the 2-core AMD EPYC, 2026-12-03 18:44 UTC): d = 16 / 32 / 64 at K = 16 3.65 /
    5.60 / 10.35 -> 2.53 / 3.73 / 6.60 ms, d = 100 K = 10 16.85 -> 9.64, d = 256 K = 32 (n = 100,000) 21.8 -> 14.8,
    d = 128 K = 1024 (n = 100,000) 106.7 -> 103.6; at the centers of a fit (10 iterations: 10% of the rows close calls
    at d = 256 K = 32) the candidates four at a time besides, 24.1-25.7 -> 16.1-16.2 ms (docs/cpu.md, "Large d:
    the rows in place").
    """
    n, d = X.shape
    k = C.shape[0]
    kp = csq.shape[0]
    W = CP.shape[2] // len(chunks)
    ct = C.dtype.type
    has_w = w.shape[0] > 0
    has_dist = mind.shape[0] > 0
    has_lab = labels.shape[0] > 0
    has_prev = prev.shape[0] > 0
    cmax = 0.0
    for j in range(k):
        cmax = max(cmax, np.float64(csq[j]))
    nb = (n + BLOCK - 1) // BLOCK
    ctr = np.zeros(1, np.int64)
    R = PANEL_ROWS
    for _t in prange(nthreads):
        G = np.empty((R, kp), C.dtype)
        m1 = np.empty(R * W, C.dtype)
        m2 = np.empty(R * W, C.dtype)
        i1 = np.empty(R * W, np.int32)
        ci = np.empty(k, np.int32)
        xsq = np.empty(R)  # the tile's |x|^2 in float64
        labs = np.empty(R, np.int64)  # the tile's labels
        while True:
            b = fetch_add(ctr)
            if b >= nb:
                break
            s0 = b * BLOCK
            e0 = min(n, s0 + BLOCK)
            ps = part_s[b]
            pc = part_c[b]
            ps[:] = 0.0
            pc[:] = 0.0
            nm = 0
            for t0 in range(s0, e0, R):
                t1 = min(e0, t0 + R)
                expansion_tile(X, t0, CP, csq, G, m1, i1, m2, chunks)
                rows_sq_norms(X, t0, t1, xsq)
                for i in range(t0, t1):
                    p = i - t0
                    err = slack * (xsq[p] + cmax)
                    b1, j1, b2 = lanes_nearest_two(m1, i1, m2, p)
                    lim = np.float64(b1) + 2.0 * err
                    lab = np.int64(j1)
                    if np.float64(b2) > lim:
                        if MODE == 1:
                            second[i] = max(np.float64(b2) + xsq[p] - err, 0.0)
                    else:
                        g = G[p]
                        nc = 0
                        sec_lo = np.inf
                        for j in range(k):
                            v = np.float64(g[j])
                            if v <= lim:
                                ci[nc] = j
                                nc += 1
                            elif v < sec_lo:
                                sec_lo = v
                        best = ct(np.inf)
                        sec = ct(np.inf)
                        for q in range(0, nc, 4):  # four candidates at a time (the last repeated to fill the four)
                            c1, c2, c3 = ci[min(q + 1, nc - 1)], ci[min(q + 2, nc - 1)], ci[min(q + 3, nc - 1)]
                            ds = _sq_dist4(X, i, i, i, i, C, ci[q], c1, c2, c3, ct)
                            for r in range(min(4, nc - q)):  # in center order: the lowest index wins ties
                                dq = ds[r]
                                if dq < best:
                                    sec = best
                                    best = dq
                                    lab = ci[q + r]
                                elif dq < sec:
                                    sec = dq
                        if MODE == 1:
                            # the second-nearest is a candidate (exact) or beyond every candidate's expansion bound
                            second[i] = min(np.float64(sec), max(sec_lo + xsq[p] - err, 0.0))
                    labs[p] = lab
                    if has_prev:
                        nm += prev[i] != lab
                    if has_lab:
                        labels[i] = lab
                    _add_point(ps, pc, X, i, lab, w, has_w, X.shape[1])
                if has_dist:
                    _rows_sq_dist(X, C, labs, t0, t0, t1, mind, ct)
            if has_prev:
                moved[b] = nm
    _reduce(part_s, part_c, nb, sums, counts)


@njit(cache=True, inline="always")
def _sq_dist4(X, r0, r1, r2, r3, C, l0, l1, l2, l3, ct):
    """:func:`_sq_dist` of rows ``r0 .. r3`` to centers ``l0 .. l3`` (four rows, or one row and four centers): the
    same operations per pair (the same bits), four independent chains in registers instead of one at a time (the
    latency of one fused multiply-add per feature and pair hidden): at d = 100, n = 200,000 the distances of a pass
    cost 1.6-2.5 ms against 8.0 ms row by row with the rows as lanes of a gather (in one process, min of 15,
    2026-12-03 17:13 UTC)."""
    u0 = ct(X[r0, 0]) - C[l0, 0]
    u1 = ct(X[r1, 0]) - C[l1, 0]
    u2 = ct(X[r2, 0]) - C[l2, 0]
    u3 = ct(X[r3, 0]) - C[l3, 0]
    d0 = u0 * u0
    d1 = u1 * u1
    d2 = u2 * u2
    d3 = u3 * u3
    for f in range(1, X.shape[1]):
        u0 = ct(X[r0, f]) - C[l0, f]
        u1 = ct(X[r1, f]) - C[l1, f]
        u2 = ct(X[r2, f]) - C[l2, f]
        u3 = ct(X[r3, f]) - C[l3, f]
        d0 = fma(u0, u0, d0)
        d1 = fma(u1, u1, d1)
        d2 = fma(u2, u2, d2)
        d3 = fma(u3, u3, d3)
    return d0, d1, d2, d3


@njit(cache=True, inline="always")
def _rows_sq_dist(X, C, lab, lo, i0, i1, out, ct):
    """``out[i]`` = the squared distance of row i to its center ``lab[i - lo]``, rows ``i0 .. i1 - 1``: four rows at
    a time (:func:`_sq_dist4`), the rest one by one."""
    i = i0
    while i + 4 <= i1:
        p = i - lo
        out[i], out[i + 1], out[i + 2], out[i + 3] = _sq_dist4(
            X, i, i + 1, i + 2, i + 3, C, lab[p], lab[p + 1], lab[p + 2], lab[p + 3], ct
        )
        i += 4
    for r in range(i, i1):
        out[r] = _sq_dist(X, r, C, lab[r - lo], ct)


@njit(cache=True, inline="always")
def _sq_dist(X, i, C, j, ct):
    """``sum_f (x_if - c_jf)^2`` in the compute dtype ``ct``, feature after feature: the small-d kernel's arithmetic
    (the same operations in the same order, so the same bits) with ``d`` a run-time value."""
    v = ct(X[i, 0]) - C[j, 0]
    dd = v * v
    for f in range(1, X.shape[1]):
        v = ct(X[i, f]) - C[j, f]
        dd = fma(v, v, dd)
    return dd


@njit(cache=True, parallel=True, fastmath=_FM)
def bounded_step(X, C, drift, other_drift, half_sep, slack, labels, upper, lower, moved, nthreads):
    """Hamerly's step over X (n, d): labels, upper and lower bounds (float64 distances) updated in place; the
    number of points that moved per block goes to ``moved``. The labels are exactly those of a full pass.

    Per block, the bounds are tested point by point; the points still undecided after their own center's distance
    are gathered into tiles of :data:`TILE` (transposed, as the full pass's tiles) and scanned against every center
    with the points as SIMD lanes, feature after feature (``d`` a run-time value: one compiled variant per dtype),
    in the full pass's operations and order (the same distances, bit for bit)."""
    n = X.shape[0]
    d = X.shape[1]
    k = C.shape[0]
    ct = C.dtype.type
    nb = (n + BLOCK - 1) // BLOCK
    grow = 1.0 + slack
    shrink = 1.0 - slack
    ctr = np.zeros(1, np.int64)  # the next block to take: threads take blocks as they finish
    for _t in prange(nthreads):
        pend = np.empty(BLOCK, np.int64)
        xt = np.empty((d, TILE), C.dtype)
        dd = np.empty(TILE, C.dtype)
        best = np.empty(TILE, C.dtype)
        sec = np.empty(TILE, C.dtype)
        bidx = np.empty(TILE, np.int64)
        while True:
            b = fetch_add(ctr)
            if b >= nb:
                break
            s0 = b * BLOCK
            e0 = min(n, s0 + BLOCK)
            npend = 0
            for i in range(s0, e0):
                lab = labels[i]
                u = upper[i] + drift[lab]
                lo = max(lower[i] - other_drift[lab], 2.0 * half_sep[lab] - u, 0.0)
                if u * grow < lo * shrink:
                    upper[i] = u
                    lower[i] = lo
                    continue
                # the distance to the own center, exactly as a full pass computes it
                u = np.sqrt(np.float64(_sq_dist(X, i, C, lab, ct))) * grow
                lo = max(lo, 2.0 * half_sep[lab] - u)
                if u * grow < lo * shrink:
                    upper[i] = u
                    lower[i] = lo
                    continue
                pend[npend] = i
                npend += 1
            nm = 0
            for t0 in range(0, npend, TILE):
                m = min(TILE, npend - t0)
                ids = pend[t0 : t0 + m]
                for f in range(d):
                    xf = xt[f]
                    for p in range(m):
                        xf[p] = ct(X[ids[p], f])
                bs, ss, bi, ds = best[:m], sec[:m], bidx[:m], dd[:m]
                bs[:] = np.inf
                ss[:] = np.inf
                bi[:] = 0
                # every center, as the full pass does: strict <, lowest index on ties
                for j in range(k):
                    cf = C[j, 0]
                    xf = xt[0, :m]
                    for p in range(m):
                        v = xf[p] - cf
                        ds[p] = v * v
                    for f in range(1, d):
                        cf = C[j, f]
                        xf = xt[f, :m]
                        for p in range(m):
                            v = xf[p] - cf
                            ds[p] = fma(v, v, ds[p])
                    for p in range(m):
                        _keep_two(bs, ss, bi, p, ds[p], j)
                for p in range(m):
                    i = ids[p]
                    upper[i] = np.sqrt(np.float64(bs[p])) * grow
                    lower[i] = np.sqrt(np.float64(ss[p])) * shrink
                    if bi[p] != labels[i]:
                        labels[i] = bi[p]
                        nm += 1
            moved[b] = nm


@njit(cache=True, parallel=True)
def column_sums(X, mean, part, out, nthreads):
    """``out[f]`` += the sum over the rows of X (n, d) of ``x_f`` (``mean`` empty) or of ``(x_f - mean[f])^2``, in
    float64: the two passes of a variance, with no float64 copy of X. Per block of :data:`BLOCK` rows a partial
    (``part[b, 0]``: :func:`block_partials` of one row), added block after block: the same bits whatever the
    threads."""
    n, d = X.shape
    has_mean = mean.shape[0] > 0
    nb = (n + BLOCK - 1) // BLOCK
    ctr = np.zeros(1, np.int64)
    for _t in prange(nthreads):
        while True:
            b = fetch_add(ctr)
            if b >= nb:
                break
            acc = part[b, 0]
            acc[:] = 0.0
            for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
                if has_mean:
                    for f in range(d):
                        v = np.float64(X[i, f]) - mean[f]
                        acc[f] += v * v
                else:
                    for f in range(d):
                        acc[f] += np.float64(X[i, f])
    for b in range(nb):
        for f in range(d):
            out[f] += part[b, 0, f]


@njit(cache=True, parallel=True)
def sums_by_label(X, w, labels, part_s, part_c, sums, counts, nthreads):
    """The sums and counts of a full pass (the same blocks, the same order: the same bits) from given labels.

    ``d`` is a run-time value here (no unrolling: a memory-bound loop), so one variant serves every ``d``."""
    n = X.shape[0]
    has_w = w.shape[0] > 0
    nb = (n + BLOCK - 1) // BLOCK
    ctr = np.zeros(1, np.int64)  # the next block to take: threads take blocks as they finish
    for _t in prange(nthreads):
        while True:
            b = fetch_add(ctr)
            if b >= nb:
                break
            s0 = b * BLOCK
            e0 = min(n, s0 + BLOCK)
            ps = part_s[b]
            pc = part_c[b]
            ps[:] = 0.0
            pc[:] = 0.0
            for i in range(s0, e0):
                _add_point(ps, pc, X, i, labels[i], w, has_w, X.shape[1])
    _reduce(part_s, part_c, nb, sums, counts)


@njit(cache=True)
def half_separation(C):
    """Half the distance (float64) of every center to its nearest other center (inf when k = 1).

    One thread: k^2 d / 2 operations (10 ms at k = 1024, d = 14) against a pass's n k d, and a parallel variant
    costs 1.5 s more to compile."""
    k, d = C.shape
    out = np.empty(k)
    for i in range(k):
        m = np.inf
        for j in range(k):
            if j != i:
                s = 0.0
                for f in range(d):
                    v = np.float64(C[i, f]) - np.float64(C[j, f])
                    s += v * v
                m = min(m, s)
        out[i] = 0.5 * np.sqrt(m)
    return out


#: rows per work unit of :func:`yinyang_step` (its results do not depend on it: labels are per point, the sums are
#: per BLOCK): small, so that a worker whose core another process holds keeps the others waiting for little at the end
YY_BLOCK = 512
assert BLOCK % YY_BLOCK == 0


@njit(cache=True, parallel=True)
def yinyang_step(
    X,
    C,
    CPT,
    perm,
    gstart,
    gof,
    W,
    drift,
    gcum,
    slack,
    labels,
    upper,
    L,
    moved,
    w,
    part_s,
    part_c,
    done,
    valid,
    sums,
    counts,
    nthreads,
):
    """Yinyang's step (Ding et al. 2015) over X (n, d) in the compute dtype: labels, upper bounds and the group
    lower bounds updated in place, the number of points that moved per unit of :data:`YY_BLOCK` rows into
    ``moved``. The labels are exactly those of a full pass (the nearest center in direct differences, the lowest
    index on ties).

    Centers: ``C`` (k, d); ``CPT`` (d, kp) the same centers by group, transposed, each group's columns
    ``gstart[g]:gstart[g + 1]`` (its centers in index order, then padding columns of +inf up to a multiple of ``W``,
    the lanes of :func:`.simd.dist_chunks`); ``perm`` the center of each column (-1: padding); ``gof[j]`` the group
    of center j. Bounds are float64 distances
    (inflated/deflated by the squared distances' rounding bound ``slack``, as :func:`bounded_step`): ``upper[i]``
    above the distance to the own center, and ``L[i, g] - gcum[g]`` below the distance to every center of group g
    but the own one (``gcum[g]``: the summed largest drift of a center of g, so that a step writes no bound of a
    settled point). ``drift`` (k): each center's move since the last step. A point whose bounds (then its own
    distance) prove its center strictly nearest is settled; otherwise every group that its bounds do not rule out
    is scanned, :data:`.simd.CHUNKS` chunks of ``W`` centers at a time (the full pass's arithmetic, so the same
    distances, bit for bit). With no drift after :func:`group_bounds`, it makes that kernel's provisional labels
    exact (the first step).

    The sums and counts of a full pass (added to ``sums``, ``counts``) in the same region: the worker that finishes
    the last unit of a block of :data:`BLOCK` rows (``done[b]``, zero on entry, counts them atomically) adds the
    block's points in order into its float64 partials (``part_s``, ``part_c``, as :func:`sums_by_label`), unless the
    partials are ``valid[b]`` and no label of the block changed (the same labels give the same partials: they are
    kept); the partials are reduced block after block after the loop. The same bits as a full pass, one parallel
    region per step."""
    n = X.shape[0]
    G = gstart.shape[0] - 1
    ct = C.dtype.type
    has_w = w.shape[0] > 0
    nb = (n + YY_BLOCK - 1) // YY_BLOCK
    nsb = (n + BLOCK - 1) // BLOCK
    per = BLOCK // YY_BLOCK
    grow = 1.0 + slack
    shrink = 1.0 - slack
    ctr = np.zeros(1, np.int64)
    for _t in prange(nthreads):
        two = np.empty(2 * CHUNKS, C.dtype)
        lanes = np.empty(CHUNKS, np.int64)
        offs = np.empty(CHUNKS, np.int64)
        chunks = np.empty(CPT.shape[1] // W + 1, np.int64)
        m1 = np.empty(G, C.dtype)
        m2 = np.empty(G, C.dtype)
        m1j = np.empty(G, np.int64)
        scanned = np.empty(G, np.bool_)
        while True:
            b = fetch_add(ctr)
            if b >= nb:
                break
            s0 = b * YY_BLOCK
            e0 = min(n, s0 + YY_BLOCK)
            nm = 0
            for i in range(s0, e0):
                a = labels[i]
                Li = L[i]
                u = upper[i] + drift[a]
                glb = np.inf
                for g in range(G):
                    glb = min(glb, Li[g] - gcum[g])
                if u * grow < glb * shrink:
                    upper[i] = u
                    continue
                dda = _sq_dist(X, i, C, a, ct)
                u = np.sqrt(np.float64(dda)) * grow
                if u * grow < glb * shrink:
                    upper[i] = u
                    continue
                # the groups that the bounds do not rule out, their chunks
                nch = 0
                for g in range(G):
                    scanned[g] = False
                    if u * grow < (Li[g] - gcum[g]) * shrink:
                        continue
                    scanned[g] = True
                    m1[g] = ct(np.inf)
                    m2[g] = ct(np.inf)
                    m1j[g] = -1
                    for c0 in range(gstart[g], gstart[g + 1], W):
                        chunks[nch] = c0
                        nch += 1
                best = dda
                lab = a
                for t in range(0, nch, CHUNKS):
                    for q in range(CHUNKS):
                        offs[q] = chunks[min(t + q, nch - 1)]
                    dist_chunks(CPT, offs, X[i], two, lanes)
                    for q in range(min(CHUNKS, nch - t)):
                        # the chunk's nearest (its lanes are in index order: the first lane wins ties) and second
                        dd = two[2 * q]
                        j = perm[offs[q] + lanes[q]]
                        if dd < best or (dd == best and j < lab):
                            best = dd
                            lab = j
                        g = gof[j]
                        if dd < m1[g]:
                            m2[g] = min(m1[g], two[2 * q + 1])
                            m1[g] = dd
                            m1j[g] = j
                        else:
                            m2[g] = min(m2[g], dd)
                # the groups scanned: their nearest center but the new own one; the old own center, now another
                for g in range(G):
                    if scanned[g]:
                        lo = m2[g] if m1j[g] == lab else m1[g]
                        Li[g] = np.sqrt(np.float64(lo)) * shrink + gcum[g]
                if lab != a:
                    ga = gof[a]
                    if not scanned[ga]:
                        Li[ga] = min(Li[ga], np.sqrt(np.float64(dda)) * shrink + gcum[ga])
                    labels[i] = lab
                    nm += 1
                upper[i] = np.sqrt(np.float64(best)) * grow
            moved[b] = nm
            sb = b // per
            u0 = sb * per
            u1 = min(nb, u0 + per)
            if fetch_add(done[sb : sb + 1]) == u1 - u0 - 1:  # the block's last unit: its labels are final
                changed = valid[sb] == 0
                for u in range(u0, u1):
                    changed = changed or moved[u] > 0
                if changed:
                    ps = part_s[sb]
                    pc = part_c[sb]
                    ps[:] = 0.0
                    pc[:] = 0.0
                    for i in range(sb * BLOCK, min(n, (sb + 1) * BLOCK)):
                        _add_point(ps, pc, X, i, labels[i], w, has_w, X.shape[1])
                    valid[sb] = 1
    _reduce(part_s, part_c, nsb, sums, counts)


@njit(cache=True, parallel=True)
def group_bounds(X, CP, csq, chunks, gstart, order, slack, labels, upper, L, nthreads):
    """Every bound of :func:`yinyang_step` from scratch, from the expansion ``v_j = |c_j|^2 - 2 x.c_j`` of
    :func:`.simd.expansion_tile` (as :func:`gemm_pass`, whose rounding bound ``err`` it takes): a provisional label
    (the smallest ``v``: ``labels[i] = order[j]``), ``upper[i]`` above its distance (``v + |x|^2 + err``) and
    ``L[i, g]`` below the distance to every center of group g but that one (per group the smallest ``v``, the second
    smallest in the label's group, ``+ |x|^2 - err``). A :func:`yinyang_step` with no drift then gives the exact
    labels. ``CP``, ``csq``, ``chunks``: the centers by group in panels (:func:`.backend.center_panels`), group g
    the centers ``gstart[g]:gstart[g + 1]`` of that order (``order[j]``: the center of position j)."""
    n, d = X.shape
    k = order.shape[0]
    kp = csq.shape[0]
    W = CP.shape[2] // len(chunks)
    G = gstart.shape[0] - 1
    grow = 1.0 + slack
    shrink = 1.0 - slack
    cmax = 0.0
    for j in range(k):
        cmax = max(cmax, np.float64(csq[j]))
    nb = (n + BLOCK - 1) // BLOCK
    ctr = np.zeros(1, np.int64)
    for _t in prange(nthreads):
        Gm = np.empty((PANEL_ROWS, kp), CP.dtype)
        m1s = np.empty(PANEL_ROWS * W, CP.dtype)
        m2s = np.empty(PANEL_ROWS * W, CP.dtype)
        i1s = np.empty(PANEL_ROWS * W, np.int32)
        xsq = np.empty(PANEL_ROWS)  # the tile's |x|^2 in float64
        while True:
            b = fetch_add(ctr)
            if b >= nb:
                break
            s0 = b * BLOCK
            e0 = min(n, s0 + BLOCK)
            for t0 in range(s0, e0, PANEL_ROWS):
                t1 = min(e0, t0 + PANEL_ROWS)
                expansion_tile(X, t0, CP, csq, Gm, m1s, i1s, m2s, chunks)
                rows_sq_norms(X, t0, t1, xsq)
                for i in range(t0, t1):
                    xi = xsq[i - t0]
                    err = slack * (xi + cmax)
                    g = Gm[i - t0]
                    Li = L[i]
                    own = 0
                    for q in range(G):  # the smallest value per group (no branch: a minimum per center)
                        m1 = np.inf
                        for j in range(gstart[q], gstart[q + 1]):
                            m1 = min(m1, np.float64(g[j]))
                        Li[q] = m1
                        if m1 < Li[own]:
                            own = q
                    # the group of the smallest: its smallest (the label) and second smallest
                    m1 = np.inf
                    m2 = np.inf
                    jo = gstart[own]
                    for j in range(gstart[own], gstart[own + 1]):
                        v = np.float64(g[j])
                        if v < m1:
                            m2 = m1
                            m1 = v
                            jo = j
                        else:
                            m2 = min(m2, v)
                    Li[own] = m2
                    labels[i] = order[jo]
                    upper[i] = np.sqrt(max(m1 + xi + err, 0.0)) * grow
                    for q in range(G):
                        Li[q] = np.sqrt(max(Li[q] + xi - err, 0.0)) * shrink


@njit(cache=True, parallel=True)
def own_sq_dist(X, C, labels, out, nthreads):
    """``out[i]`` = the squared distance of point i to its center ``labels[i]``, as a full pass computes it."""
    n = X.shape[0]
    ct = C.dtype.type
    nb = (n + YY_BLOCK - 1) // YY_BLOCK
    ctr = np.zeros(1, np.int64)
    for _t in prange(nthreads):
        while True:
            b = fetch_add(ctr)
            if b >= nb:
                break
            _rows_sq_dist(X, C, labels, 0, b * YY_BLOCK, min(n, (b + 1) * YY_BLOCK), out, ct)
