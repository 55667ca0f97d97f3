"""The batched Lloyd loop around ``assign_update``: center update, empty clusters, convergence.

Every function here takes b independent problems at once: X (b, n, d), centers (b, k, d),
sample_weight (b, n) or None. Each problem converges on its own; converged problems keep their centers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._result import AssignUpdateResult
from .ops import run_assign_update


@dataclass
class LloydResult:
    centers: torch.Tensor  # (b, k, d)
    labels: torch.Tensor  # (b, n) int64
    inertia: torch.Tensor  # (b,) float64
    n_iter: torch.Tensor  # (b,) int64


def mean_feature_variance(X: torch.Tensor, rows: int = 1 << 18) -> torch.Tensor:
    """Mean over features of each feature's (unweighted) variance, per problem: shape (b,), float64.

    Two chunked passes in float64, so that no float copy of X is made.
    """
    b, n, d = X.shape
    total = torch.zeros(b, d, dtype=torch.float64, device=X.device)
    for start in range(0, n, rows):
        total += X[:, start : start + rows].double().sum(1)
    mean = (total / n).unsqueeze(1)
    sq = torch.zeros(b, d, dtype=torch.float64, device=X.device)
    for start in range(0, n, rows):
        sq += (X[:, start : start + rows].double() - mean).square_().sum(1)
    return (sq / n).mean(1)


def relocate_empty_clusters(
    res: AssignUpdateResult, X: torch.Tensor, sample_weight: torch.Tensor | None
) -> AssignUpdateResult:
    """Move every empty cluster onto the points farthest from their centers (as scikit-learn does).

    ``res`` must hold labels and min_sq_dist. Each empty cluster takes one far point (farthest first,
    ties to the lowest index; zero-weight points are never taken): that point's weight and value leave its
    old cluster's sums and counts and become the empty cluster's. Returns a result with updated sums/counts.
    """
    counts = res.counts
    empty = counts <= 0
    if not bool(empty.any()):
        return res
    sums = res.sums.clone()
    counts = counts.clone()
    for bi in torch.nonzero(empty.any(1)).flatten().tolist():
        empty_ids = torch.nonzero(empty[bi]).flatten()
        dist = res.min_sq_dist[bi].to(torch.float64)
        if sample_weight is not None:
            dist = dist.masked_fill(sample_weight[bi] <= 0, -torch.inf)
        order = torch.sort(dist, descending=True, stable=True).indices
        far = order[: empty_ids.numel()]
        empty_ids = empty_ids[: far.numel()]
        wf = torch.ones_like(far, dtype=sums.dtype) if sample_weight is None else sample_weight[bi, far].to(sums.dtype)
        xw = X[bi, far].to(sums.dtype) * wf.unsqueeze(1)
        old = res.labels[bi, far]
        sums[bi].index_add_(0, old, -xw)
        counts[bi].index_add_(0, old, -wf)
        sums[bi, empty_ids] = xw
        counts[bi, empty_ids] = wf
    return AssignUpdateResult(res.labels, res.min_sq_dist, sums, counts)


def centers_from(res: AssignUpdateResult, previous: torch.Tensor) -> torch.Tensor:
    """New centers = sums / counts; a cluster left with no weight keeps its previous center."""
    counts = res.counts.unsqueeze(-1)
    safe = torch.where(counts > 0, counts, torch.ones_like(counts))
    return torch.where(counts > 0, res.sums / safe, previous).to(previous.dtype)


def lloyd(
    X: torch.Tensor,
    centers: torch.Tensor,
    sample_weight: torch.Tensor | None,
    *,
    max_iter: int,
    tol: torch.Tensor,
    backend: str = "auto",
    chunk_size: int | None = None,
    verbose: bool = False,
) -> LloydResult:
    """Run Lloyd iterations until each problem converges or ``max_iter`` is reached.

    A problem converges when its labels stop changing, or when the squared shift of its centers summed
    over clusters is at most its ``tol`` (an absolute tolerance, shape (b,)). The final labels and inertia
    come from one last assignment pass against the final centers.
    """
    b = X.shape[0]
    dev = X.device
    active = torch.ones(b, dtype=torch.bool, device=dev)
    n_iter = torch.zeros(b, dtype=torch.int64, device=dev)
    labels_old = None
    for it in range(max_iter):
        res = run_assign_update(X, centers, sample_weight, backend=backend, chunk_size=chunk_size)
        res = relocate_empty_clusters(res, X, sample_weight)
        new_centers = centers_from(res, centers)
        shift = (new_centers - centers).double().square().sum((1, 2))
        if labels_old is None:
            same = torch.zeros(b, dtype=torch.bool, device=dev)
            labels_old = res.labels.clone()
        else:
            same = (res.labels == labels_old).all(1)
            labels_old = torch.where(active.unsqueeze(1), res.labels, labels_old)
        n_iter += active
        centers = torch.where(active.view(b, 1, 1), new_centers, centers)
        if verbose:
            inertia = ", ".join(f"{v:.6g}" for v in res.inertia(sample_weight).tolist())
            print(f"Iteration {it}: inertia {inertia}")
        active &= ~(same | (shift <= tol))
        if not bool(active.any()):
            break
    final = run_assign_update(X, centers, sample_weight, backend=backend, chunk_size=chunk_size)
    return LloydResult(centers, final.labels, final.inertia(sample_weight), n_iter)
