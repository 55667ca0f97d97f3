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
#: the CPU kernels run up to this many features (beyond, the torch path's GEMM-based distances serve)
_PP_MAX_D = 16
_PP_KERNELS: dict[str, Any] = {}


def _pp_block_dist(XT, c, lo, hi, out):
    """Squared distances of points lo..hi of X^T (d, n) to its point c, in X's dtype, into out[: hi - lo]: the
    operations of torch's direct differences (``diff * diff`` added feature after feature), the points as SIMD
    lanes (indices from ``range`` into slices, which the compiler knows are not negative: it vectorizes them)."""
    m = hi - lo
    xs = XT[0, lo:hi]
    v = XT[0, c]
    for q in range(m):
        diff = xs[q] - v
        out[q] = diff * diff
    for f in range(1, XT.shape[0]):
        xs = XT[f, lo:hi]
        v = XT[f, c]
        for q in range(m):
            diff = xs[q] - v
            out[q] = out[q] + diff * diff


def _pp_block_pot(dist, closest, w, lo, hi):
    """sum of w * min(dist, closest) over points lo..hi, float64: point lo + i added into lane i % 16 of 16 partial
    sums (a loop the compiler vectorizes: the same order on every machine), then the lanes in order."""
    s = np.zeros(16)
    m = hi - lo
    cl = closest[lo:hi]
    ww = w[lo:hi]
    m16 = m // 16 * 16
    for i0 in range(0, m16, 16):
        for q in range(16):
            s[q] += min(np.float64(dist[i0 + q]), cl[i0 + q]) * ww[i0 + q]
    for i in range(m16, m):
        s[i - m16] += min(np.float64(dist[i]), cl[i]) * ww[i]
    tot = 0.0
    for q in range(16):
        tot += s[q]
    return tot


def _pp_pick(inc, block_sums, target):
    """The first index whose running sum of ``inc`` exceeds ``target`` (``searchsorted(cumsum, target,
    right=True)``), by the block sums then one scan inside a block; the last index when none does."""
    n = inc.shape[0]
    run = 0.0
    b = 0
    nb = block_sums.shape[0]
    while b < nb - 1 and run + block_sums[b] <= target:
        run += block_sums[b]
        b += 1
    for i in range(b * 4096, n):  # (the kernel's block)
        run += inc[i]
        if run > target:
            return i
    return n - 1


def _pp_far(XT, c, box, b, r2max):
    """True when no point of block b (bounding box ``box[b]``, (2, d): the low and high corners) can be nearer to
    point c than its current nearest center: the box's squared distance to c, less a margin for the rounding of a
    float distance, is at least the block's largest squared distance ``r2max``."""
    lb = 0.0
    for f in range(XT.shape[0]):
        v = np.float64(XT[f, c])
        g = max(np.float64(box[b, 0, f]) - v, v - np.float64(box[b, 1, f]), 0.0)
        lb += g * g
    return lb * (1.0 - 1e-5) >= r2max


