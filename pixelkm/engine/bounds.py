"""Hamerly's bounds-based Lloyd loop: Lloyd's iterates with most distance computations skipped.

Each point keeps an upper bound ``u`` on the distance to its own center and a lower bound ``l`` on the distance to
every other center (G. Hamerly, "Making k-means even faster", SDM 2010). After the centers move by ``delta``, ``u``
grows by its own center's move and ``l`` shrinks by the largest move of any center; a point whose ``u`` is at
most ``max(l, s[own])`` (``s[j]``: half the distance from center j to its nearest other center) cannot have changed
cluster and costs a few vector operations. Only the others get their distances recomputed (from
:data:`TIGHTEN_K` clusters, first the one to their own center, which often settles them), to every center
through the backend's pass. Sums and counts are updated by the points that changed cluster only, in float64
(exact for integer data such as pixels and counts, so the centers are those of Lloyd's full passes).

The loop runs full passes while many points move (more than :data:`ENTER_FRACTION` of them), since a bounded step
would then recompute most of them at a higher cost per point; a full pass also sets every point's bounds, and a
step whose bounds leave more than :data:`FULL_PASS_FRACTION` of the points unsettled is a full pass instead.

The bounds are kept in float64 on the distances that the full pass rounded (the pass returns a rounding-safe
lower bound for the second-nearest center), so the labels are the exact nearest centers; they can differ from a
full float32 pass only where two centers are at the same distance within float32 rounding.
"""

from __future__ import annotations

import torch

from .._result import AssignUpdateResult
from .._sysinfo import available_memory
from ..backends import get_backend
from ..ops import run_assign_update
from .lloyd import LloydResult, _inertia, centers_from, relocate_empty_clusters

#: the fewest rows for which ``algorithm="auto"`` takes the bounds (below, full passes cost next to nothing)
MIN_ROWS = 1 << 14
#: memory the bounds hold per row: float64 upper and lower bounds and two float64 work arrays, a bool mask
BYTES_PER_ROW = 8 * 4 + 1


