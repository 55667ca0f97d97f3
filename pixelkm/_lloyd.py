"""The batched Lloyd loop around ``assign_update``: center update, empty clusters, convergence.

Every function here takes b independent problems at once: X (b, n, d), centers (b, k, d),
sample_weight (b, n) or None, mask (b, n) or None. Each problem converges on its own; converged problems
keep their centers. With ``sync=False`` nothing in the loop reads a device value on the host (no ``.item()``,
no ``bool(tensor)``, no data-dependent shapes), so the loop runs exactly ``max_iter`` steps and can be captured
in a CUDA graph; converged problems are still frozen on the device, so the result is the same.

A ``comm`` object (see :mod:`pixelkm.distributed`) makes the loop run on one shard of the data per process:
it all-reduces sums, counts, inertia and the convergence test, and gathers the far points that refill empty
clusters, so that every process ends with the centers of a single fit on the concatenated data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ._result import AssignUpdateResult
from .ops import run_assign_update


@dataclass
class LloydResult:
    centers: torch.Tensor  # (b, k, d)
    labels: torch.Tensor  # (b, n) int64, -1 where the mask is False
    inertia: torch.Tensor  # (b,) float64
    n_iter: torch.Tensor  # (b,) int64


def mean_feature_variance(
    X: torch.Tensor, mask: torch.Tensor | None = None, comm: Any = None, rows: int = 1 << 18
) -> torch.Tensor:
    """Mean over features of each feature's (unweighted) variance, per problem: shape (b,), float64.

    Only the points where ``mask`` is True count. Two chunked passes in float64, so that no float copy of X
    is made. No host synchronization.
    """
    b, n, d = X.shape
    total = torch.zeros(b, d, dtype=torch.float64, device=X.device)
    count = torch.full((b, 1), float(n), dtype=torch.float64, device=X.device)
    m = None if mask is None else mask.to(torch.float64).unsqueeze(-1)
    for start in range(0, n, rows):
        part = X[:, start : start + rows].double()
        total += (part if m is None else part * m[:, start : start + rows]).sum(1)
    if m is not None:
        count = m.sum(1)
    if comm is not None:
        comm.sum_(total)
        comm.sum_(count)
    mean = (total / count).unsqueeze(1)
    sq = torch.zeros(b, d, dtype=torch.float64, device=X.device)
    for start in range(0, n, rows):
        part = (X[:, start : start + rows].double() - mean).square_()
        sq += (part if m is None else part * m[:, start : start + rows]).sum(1)
    if comm is not None:
        comm.sum_(sq)
    return (sq / count).mean(1)


def ordered_farthest(dist: torch.Tensor, K: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first K points of each row of ``dist`` (b, n) in the order (distance descending, index ascending).

    Returns (values (b, K), indices + ``offset`` (b, K)). Exact for ties too: ``topk`` finds the K-th value,
    the points strictly above it are sorted, and the points equal to it are taken lowest index first. O(n) work
    per row and no host synchronization.
    """
    n = dist.shape[1]
    vals, idx = torch.topk(dist, K, dim=1)  # sorted descending; ties in no promised order
    thr = vals[:, -1:]
    n_gt = (vals > thr).sum(1, keepdim=True)
    order = torch.argsort(idx, dim=1)
    idx, vals = idx.gather(1, order), vals.gather(1, order)
    order = torch.argsort(vals, dim=1, descending=True, stable=True)
    idx, vals = idx.gather(1, order), vals.gather(1, order)
    rank = torch.cumsum(dist == thr, 1)  # how many points equal to the threshold up to each index
    slot = torch.arange(K, device=dist.device).unsqueeze(0)
    tied = torch.searchsorted(rank, (slot - n_gt + 1).clamp_min(1)).clamp_max(n - 1)
    in_gt = slot < n_gt
    return torch.where(in_gt, vals, thr), torch.where(in_gt, idx, tied) + offset