def _pp_seed(XT, w, u, k, t, indices, closest, inc):
    """Greedy k-means++ on one problem: X^T (d, n) float, weights w (n,) float64, uniforms u (1 + (k-1) t,),
    ``t`` local trials. Writes the chosen rows into ``indices`` (k,); ``closest`` and ``inc`` (n,) float64 are
    work space (the squared distance to the nearest chosen center, and its product with the weight).

    The draws of the torch path: the same distances, the potentials and running sums added in another order
    (blocks of 4096 points, fixed whatever the thread count). A block whose bounding box is farther from a
    candidate than the block's largest distance to its nearest center keeps its potential without a pass."""
    d, n = XT.shape
    B = 4096
    nb = (n + B - 1) // B
    block_sums = np.zeros(nb)
    r2max = np.full(nb, np.inf)
    box = np.empty((nb, 2, d), dtype=XT.dtype)
    for b in prange(nb):
        lo, hi = b * B, min(n, (b + 1) * B)
        s = 0.0
        for i in range(lo, hi):
            inc[i] = w[i]
            s += w[i]
        block_sums[b] = s
        for f in range(d):
            box[b, 0, f] = XT[f, lo:hi].min()
            box[b, 1, f] = XT[f, lo:hi].max()
    chosen = _pp_pick(inc, block_sums, u[0] * block_sums.sum())
    indices[0] = chosen
    closest[:] = np.inf
    cand = np.empty(t, dtype=np.int64)
    part = np.zeros((nb, t))
    for c in range(k):
        if c > 0:
            total = block_sums.sum()
            for j in range(t):
                cand[j] = _pp_pick(inc, block_sums, u[1 + (c - 1) * t + j] * total)
            for b in prange(nb):
                lo, hi = b * B, min(n, (b + 1) * B)
                dist = np.empty(B, dtype=XT.dtype)
                for j in range(t):
                    if _pp_far(XT, cand[j], box, np.int64(b), r2max[b]):
                        part[b, j] = block_sums[b]  # (the same sum: every min is the current distance)
                    else:
                        _pp_block_dist(XT, cand[j], lo, hi, dist)
                        part[b, j] = _pp_block_pot(dist, closest, w, lo, hi)
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
        for b in prange(nb):
            if c > 0 and _pp_far(XT, chosen, box, np.int64(b), r2max[b]):
                continue
            lo, hi = b * B, min(n, (b + 1) * B)
            dist = np.empty(B, dtype=XT.dtype)
            _pp_block_dist(XT, chosen, lo, hi, dist)
            top = 0.0
            cl, ww, ic = closest[lo:hi], w[lo:hi], inc[lo:hi]
            for q in range(hi - lo):
                dd = min(np.float64(dist[q]), cl[q])
                cl[q] = dd
                ic[q] = ww[q] * dd
                top = max(top, dd)
            r2max[b] = top
            block_sums[b] = _pp_block_pot(dist, closest, w, lo, hi)


def _pp_kernel():
    """The compiled CPU k-means++ (numba, cached on disk), or None where numba does not import."""
    if "seed" not in _PP_KERNELS:
        if numba is None:  # pragma: no cover
            _PP_KERNELS["seed"] = None
            return None
        g = globals()
        try:  # _pp_seed calls the compiled helpers: the module's names are rebound before it compiles
            for name in ("_pp_block_dist", "_pp_block_pot", "_pp_pick", "_pp_far"):
                g[name] = numba.njit(cache=True)(g[name])
            _PP_KERNELS["seed"] = numba.njit(cache=True, parallel=True)(_pp_seed)
        except RuntimeError as err:  # no writable cache folder: compiled once per process instead
            if "no locator available" not in str(err):
                raise
            for name in ("_pp_block_dist", "_pp_block_pot", "_pp_pick", "_pp_far"):
                g[name] = numba.njit(g[name])
            _PP_KERNELS["seed"] = numba.njit(parallel=True)(_pp_seed)
    return _PP_KERNELS["seed"]


#: from this many clusters (and up to 3 features) the CPU kernel visits the points in Morton order (measured on
#: the 12 MP photo's 960,825 colors, 2 threads, the order's 0.05 s included: k = 256 0.80-0.87 -> 0.40-0.47 s,
#: k = 64 0.21-0.23 -> 0.16-0.20 s; at k = 16 the whole seeding takes 0.06 s)
_PP_MORTON_K = 64
#: bits per feature of the Morton code (3 x 10: an int32 key)
_MORTON_BITS = 10
_SPREAD = np.zeros(1 << _MORTON_BITS, dtype=np.int32)
for _b in range(_MORTON_BITS):
    _SPREAD |= ((np.arange(1 << _MORTON_BITS, dtype=np.int32) >> _b) & 1) << (3 * _b)