def memory_budget() -> int:
    """Bytes ``algorithm="auto"`` lets the bounds take: 1 GiB, and no more than a quarter of the free memory
    (beyond, full passes, whose extra memory per row is two int64 label arrays)."""
    free = available_memory()
    return 1 << 30 if free is None else min(1 << 30, free // 4)


#: from this many clusters a candidate's distance to its own center is computed first (it often settles it)
TIGHTEN_K = 24
#: above this fraction of the points left unsettled by their bounds, a step is a full pass instead
FULL_PASS_FRACTION = 0.2
#: a full pass sets the bounds (and the next step uses them) once the last one moved at most this fraction
ENTER_FRACTION = 0.02


def _separation(centers: torch.Tensor) -> torch.Tensor:
    """Half the distance from each center (k, d) to its nearest other center, float64 (inf when k == 1)."""
    c = centers.double()
    # differences, not the matmul expansion (whose rounding could overstate a distance): k x k is small
    dist = torch.cdist(c.unsqueeze(0), c.unsqueeze(0), compute_mode="donot_use_mm_for_euclid_dist")[0]
    dist.fill_diagonal_(torch.inf)
    return dist.amin(1) / 2


def _own_distance(x: torch.Tensor, rows: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Exact (float64) distance of the points ``x[rows]`` to their centers ``centers[labels]``, feature by feature
    (1-D gathers are many times faster than gathering rows of a few features on the CPU)."""
    if x.shape[1] > 8:
        return (x.index_select(0, rows).double() - centers.double().index_select(0, labels)).square_().sum(1).sqrt_()
    c = centers.double().t()
    total = torch.zeros(rows.numel(), dtype=torch.float64, device=x.device)
    for j in range(x.shape[1]):
        diff = x[:, j].index_select(0, rows).double() - c[j].index_select(0, labels)
        total.addcmul_(diff, diff)
    return total.sqrt_()


def hamerly(
    X: torch.Tensor,
    centers: torch.Tensor,
    sample_weight: torch.Tensor | None,
    *,
    max_iter: int,
    tol: torch.Tensor,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> LloydResult:
    """Lloyd iterations of one problem X (1, n, d) from centers (1, k, d) with bounds; see :func:`pixelkm._lloyd.lloyd`
    for the arguments and the result (the final labels and inertia come from one full pass, as there).

    The bounds are stored relative to running totals so that a step touches each point with two gathers and a
    few vector operations: ``drift[j]`` is the summed move of center j and ``spread`` the summed largest move;
    a point's upper bound is ``up[i] + drift[label]`` and its lower bound ``low[i] - spread``.
    """
    be = get_backend("torch")
    x = X[0]
    dev = x.device
    n, k = x.shape[0], centers.shape[1]
    cdt = centers.dtype
    w = None if sample_weight is None else sample_weight[0].double()
    cache: dict = {}
    bounded = False  # plain full passes until few points change cluster, then bounds
    moved_frac = 1.0  # the fraction of the points that changed cluster in the last full pass
    enter = ENTER_FRACTION
    labels = up = low = sums = counts = sep = None
    drift = torch.zeros(k, dtype=torch.float64, device=dev)
    upper, bound = torch.empty(n, dtype=torch.float64, device=dev), torch.empty(n, dtype=torch.float64, device=dev)
    over = torch.empty(n, dtype=torch.bool, device=dev)
    spread = 0.0
    n_iter = 0
    for _ in range(max_iter):
        same = stepped = False
        if bounded:
            torch.add(up, drift.index_select(0, labels), out=upper)
            torch.maximum(torch.sub(low, spread, out=bound), sep.index_select(0, labels), out=bound)
            cand = torch.nonzero(torch.gt(upper, bound, out=over)).squeeze(1)
            # a candidate costs a few times what a point of a full pass does: with many, a full pass is cheaper,
            # and the bounds wait for the passes to settle further
            bounded = cand.numel() <= FULL_PASS_FRACTION * n
            enter = enter if bounded else enter / 2
        if bounded:
            stepped = True
            changed = 0
            if cand.numel() and k >= TIGHTEN_K:  # first the distance to their own center: it settles most of them
                lab_c = labels[cand]
                own = _own_distance(x, cand, centers[0], lab_c)
                up[cand] = own - drift.index_select(0, lab_c)
                cand = cand[own > bound[cand]]
            if cand.numel():  # then the distances to every center, for those left
                xc = x.index_select(0, cand)
                sub = be.assign_update(
                    xc.unsqueeze(0), centers, None, compute_distances=False, compute_second=True, chunk_size=chunk_size
                )
                new = sub.labels[0]
                up[cand] = sub.min_sq_upper[0].double().sqrt_() - drift.index_select(0, new)
                low[cand] = sub.second_sq_lower[0].double().sqrt_().add_(spread)
                old = labels[cand]
                moved = new != old
                changed = int(moved.sum())
                if changed:
                    pts, old, new = cand[moved], old[moved], new[moved]
                    wx = xc[moved].double() if w is None else xc[moved].double() * w[pts].unsqueeze(1)
                    wc = torch.ones_like(pts, dtype=torch.float64) if w is None else w[pts]
                    sums.index_add_(0, old, wx, alpha=-1).index_add_(0, new, wx)
                    counts.index_add_(0, old, wc, alpha=-1).index_add_(0, new, wc)
                    labels[pts] = new
            same = changed == 0
            bounded = not bool((counts <= 0).any())  # an empty cluster: a full pass gives the distances to refill it
        if not bounded:
            # a full pass; it also sets every point's bounds once the last one moved few points (a step with bounds
            # would then leave most points settled)
            want = labels is not None and moved_frac <= enter
            res = be.assign_update(
                X,
                centers,
                sample_weight,
                compute_distances=False,
                compute_second=want,
                chunk_size=chunk_size,
                cache=cache,
            )
            if labels is not None:
                moved_frac = int((res.labels[0] != labels).sum()) / n
                if not stepped:  # (after a step that emptied a cluster, labels did change: same stays False)
                    same = moved_frac == 0
            if bool((res.counts <= 0).any()):  # refill from the farthest points; their move is in the sums, not
                # in the labels: the next pass is a full one
                res = be.assign_update(X, centers, sample_weight, chunk_size=chunk_size, cache=cache)
                res = relocate_empty_clusters(res, X, sample_weight)
                want, moved_frac = False, 1.0
            labels = res.labels[0].clone() if want else res.labels[0]
            sums, counts = res.sums[0], res.counts[0]
            if want:
                up = res.min_sq_upper[0].double().sqrt_() - drift.index_select(0, labels)
                low = res.second_sq_lower[0].double().sqrt_().add_(spread)
                bounded = True
        # the centers exactly as a full pass gives them: its sums and counts rounded to the compute dtype
        step = AssignUpdateResult(None, None, sums.to(cdt).unsqueeze(0), counts.to(cdt).unsqueeze(0))
        new_centers = centers_from(step, centers)
        moves = (new_centers[0] - centers[0]).double().square().sum(1)
        n_iter += 1
        centers = new_centers
        delta = moves.sqrt()
        drift += delta
        spread += float(delta.max())
        sep = _separation(centers[0])
        if same or moves.sum() <= tol[0]:
            break
    final = run_assign_update(X, centers, sample_weight, backend=backend, chunk_size=chunk_size)
    n_iters = torch.full((1,), n_iter, dtype=torch.int64, device=dev)
    return LloydResult(centers, final.labels, _inertia(final, sample_weight, False, None), n_iters)