def relocate_empty_clusters(
    res: AssignUpdateResult,
    X: torch.Tensor,
    sample_weight: torch.Tensor | None,
    *,
    sync: bool = True,
    comm: Any = None,
) -> AssignUpdateResult:
    """Move every empty cluster onto the points farthest from their centers (as scikit-learn does).

    ``res`` must hold labels and min_sq_dist. Each empty cluster takes one far point (farthest first, ties to
    the lowest index, the lowest-numbered empty cluster first; zero-weight points are never taken): that point's
    weight and value leave its old cluster's sums and counts and become the empty cluster's. Returns a result
    with updated sums/counts. Vectorized over problems; with ``sync=False`` it runs every step without
    checking on the host whether any cluster is empty (it is then a no-op on the device).
    """
    counts = res.counts
    empty = counts <= 0
    if sync and not bool(empty.any()):
        return res
    b, k = counts.shape
    n, d = X.shape[1], X.shape[2]
    K = min(k, n) if comm is None else k  # every process offers the same number of candidates
    dist = res.min_sq_dist.to(torch.float64)
    if sample_weight is not None:
        dist = dist.masked_fill(sample_weight <= 0, -torch.inf)
    if n < K:  # a shard smaller than k: pad with points that no process owns
        dist = torch.cat([dist, dist.new_full((b, K - n), -torch.inf)], 1)
    offset = 0 if comm is None else comm.offset
    vals, far = ordered_farthest(dist, K, offset)
    if comm is not None:
        far = torch.where(far < offset + n, far, torch.full_like(far, comm.n_total))
        vals, far = comm.merge_farthest(vals, far, K)
    slot = (torch.cumsum(empty, 1) - 1).clamp(0, K - 1)  # the j-th empty cluster takes the j-th far point
    point = far.gather(1, slot) - offset  # (b, k), a local index where this process owns the point
    take = empty & (point >= 0) & (point < n)
    point = point.clamp(0, n - 1)
    wf = torch.ones(b, k, dtype=res.sums.dtype, device=X.device)
    if sample_weight is not None:
        wf = sample_weight.gather(1, point).to(res.sums.dtype)
    wf = torch.where(take, wf, torch.zeros_like(wf))
    xw = torch.gather(X, 1, point.unsqueeze(-1).expand(b, k, d)).to(res.sums.dtype) * wf.unsqueeze(-1)
    old = res.labels.gather(1, point)
    give_sums = torch.zeros_like(res.sums).scatter_add_(1, old.unsqueeze(-1).expand(b, k, d), xw)
    give_counts = torch.zeros_like(counts).scatter_add_(1, old, wf)
    if comm is not None:  # the owner of each far point tells every process about it
        for t in (xw, wf, give_sums, give_counts):
            comm.sum_(t)
    sums = torch.where(empty.unsqueeze(-1), xw, res.sums - give_sums)
    counts = torch.where(empty, wf, counts - give_counts)
    return AssignUpdateResult(res.labels, res.min_sq_dist, sums, counts)


def centers_from(res: AssignUpdateResult, previous: torch.Tensor, spherical: bool = False) -> torch.Tensor:
    """New centers = sums / counts (scaled to unit norm when ``spherical``); an empty cluster keeps its center."""
    counts = res.counts.unsqueeze(-1)
    safe = torch.where(counts > 0, counts, torch.ones_like(counts))
    new = res.sums / safe
    if spherical:
        new = torch.nn.functional.normalize(new, dim=-1)
    return torch.where(counts > 0, new, previous).to(previous.dtype)