def morton_order(X: np.ndarray) -> np.ndarray:
    """A permutation of the rows of X (n, d), d <= 3, that sorts them by the Morton (Z-order) code of their
    features, each scaled to :data:`_MORTON_BITS` bits between its minimum and maximum: consecutive rows are then
    near each other in space (blocks of rows have small bounding boxes). Rows with equal codes keep their order."""
    n, d = X.shape
    if d > 3:
        raise ValueError(f"morton_order takes up to 3 features, got {d}")
    code = np.zeros(n, dtype=np.int32)
    top = (1 << _MORTON_BITS) - 1
    for f in range(d):
        col = X[:, f]
        if X.dtype == np.uint8:
            q = col.astype(np.int32) << (_MORTON_BITS - 8)
        else:
            lo, hi = float(col.min()), float(col.max())
            scale = top / (hi - lo) if hi > lo else 0.0
            q = np.clip(((col.astype(np.float64) - lo) * scale).astype(np.int32), 0, top)
        code |= _SPREAD[q] << f
    return np.argsort(code, kind="stable")


def _cpu_plusplus(
    X: torch.Tensor, w: torch.Tensor, uniforms: torch.Tensor, n_clusters: int, t: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """Indices (b, k) of the greedy k-means++ draws by the CPU kernel, or None where it does not apply (not the
    CPU, X neither in the compute dtype nor uint8 pixels, many features, no numba). uint8 rows are converted
    exactly, into the transposed copy the kernel reads anyway (as the torch path converts them).

    From :data:`_PP_MORTON_K` clusters with up to 3 features (colors) the kernel takes the points in Morton order
    (:func:`morton_order`), so that its blocks are small boxes in space and a candidate skips the blocks it cannot
    improve: the same distribution of draws (each point with probability proportional to its weight times its
    squared distance), but not the torch path's draws for the same uniforms (those map through running sums in the
    input's order)."""
    if X.device.type != "cpu" or X.dtype not in (dtype, torch.uint8) or dtype not in (torch.float32, torch.float64):
        return None
    if X.shape[2] > _PP_MAX_D or X.shape[1] < 1:
        return None
    seed = _pp_kernel()
    if seed is None:
        return None
    b, n, _ = X.shape
    out = torch.empty(b, n_clusters, dtype=torch.int64)
    closest = torch.empty(n, dtype=torch.float64)
    inc = torch.empty(n, dtype=torch.float64)
    spatial = n_clusters >= _PP_MORTON_K and X.shape[2] <= 3 and n > 2 * _PP_BLOCK
    for i in range(b):
        Xi, wi = X[i], w[i]
        perm = None
        if spatial:
            perm = torch.from_numpy(morton_order(Xi.numpy()))
            Xi, wi = Xi[perm], wi[perm]
        XT = torch.empty(X.shape[2], n, dtype=dtype).copy_(Xi.t()).numpy()
        seed(
            XT,
            wi.contiguous().numpy(),
            uniforms[i].contiguous().numpy(),
            n_clusters,
            t,
            out[i].numpy(),
            closest.numpy(),
            inc.numpy(),
        )
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
    w = torch.ones(b, n, dtype=torch.float64, device=dev) if sample_weight is None else sample_weight.double()
    rows = torch.arange(b, device=dev)
    indices = torch.empty(b, n_clusters, dtype=torch.int64, device=dev)
    centers = torch.empty(b, n_clusters, d, dtype=dtype, device=dev)
    uniforms = as_problem_rng(generator, b).rand((1 + (n_clusters - 1) * n_local_trials,), dev)

    fast = _cpu_plusplus(X, w, uniforms, n_clusters, n_local_trials, dtype)
    if fast is not None:
        return _gather_rows(X, fast, dtype), fast
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
    b, _, d = X.shape
    if C.ndim == 2 and b == 1:
        C = C.unsqueeze(0)
    if C.ndim != 3 or tuple(C.shape) != (b, n_clusters, d):
        want = f"({n_clusters}, {d})" if b == 1 else f"({b}, {n_clusters}, {d})"
        raise ValueError(f"init array must have shape {want} (n_clusters, n_features), got {tuple(C.shape)}")
    C = C.to(device=X.device, dtype=dtype)
    check_data(C, "init", ndims=(3,), finite=finite)
    return C.clone()


INIT_METHODS = ("k-means++", "k-means||", "random")
