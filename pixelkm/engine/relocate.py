"""Empty clusters: each takes one of the points farthest from their centers, as scikit-learn does.

The candidates are the whole data (in memory, one process) or the k farthest rows of each process's pass
(:class:`Candidates`, a stream or a shard); over several processes, the candidates of every process are merged in
the order of one process holding all the rows, and every process refills the same way.
"""

from __future__ import annotations

import torch

from .._result import AssignUpdateResult
from .comm import LocalComm


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
    K = min(k, n)
    dist = res.min_sq_dist.to(torch.float64)
    if sample_weight is not None:
        dist = dist.masked_fill(sample_weight <= 0, -torch.inf)
    _, far = ordered_farthest(dist, K)
    slot = (torch.cumsum(empty, 1) - 1).clamp(0, K - 1)  # the j-th empty cluster takes the j-th far point
    point = far.gather(1, slot)  # (b, k)
    take = empty
    wf = torch.ones(b, k, dtype=res.sums.dtype, device=X.device)
    if sample_weight is not None:
        wf = sample_weight.gather(1, point).to(res.sums.dtype)
    wf = torch.where(take, wf, torch.zeros_like(wf))
    xw = torch.gather(X, 1, point.unsqueeze(-1).expand(b, k, d)).to(res.sums.dtype) * wf.unsqueeze(-1)
    old = res.labels.gather(1, point)
    give_sums = torch.zeros_like(res.sums).scatter_add_(1, old.unsqueeze(-1).expand(b, k, d), xw)
    give_counts = torch.zeros_like(counts).scatter_add_(1, old, wf)
    sums = torch.where(empty.unsqueeze(-1), xw, res.sums - give_sums)
    counts = torch.where(empty, wf, counts - give_counts)
    return AssignUpdateResult(res.labels, res.min_sq_dist, sums, counts)


class Candidates:
    """The k farthest rows seen by a streamed pass (farthest first, ties to the earlier row): values (m, d),
    squared distances (m,) float64, labels (m,), weights (m,); m <= k."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.x = self.dist = self.labels = self.w = None

    def add(self, x: torch.Tensor, dist: torch.Tensor, labels: torch.Tensor, w: torch.Tensor | None, dtype) -> None:
        """Offer the rows of one chunk: x (r, d), their squared distances (r,) float64 and labels (r,)."""
        if w is not None:  # a row of zero weight never refills an empty cluster
            dist = dist.masked_fill(w <= 0, -torch.inf)
        cd, idx = ordered_farthest(dist.unsqueeze(0), min(self.k, dist.numel()))
        cd, idx = cd[0], idx[0]
        cx, cl = x[idx].to(dtype), labels[idx]
        cw = torch.ones_like(cd, dtype=dtype) if w is None else w[idx].to(dtype)
        self._keep(cx, cd, cl, cw)

    def _keep(self, cx, cd, cl, cw) -> None:
        if self.x is not None:
            cx, cd, cl, cw = (torch.cat(p) for p in ((self.x, cx), (self.dist, cd), (self.labels, cl), (self.w, cw)))
        keep = torch.sort(cd, descending=True, stable=True).indices[: self.k]  # ties: the earlier row first
        self.x, self.dist, self.labels, self.w = cx[keep], cd[keep], cl[keep], cw[keep]

    def merged(self, comm: LocalComm) -> Candidates:
        """The candidates of every process, as those of one pass over all their rows in rank order."""
        if comm.is_local:
            return self
        m, k = self.dist.numel(), self.k
        pad = k - m  # every process sends k rows; the padding has distance -inf and weight 0
        x = torch.cat([self.x, self.x.new_zeros(pad, self.x.shape[1])])
        dist = torch.cat([self.dist, self.dist.new_full((pad,), -torch.inf)])
        labels = torch.cat([self.labels, self.labels.new_zeros(pad)])
        w = torch.cat([self.w, self.w.new_zeros(pad)])
        out = Candidates(k)
        out._keep(*(torch.cat(comm.all_gather(t)) for t in (x, dist, labels, w)))
        return out

    def relocate(self, res: AssignUpdateResult, weighted: bool, sync: bool = True) -> AssignUpdateResult:
        """Refill the empty clusters of ``res`` (sums (1, k, d), counts (1, k)) from these rows; labels and
        distances stay those of ``res``."""
        r = AssignUpdateResult(self.labels.unsqueeze(0), self.dist.unsqueeze(0), res.sums, res.counts)
        out = relocate_empty_clusters(r, self.x.unsqueeze(0), self.w.unsqueeze(0) if weighted else None, sync=sync)
        return AssignUpdateResult(res.labels, res.min_sq_dist, out.sums, out.counts)