def lloyd(
    X: torch.Tensor,
    centers: torch.Tensor,
    sample_weight: torch.Tensor | None,
    *,
    max_iter: int,
    tol: torch.Tensor,
    mask: torch.Tensor | None = None,
    spherical: bool = False,
    sync: bool = True,
    comm: Any = None,
    backend: str = "auto",
    chunk_size: int | None = None,
    verbose: bool = False,
    algorithm: str = "lloyd",
) -> LloydResult:
    """Run Lloyd iterations until each problem converges or ``max_iter`` is reached.

    ``algorithm`` is "lloyd" (every pass computes every distance), "hamerly" (bounds skip most of them: see
    :mod:`pixelkm._hamerly`; one problem on the torch backend, host syncs, no mask, not spherical, not verbose) or
    "auto" (Hamerly where it applies and pays: on the CPU from :data:`pixelkm._hamerly.MIN_ROWS` rows, while its
    bounds fit in :func:`pixelkm._hamerly.memory_budget`).

    A problem converges when its labels stop changing, or when the squared shift of its centers summed
    over clusters is at most its ``tol`` (an absolute tolerance, shape (b,)). The final labels and inertia
    come from one last assignment pass against the final centers.

    ``mask`` (b, n) marks the points that belong to each problem: the others must have zero weight in
    ``sample_weight``, take no part in the convergence test and get label -1. With ``spherical``, X must hold
    unit rows: centers are scaled to unit norm after every update and the inertia is the sum of cosine
    distances 1 - cos = |x - c|^2 / 2. ``sync=False`` runs exactly ``max_iter`` steps with no host
    synchronization inside the loop (``n_iter`` still counts the steps each problem took before converging).
    With ``sync=True``, once at most half of the problems still step, the loop goes on with a copy of theirs
    only, so that a batch does not pay for its converged problems until the slowest one is done.
    """
    if verbose and not sync:
        raise ValueError("verbose printing reads values on the host: it needs sync=True")
    if use_bounds(
        algorithm, X, centers, mask=mask, spherical=spherical, sync=sync, comm=comm, backend=backend, verbose=verbose
    ):
        from ._hamerly import hamerly

        return hamerly(X, centers, sample_weight, max_iter=max_iter, tol=tol, backend=backend, chunk_size=chunk_size)
    b = X.shape[0]
    dev = X.device
    n_iter = torch.zeros(b, dtype=torch.int64, device=dev)
    out_centers = centers
    rows = torch.arange(b, device=dev)  # the problems still in the loop, as indices into the batch
    Xc, wc, mc, tolc = X, sample_weight, mask, tol
    active = torch.ones(b, dtype=torch.bool, device=dev)
    labels_old = None
    cache: dict = {}  # what the backend prepared from X in the first pass, for the next ones
    # Distances are needed only to refill empty clusters (rare: a pass without them, and again with them when
    # a cluster came out empty) and to print the inertia; without host syncs there is no second chance.
    distances = verbose or not sync
    for it in range(max_iter):
        bc = Xc.shape[0]
        res = _assign(Xc, centers, wc, comm, backend, chunk_size, cache, distances)
        if not sync:  # (then the pass has distances) a no-op on the device when no cluster is empty
            res = relocate_empty_clusters(res, Xc, wc, sync=False, comm=comm)
        elif bool((res.counts <= 0).any()):  # the one host check of the step for empty clusters
            if res.min_sq_dist is None:
                res = _assign(Xc, centers, wc, comm, backend, chunk_size, cache, True)
            res = relocate_empty_clusters(res, Xc, wc, sync=True, comm=comm)
        new_centers = centers_from(res, centers, spherical)
        shift = (new_centers - centers).double().square().sum((1, 2))
        labels = res.labels if mc is None else res.labels.masked_fill(~mc, -1)
        if labels_old is None:
            same = torch.zeros(bc, dtype=torch.bool, device=dev)
            labels_old = labels
        else:
            same = (labels == labels_old).all(1)
            if comm is not None:
                same = comm.all(same)
            # with host syncs every problem in the loop is active until it drops out: no select needed
            labels_old = labels if sync and bc == 1 else torch.where(active.unsqueeze(1), labels, labels_old)
        n_iter.index_add_(0, rows, active.to(torch.int64))
        centers = torch.where(active.view(bc, 1, 1), new_centers, centers)
        if verbose:
            inertia = _inertia(res, wc, spherical, comm)
            print(f"Iteration {it}: inertia {', '.join(f'{v:.6g}' for v in inertia.tolist())}")
        active = active & ~(same | (shift <= tolc))
        if not sync:
            continue
        n_active = int(active.sum())
        if n_active == 0:
            break
        if n_active <= bc // 2:  # most problems are done: keep stepping only the others (a copy of their data)
            out_centers = out_centers.index_copy(0, rows, centers)
            keep = torch.nonzero(active).flatten()
            rows, Xc, centers, tolc, labels_old = rows[keep], Xc[keep], centers[keep], tolc[keep], labels_old[keep]
            wc = None if wc is None else wc[keep]
            mc = None if mc is None else mc[keep]
            cache = {name: prepared.select(keep, Xc, wc) for name, prepared in cache.items()}
            active = active[keep]
    centers = out_centers.index_copy(0, rows, centers)
    # The last pass does not reuse the prepared data: its rounding must not depend on the batch-mates (a
    # problem's final labels and inertia are the same alone as in a batch, and an n_init pick with it).
    final = run_assign_update(X, centers, sample_weight, backend=backend, chunk_size=chunk_size)
    labels = final.labels if mask is None else final.labels.masked_fill(~mask, -1)
    return LloydResult(centers, labels, _inertia(final, sample_weight, spherical, comm), n_iter)


