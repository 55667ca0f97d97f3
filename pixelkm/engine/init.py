"""Center initialization: greedy k-means++ (as scikit-learn does it), random, or explicit.

All functions are batched: X of shape (b, n, d) in any supported dtype, weights (b, n) or None, and return
centers of shape (b, k, d) in the compute dtype on X's device. Random numbers come from a ``torch.Generator``
(drawn on the generator's device, then moved), so a seed gives the same centers on the same device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

try:  # the CPU k-means++ kernel (numba, as the CPU backend, which has already imported it)
    import numba
    from numba import prange
except ImportError:  # pragma: no cover
    numba = None
    prange = range

from .._sysinfo import available_memory
from .._validation import as_tensor, check_data
from ..ops.distance import sq_distances


class ProblemRNG:
    """Uniform random numbers for b problems: problem i draws from ``generators[i]``.

    The same generator may appear several times (one generator shared by a batch): it is then drawn problem
    after problem, as a loop of single fits sharing it would draw it.
    """

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        self.generators = list(generators)

    def rand(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Uniforms in [0, 1) of shape (b, *shape), float64, on ``device`` (one copy to it)."""
        draws = [torch.rand(shape, generator=g, device=g.device, dtype=torch.float64) for g in self.generators]
        return torch.stack([t.to(draws[0].device) for t in draws]).to(device)


def as_problem_rng(generator: torch.Generator | ProblemRNG, b: int) -> ProblemRNG:
    """A :class:`ProblemRNG` for b problems; a single generator is shared by all of them."""
    if isinstance(generator, ProblemRNG):
        if len(generator.generators) != b:
            raise ValueError(f"{len(generator.generators)} generators for {b} problems")
        return generator
    return ProblemRNG([generator] * b)