ALGORITHMS = ("auto", "lloyd", "hamerly")


def use_bounds(
    algorithm: str, X: torch.Tensor, centers: torch.Tensor, *, mask, spherical, sync, comm, backend, verbose
) -> bool:
    """Whether the Lloyd loop runs with Hamerly's bounds: "hamerly" asks for it (an error where it cannot run),
    "auto" takes it where it can run and pays, "lloyd" never."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "lloyd":
        return False
    from ._hamerly import BYTES_PER_ROW, MIN_ROWS, memory_budget
    from .backends import select_backend

    why = []
    if X.shape[0] != 1:
        why.append("it runs one problem at a time (not a batch)")
    if mask is not None or spherical or not sync or comm is not None or verbose:
        why.append("it needs no mask, no spherical k-means, host syncs, one process and verbose=False")
    # i12 hook (drop at merge, when the engine's bounds loop calls Backend.bounds): the Hamerly loop runs its own
    # torch passes, so auto's choice of the new "cpu" backend on the CPU must not switch it off
    if not why and select_backend(backend, X, centers).name not in ("torch", "cpu"):
        why.append("it runs on the torch backend (the auto choice here is another one)")
    if algorithm == "hamerly":
        if why:
            raise ValueError("algorithm='hamerly' cannot run here: " + "; ".join(why))
        return True
    if why or X.device.type != "cpu" or X.shape[1] < MIN_ROWS or centers.shape[1] < 2:
        return False
    return X.shape[1] * BYTES_PER_ROW <= memory_budget()


def _assign(
    X: torch.Tensor,
    centers: torch.Tensor,
    sample_weight: torch.Tensor | None,
    comm: Any,
    backend: str,
    chunk_size: int | None,
    cache: dict,
    distances: bool,
) -> AssignUpdateResult:
    """One assign-and-update pass; with ``comm``, sums and counts are summed over every process."""
    res = run_assign_update(
        X, centers, sample_weight, backend=backend, chunk_size=chunk_size, compute_distances=distances, cache=cache
    )
    if comm is not None:
        sums, counts = res.sums.double(), res.counts.double()
        comm.sum_(sums)
        comm.sum_(counts)
        res = AssignUpdateResult(res.labels, res.min_sq_dist, sums.to(res.sums.dtype), counts.to(res.counts.dtype))
    return res


def _inertia(res: AssignUpdateResult, sample_weight: torch.Tensor | None, spherical: bool, comm: Any) -> torch.Tensor:
    """(Weighted) sum of squared distances per problem, or of cosine distances when ``spherical``; float64."""
    inertia = res.inertia(sample_weight)
    if spherical:
        inertia = inertia / 2
    if comm is not None:
        comm.sum_(inertia)
    return inertia