def _gather_rows(X: torch.Tensor, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """X[b, idx[b, j]] for every b, j: shape (b, t, d), converted to ``dtype``."""
    b, _, d = X.shape
    return torch.gather(X, 1, idx.unsqueeze(-1).expand(b, idx.shape[1], d)).to(dtype)


def weighted_pick(cum: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Indices drawn with probability proportional to the increments of ``cum`` (b, n), for uniforms u (b, t)."""
    target = u * cum[:, -1:]
    idx = torch.searchsorted(cum, target.contiguous(), right=True)
    return idx.clamp_(max=cum.shape[1] - 1)


#: rows per block of the CPU k-means++ kernels (fixed: the draws do not depend on the thread count)
_PP_BLOCK = 4096
#: rows per sub-block: each has its own bounding box and largest distance, so that a candidate computes only the
#: sub-blocks it may improve. With the strided block order and the uint8 / float32 reads (:func:`_pp_seed`), the
#: whole k-means++ of the 12 MP photo's 960,825 weighted colors, 2 threads, 2026-12-03: k = 16 / 64 / 256 took
#: 45-53 / 137-191 / 322-325 ms before, 19-20 / 45-48 / 86-116 ms after, the same draws (sub-blocks of 512 rows:
#: ~7% slower)
_PP_SUB = 256
#: up to this many features the CPU kernel's distances are exactly the torch path's (direct differences in the
#: compute dtype, as :func:`pixelkm.ops.distance.sq_distances` computes them there) and its bounding boxes prune;
#: beyond, the torch path takes the expansion in float64 (within a rounding bound of the exact distance) and the
#: kernel keeps its direct differences, without the boxes (they rule nothing out in many dimensions)
_PP_PRUNE_D = 16
#: from this many bytes of rows (more than the cache holds) the kernel keeps each step's candidate distances for its
#: update instead of reading the rows again (2 threads, k = 256, 2026-12-03: d = 128 / 64 / 32 / 16 at n = 100k /
#: 100k / 400k / 800k float32, 51 / 26 / 51 / 51 MB: 2.36 -> 1.90, 1.19 -> 0.86, 2.74 -> 2.11, 2.66 -> 2.43 s;
#: d = 32 at n = 100k, 13 MB: 0.34 -> 0.38 s, slower; the boxes off in these runs)
_PP_STORE_BYTES = 16 << 20
_PP_KERNELS: dict[str, Any] = {}


def _pp_dist(XT, xc, lo, hi, out):
    """Squared distances of points lo..hi of X^T (d, n) to the point xc (d,), in the compute dtype of ``out`` (X's
    rows converted exactly, uint8 included), into out[: hi - lo]: the operations of torch's direct differences
    (``diff * diff`` added feature after feature), the points as SIMD lanes (indices from ``range`` into slices,
    which the compiler knows are not negative: it vectorizes them)."""
    ct = out.dtype.type
    m = hi - lo
    xs = XT[0, lo:hi]
    v = xc[0]
    for q in range(m):
        diff = ct(xs[q]) - v
        out[q] = diff * diff
    for f in range(1, XT.shape[0]):
        xs = XT[f, lo:hi]
        v = xc[f]
        for q in range(m):
            diff = ct(xs[q]) - v
            out[q] = out[q] + diff * diff


def _pp_scan(dist, closest, w, lo, hi, update):
    """The potential of a candidate at squared distances ``dist`` over points lo..hi: the sum of w * min(dist,
    closest) in float64, point lo + i added into lane i % 16 of 16 partial sums (the same order on every machine),
    then the lanes in order. With ``update`` (the chosen candidate), closest becomes that min and the largest new
    value is returned too (0.0 otherwise): returns (largest, potential)."""
    s = np.zeros(16)
    tops = np.zeros(16, dist.dtype)
    m = hi - lo
    cl = closest[lo:hi]
    ww = w[lo:hi]
    m16 = m // 16 * 16
    for i0 in range(0, m16, 16):
        for q in range(16):
            a, b = dist[i0 + q], cl[i0 + q]
            dd = a if a < b else b
            if update:
                cl[i0 + q] = dd
                t = tops[q]
                tops[q] = dd if dd > t else t
            s[q] += np.float64(dd) * np.float64(ww[i0 + q])
    for i in range(m16, m):
        a, b = dist[i], cl[i]
        dd = a if a < b else b
        if update:
            cl[i] = dd
            t = tops[i - m16]
            tops[i - m16] = dd if dd > t else t
        s[i - m16] += np.float64(dd) * np.float64(ww[i])
    tot = 0.0
    top = 0.0
    for q in range(16):
        tot += s[q]
        top = max(top, np.float64(tops[q]))
    return top, tot


def _pp_pick(closest, w, block_sums, target, first):
    """The first index whose running sum of w * closest (of w alone when ``first``) exceeds ``target``
    (``searchsorted(cumsum, target, right=True)``), by the block sums then one scan inside a block; the last index
    when none does."""
    n = closest.shape[0]
    run = 0.0
    b = 0
    nb = block_sums.shape[0]
    while b < nb - 1 and run + block_sums[b] <= target:
        run += block_sums[b]
        b += 1
    for i in range(b * _PP_BLOCK, n):
        if first:
            run += np.float64(w[i])
        else:
            run += np.float64(w[i]) * np.float64(closest[i])
        if run > target:
            return i
    return n - 1


def _pp_far(xc, box, b, r2max):
    """True when no point of box b (``box[b]``, (2, d): the low and high corners) can be nearer to the point xc than
    its current nearest center: the box's squared distance to xc, less a margin for the rounding of a float
    distance, is at least the box's largest squared distance ``r2max``."""
    lb = 0.0
    for f in range(xc.shape[0]):
        v = np.float64(xc[f])
        g = max(np.float64(box[b, 0, f]) - v, v - np.float64(box[b, 1, f]), 0.0)
        lb += g * g
    return lb * (1.0 - 1e-5) >= r2max


def _pp_seed(XT, w, u, k, t, indices, closest, prune, dstore):
    """Greedy k-means++ on one problem: X^T (d, n) (uint8 or the compute dtype), weights w (n,) (float32 or
    float64), uniforms u (1 + (k-1) t,), ``t`` local trials. Writes the chosen rows into ``indices`` (k,);
    ``closest`` (n,), in the compute dtype, is work space (the squared distance to the nearest chosen center).

    The draws of the torch path (up to :data:`_PP_PRUNE_D` features: the same distances), the potentials and
    running sums added in another order (16 lanes per sub-block of 256 points, the sub-blocks in order; fixed
    whatever the thread count). With ``prune``, a sub-block whose bounding box is farther from a candidate than its
    largest distance to its nearest center keeps its potential without a pass, and a block of 4096 points whose
    box is (a box around its 16 sub-blocks) skips its sub-blocks' tests too. The blocks are visited in a strided
    order, so that the few blocks near a candidate (in Morton order: consecutive) fall to different threads.
    ``dstore`` (t, n) in the compute dtype, or (0, 0): the trials' distances are written there and the update takes
    the chosen candidate's from it instead of computing them again (it runs the same tests, hence needs the same
    sub-blocks)."""
    d, n = XT.shape
    B = _PP_BLOCK
    SB = _PP_SUB
    S = B // SB
    ct = closest.dtype.type
    nb = (n + B - 1) // B
    ns = (n + SB - 1) // SB
    stride = 7919 if nb % 7919 else 1  # a prime: i -> i * stride mod nb visits every block once
    block_sums = np.zeros(nb)
    sub_sums = np.zeros(ns)
    r2b = np.full(nb, np.inf)
    r2s = np.full(ns, np.inf)
    box = np.empty((nb, 2, d), dtype=closest.dtype)
    sbox = np.empty((ns, 2, d), dtype=closest.dtype)
    for s in prange(ns):
        lo, hi = s * SB, min(n, (s + 1) * SB)
        for f in range(d):
            sbox[s, 0, f] = ct(XT[f, lo:hi].min())
            sbox[s, 1, f] = ct(XT[f, lo:hi].max())
    for b in prange(nb):
        lo, hi = b * B, min(n, (b + 1) * B)
        s = 0.0
        for i in range(lo, hi):
            s += np.float64(w[i])
        block_sums[b] = s
        s1 = min(ns, (b + 1) * S)
        for f in range(d):
            box[b, 0, f] = sbox[b * S, 0, f]
            box[b, 1, f] = sbox[b * S, 1, f]
            for q in range(b * S + 1, s1):
                box[b, 0, f] = min(box[b, 0, f], sbox[q, 0, f])
                box[b, 1, f] = max(box[b, 1, f], sbox[q, 1, f])
    chosen = _pp_pick(closest, w, block_sums, u[0] * block_sums.sum(), True)
    indices[0] = chosen
    closest[:] = np.inf
    cand = np.empty(t, dtype=np.int64)
    cx = np.empty((t, d), dtype=closest.dtype)
    xc = np.empty(d, dtype=closest.dtype)
    part = np.zeros((nb, t))
    store = dstore.shape[0] > 0
    best = 0
    for c in range(k):
        if c > 0:
            total = block_sums.sum()
            for j in range(t):
                cand[j] = _pp_pick(closest, w, block_sums, u[1 + (c - 1) * t + j] * total, False)
                for f in range(d):
                    cx[j, f] = ct(XT[f, cand[j]])
            for i in prange(nb):
                b = (i * stride) % nb
                dist = np.empty(SB, dtype=closest.dtype)
                acc = np.zeros(t)
                live = np.empty(t, dtype=np.bool_)
                for j in range(t):  # (a block too far from a candidate: its sum, every min the current distance)
                    live[j] = not (prune and _pp_far(cx[j], box, b, r2b[b]))
                # the sub-blocks outside, the candidates inside: a sub-block stays in cache for all of them (256 rows
                # of 128 float32 features are 128 KB)
                for s in range(b * S, min(ns, (b + 1) * S)):
                    lo, hi = s * SB, min(n, (s + 1) * SB)
                    for j in range(t):
                        if not live[j]:
                            continue
                        if prune and _pp_far(cx[j], sbox, s, r2s[s]):
                            acc[j] += sub_sums[s]
                        elif store:  # (kept for the update, if j is chosen)
                            dj = dstore[j, lo:hi]
                            _pp_dist(XT, cx[j], lo, hi, dj)
                            acc[j] += _pp_scan(dj, closest, w, lo, hi, False)[1]
                        else:
                            _pp_dist(XT, cx[j], lo, hi, dist)
                            acc[j] += _pp_scan(dist, closest, w, lo, hi, False)[1]
                for j in range(t):
                    part[b, j] = acc[j] if live[j] else block_sums[b]
            best = 0
            best_pot = np.inf
            for j in range(t):
                pot = 0.0
                for b in range(nb):
                    pot += part[b, j]
                if pot < best_pot:  # the first of equal potentials, as argmin
                    best, best_pot = j, pot
            chosen = cand[best]
            indices[c] = chosen
        for f in range(d):
            xc[f] = ct(XT[f, chosen])
        for i in prange(nb):
            b = (i * stride) % nb
            if c > 0 and prune and _pp_far(xc, box, b, r2b[b]):
                continue
            dist = np.empty(SB, dtype=closest.dtype)
            s0, s1 = b * S, min(ns, (b + 1) * S)
            acc = 0.0
            top = 0.0
            for s in range(s0, s1):
                if c == 0 or not (prune and _pp_far(xc, sbox, s, r2s[s])):
                    lo, hi = s * SB, min(n, (s + 1) * SB)
                    if store and c > 0:  # the chosen candidate's distances, from its trial (the same tests ran)
                        r2s[s], sub_sums[s] = _pp_scan(dstore[best, lo:hi], closest, w, lo, hi, True)
                    else:
                        _pp_dist(XT, xc, lo, hi, dist)
                        r2s[s], sub_sums[s] = _pp_scan(dist, closest, w, lo, hi, True)
                acc += sub_sums[s]
                top = max(top, r2s[s])
            block_sums[b] = acc
            r2b[b] = top


_PP_HELPERS = ("_pp_dist", "_pp_scan", "_pp_pick", "_pp_far")


def _pp_kernel():
    """The compiled CPU k-means++ (numba, cached on disk), or None where numba does not import."""
    if "seed" not in _PP_KERNELS:
        if numba is None:  # pragma: no cover
            _PP_KERNELS["seed"] = None
            return None
        g = globals()
        try:  # _pp_seed calls the compiled helpers: the module's names are rebound before it compiles
            for name in _PP_HELPERS:
                g[name] = numba.njit(cache=True, inline="always")(g[name])
            _PP_KERNELS["seed"] = numba.njit(cache=True, parallel=True)(_pp_seed)
        except RuntimeError as err:  # no writable cache folder: compiled once per process instead
            if "no locator available" not in str(err):
                raise
            for name in _PP_HELPERS:
                g[name] = numba.njit(inline="always")(g[name])
            _PP_KERNELS["seed"] = numba.njit(parallel=True)(_pp_seed)
    return _PP_KERNELS["seed"]


#: from this many clusters (and up to 3 features) the CPU kernel visits the points in Morton order (measured on
#: the 12 MP photo's 960,825 colors, 2 threads, the order's ~0.03 s included, 2026-12-03: k = 256 143-155 -> 86-89
#: ms, k = 64 54-58 -> 46-47 ms, k = 16 19-21 -> 34-36 ms: not there)
_PP_MORTON_K = 64
#: bits per feature of the Morton code (3 x 10: an int32 key)
_MORTON_BITS = 10
_SPREAD = np.zeros(1 << _MORTON_BITS, dtype=np.int32)
for _b in range(_MORTON_BITS):
    _SPREAD |= ((np.arange(1 << _MORTON_BITS, dtype=np.int32) >> _b) & 1) << (3 * _b)


def morton_order(X: torch.Tensor) -> torch.Tensor:
    """A permutation (int64) of the rows of X (n, d), d <= 3, that sorts them by the Morton (Z-order) code of their
    features, each scaled to :data:`_MORTON_BITS` bits between its minimum and maximum: consecutive rows are then
    near each other in space (blocks of rows have small bounding boxes). Rows with equal codes keep their order."""
    n, d = X.shape
    if d > 3:
        raise ValueError(f"morton_order takes up to 3 features, got {d}")
    Xn = X.numpy()
    code = np.zeros(n, dtype=np.int32)
    top = (1 << _MORTON_BITS) - 1
    for f in range(d):
        col = Xn[:, f]
        if Xn.dtype == np.uint8:
            q = col.astype(np.int32) << (_MORTON_BITS - 8)
        else:
            lo, hi = float(col.min()), float(col.max())
            scale = top / (hi - lo) if hi > lo else 0.0
            q = np.clip(((col.astype(np.float64) - lo) * scale).astype(np.int32), 0, top)
        code |= _SPREAD[q] << f
    return torch.sort(torch.from_numpy(code), stable=True).indices  # (torch's sort runs on every core)


def _cpu_plusplus(
    X: torch.Tensor,
    w: torch.Tensor | None,
    uniforms: torch.Tensor,
    n_clusters: int,
    t: int,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """Indices (b, k) of the greedy k-means++ draws by the CPU kernel, or None where it does not apply (not the
    CPU, X neither in the compute dtype nor uint8 pixels nor float16/bfloat16 (those converted exactly into the
    kernel's copy), no numba, no room in memory for the kernel's transposed copy of X). The kernel reads uint8 rows
    as they are (converted exactly as it computes, as the torch path converts them) and float32 weights as float32
    (``w`` (b, n), None for unit weights; other dtypes as float64): a third of the bytes of float rows and float64
    weights, on a pass that memory bounds. Beyond
    :data:`_PP_PRUNE_D` features its distances are direct differences where the torch path's are the expansion:
    the same distribution of draws, the same draws unless two potentials round differently.

    From :data:`_PP_MORTON_K` clusters with up to 3 features (colors) the kernel takes the points in Morton order
    (:func:`morton_order`), so that its blocks are small boxes in space and a candidate skips the blocks it cannot
    improve: the same distribution of draws (each point with probability proportional to its weight times its
    squared distance), but not the torch path's draws for the same uniforms (those map through running sums in the
    input's order)."""
    half = (torch.float16, torch.bfloat16)
    if (
        X.device.type != "cpu"
        or X.dtype not in (dtype, torch.uint8, *half)
        or dtype not in (torch.float32, torch.float64)
    ):
        return None
    xdt = dtype if X.dtype in half else X.dtype  # half rows: converted exactly into the copy, as the torch path does
    if X.shape[1] < 1:
        return None
    b, n, d = X.shape
    free = available_memory()
    rows_bytes = n * d * xdt.itemsize
    if free is not None and rows_bytes + 16 * n > free // 2:
        return None
    seed = _pp_kernel()
    if seed is None:
        return None
    X = X.detach()
    w = torch.ones(b, n, dtype=torch.float32) if w is None else w.detach()
    if w.dtype not in (torch.float32, torch.float64):
        w = w.double()
    out = torch.empty(b, n_clusters, dtype=torch.int64)
    closest = torch.empty(n, dtype=dtype)
    # rows larger than the cache: the candidates' distances are kept for the update (t values per row instead of a
    # second read of the row's d features), where they fit
    store = rows_bytes > _PP_STORE_BYTES and d > t and (free is None or t * n * dtype.itemsize <= free // 4)
    dstore = np.empty((t, n) if store else (0, 0), dtype=closest.numpy().dtype)
    spatial = n_clusters >= _PP_MORTON_K and d <= 3 and n > 2 * _PP_BLOCK
    for i in range(b):
        Xi, wi = X[i], w[i]
        perm = None
        if spatial:
            perm = morton_order(Xi)
            Xi, wi = Xi[perm], wi[perm]
        XT = torch.empty(d, n, dtype=xdt).copy_(Xi.t()).numpy()
        w_i, u_i = wi.contiguous().numpy(), uniforms[i].contiguous().numpy()
        seed(XT, w_i, u_i, n_clusters, t, out[i].numpy(), closest.numpy(), d <= _PP_PRUNE_D, dstore)
        if perm is not None:
            out[i] = perm[out[i]]
    return out


def kmeans_plusplus(
    X: torch.Tensor,
    n_clusters: int,
    sample_weight: torch.Tensor | None,
    generator: torch.Generator | ProblemRNG,
    dtype: torch.dtype,
    n_local_trials: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-means++ (Arthur & Vassilvitskii, with scikit-learn's 2 + log(k) local trials).

    Returns (centers (b, k, d) in ``dtype``, indices (b, k) of the chosen points). No host synchronization:
    every uniform of a problem is drawn up front, in one call to its generator.
    """
    b, n, d = X.shape
    dev = X.device
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    uniforms = as_problem_rng(generator, b).rand((1 + (n_clusters - 1) * n_local_trials,), dev)
    fast = _cpu_plusplus(X, sample_weight, uniforms, n_clusters, n_local_trials, dtype)
    if fast is not None:
        return _gather_rows(X, fast, dtype), fast
    w = torch.ones(b, n, dtype=torch.float64, device=dev) if sample_weight is None else sample_weight.double()
    rows = torch.arange(b, device=dev)
    indices = torch.empty(b, n_clusters, dtype=torch.int64, device=dev)
    centers = torch.empty(b, n_clusters, d, dtype=dtype, device=dev)
    first = weighted_pick(torch.cumsum(w, 1), uniforms[:, :1])  # (b, 1)
    indices[:, 0] = first[:, 0]
    centers[:, 0] = _gather_rows(X, first, dtype)[:, 0]
    closest = sq_distances(X, centers[:, :1])[:, :, 0].double()  # (b, n)
    for c in range(1, n_clusters):
        u = uniforms[:, 1 + (c - 1) * n_local_trials : 1 + c * n_local_trials]
        cand = weighted_pick(torch.cumsum(w * closest, 1), u)
        dist = sq_distances(X, _gather_rows(X, cand, dtype)).transpose(1, 2).double()  # (b, t, n)
        torch.minimum(dist, closest.unsqueeze(1), out=dist)
        cand_pot = (dist * w.unsqueeze(1)).sum(-1)  # (b, t)
        best = cand_pot.argmin(1)  # (b,)
        closest = dist[rows, best]
        chosen = cand[rows, best]
        indices[:, c] = chosen
        centers[:, c] = _gather_rows(X, chosen.unsqueeze(1), dtype)[:, 0]
    return centers, indices


def random_init(
    X: torch.Tensor,
    n_clusters: int,
    sample_weight: torch.Tensor | None,
    generator: torch.Generator | ProblemRNG,
    dtype: torch.dtype,
) -> torch.Tensor:
    """k distinct points per problem, drawn without replacement with probability proportional to weight."""
    b, n, _ = X.shape
    u = as_problem_rng(generator, b).rand((n,), X.device)
    if sample_weight is None:
        keys = u
    else:
        # Efraimidis-Spirakis: the k largest u^(1/w) are a weighted sample without replacement.
        wd = sample_weight.double()
        keys = torch.where(wd > 0, torch.log(u) / wd, torch.full_like(u, -torch.inf))
    idx = keys.topk(n_clusters, dim=1).indices
    return _gather_rows(X, idx, dtype)


def explicit_init(init: Any, X: torch.Tensor, n_clusters: int, dtype: torch.dtype, finite: bool = True) -> torch.Tensor:
    """Validate user-given centers against X (b, n, d); accepts (k, d) for b == 1 or (b, k, d).

    ``finite=False`` skips the check of the values (it reads them on the host).
    """
    C, _ = as_tensor(init, "init")
    given = tuple(C.shape)
    b, _, d = X.shape
    if C.ndim == 2 and b == 1:
        C = C.unsqueeze(0)
    if C.ndim != 3 or tuple(C.shape) != (b, n_clusters, d):
        want = f"({n_clusters}, {d}) (n_clusters, n_features)"
        if b > 1:
            want = f"({b}, {n_clusters}, {d}) (batch, n_clusters, n_features)"
        raise ValueError(f"init array must have shape {want}, got {given}")
    C = C.to(device=X.device, dtype=dtype)
    check_data(C, "init", ndims=(3,), finite=finite)
    return C.clone()


INIT_METHODS = ("k-means++", "k-means||", "random")
