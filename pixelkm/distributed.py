"""K-means over data sharded across processes, with ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

Every process (rank) holds its own rows of the data. The initialization is coordinated: k-means++ (or random
points) runs on rank 0 over a sample gathered from every rank, the whole data when it is small enough, and the
centers are broadcast. Each Lloyd step then all-reduces the per-cluster sums and counts, the convergence test
and, at the end, the inertia; an empty cluster takes the globally farthest point, found by gathering each
rank's farthest candidates. Every rank ends with the same centers, those of a single-process fit on the
concatenated data (rank 0's rows first) from the same initial centers.

Run it under ``torchrun``::

    torchrun --nproc_per_node 4 train.py   # in train.py: torch.distributed.init_process_group("nccl")
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from . import _init
from ._kmeans import _check_params, initial_centers
from ._lloyd import lloyd, mean_feature_variance
from ._validation import (
    as_tensor,
    check_data,
    compute_dtype,
    labels_present,
    resolve_generator,
    to_output,
    warn_fewer_clusters,
)

__all__ = ["kmeans"]


class _Comm:
    """What the Lloyd loop needs from the process group; collectives only, no host synchronization."""

    def __init__(self, group: Any, offset: int, n_total: int) -> None:
        self.group = group
        self.offset = offset
        self.n_total = n_total
        self.world = dist.get_world_size(group)

    def sum_(self, t: torch.Tensor) -> None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)

    def all(self, flags: torch.Tensor) -> torch.Tensor:
        t = flags.to(torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.group)
        return t.bool()

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t.contiguous(), group=self.group)
        return out

    def merge_farthest(self, vals: torch.Tensor, far: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The global first K of every rank's first K candidates, in the order (distance desc, global index asc)."""
        v = torch.cat(self.all_gather(vals), 1)
        i = torch.cat(self.all_gather(far), 1)
        order = torch.argsort(i, dim=1)
        v, i = v.gather(1, order), i.gather(1, order)
        order = torch.argsort(v, dim=1, descending=True, stable=True)[:, :K]
        return v.gather(1, order), i.gather(1, order)


def _agree(error: Exception | None, group: Any, device: torch.device) -> None:
    """Raise on every rank when a check failed on any rank (instead of leaving the others in a collective)."""
    failed = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=device)
    dist.all_reduce(failed, op=dist.ReduceOp.MAX, group=group)
    if error is not None:
        raise error
    if int(failed.item()):
        raise RuntimeError("pixelkm.distributed.kmeans: the input check failed on another rank (see its error)")


def _src(group: Any) -> int:
    """The global rank of the group's rank 0."""
    return 0 if group is None else dist.get_global_rank(group, 0)


def kmeans(
    X: Any,
    n_clusters: int,
    *,
    sample_weight: Any = None,
    init: Any = "k-means++",
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: Any = None,
    spherical: bool = False,
    init_sample_size: int | None = None,
    fixed_iterations: bool = False,
    backend: str = "auto",
    group: Any = None,
) -> tuple[Any, Any, Any]:
    """K-means of the rows of every rank together; call it on every rank of ``group`` with that rank's rows.

    Parameters
    ----------
    X : array-like or tensor of shape (n_local_samples, n_features)
        This rank's rows (at least one), on the device the process group communicates on (CUDA for NCCL).
    n_clusters, init, max_iter, tol, spherical, backend
        As in :func:`pixelkm.kmeans`; an explicit ``init`` is taken from rank 0.
    sample_weight : array-like or tensor of shape (n_local_samples,), optional
    random_state : None, int or torch.Generator
        Seed of the initialization, read on rank 0 (each rank's sample draws from rank 0's seed plus one plus
        its rank). With the whole data gathered, the initial centers are those of
        ``pixelkm.kmeans(concatenated_X, n_clusters, random_state=random_state)``.
    init_sample_size : int, optional
        Rows gathered on rank 0 for k-means++ or random init, drawn from each rank in proportion to its rows;
        by default max(65536, 64 * n_clusters). When the data has at most this many rows, all of it is
        gathered, in rank order.
    fixed_iterations : bool, default=False
        Exactly ``max_iter`` steps with no host synchronization in the loop (see :class:`pixelkm.nn.KMeans`);
        the inertia is then returned as a 0-d tensor.
    group : torch.distributed.ProcessGroup, optional
        The process group; by default the world.

    Returns
    -------
    centers : (n_clusters, n_features), the same on every rank
    labels : (n_local_samples,) int64, this rank's labels
    inertia : float, over all ranks
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("pixelkm.distributed.kmeans needs torch.distributed.init_process_group() first")
    Xt, was_tensor = as_tensor(X, "X")
    dev = Xt.device
    rank = dist.get_rank(group)
    cdt = compute_dtype(Xt.dtype)
    error, w = None, None
    try:
        check_data(Xt, "X", ndims=(2,), finite=not fixed_iterations)
        if sample_weight is not None:
            w = as_tensor(sample_weight, "sample_weight")[0].to(device=dev, dtype=cdt)
            if tuple(w.shape) != (Xt.shape[0],):
                raise ValueError(f"sample_weight must have shape {(Xt.shape[0],)} to match X, got {tuple(w.shape)}")
            if not fixed_iterations and not bool((torch.isfinite(w) & (w >= 0)).all()):
                raise ValueError("sample_weight must be finite and non-negative")
    except (ValueError, TypeError) as exc:
        error = exc
    _agree(error, group, dev)

    sizes = torch.cat(_Comm(group, 0, 0).all_gather(torch.tensor([Xt.shape[0], Xt.shape[1]], device=dev)))
    sizes = sizes.view(-1, 2).tolist()  # once, before the loop
    if len({s[1] for s in sizes}) != 1:
        raise ValueError(f"every rank must hold the same number of features; got {[s[1] for s in sizes]}")
    n_local = [s[0] for s in sizes]
    offset, n_total = sum(n_local[:rank]), sum(n_local)
    p = _check_params(
        {"n_clusters": n_clusters, "init": init, "n_init": 1, "max_iter": max_iter, "tol": tol, "backend": backend},
        n_total,
    )
    comm = _Comm(group, offset, n_total)

    Xb = Xt.unsqueeze(0)
    if spherical:
        Xb = torch.nn.functional.normalize(Xb.to(cdt), dim=-1)
    wb = None if w is None else w.unsqueeze(0)
    if not isinstance(p["init"], str):
        centers = initial_centers(Xb, None, p["n_clusters"], p["init"], None, spherical, finite=not fixed_iterations)
    else:
        centers = _sampled_init(Xb, wb, p["n_clusters"], p["init"], random_state, init_sample_size, n_local, comm)
    dist.broadcast(centers, src=_src(group), group=group)
    abs_tol = mean_feature_variance(Xb, comm=comm) * p["tol"]
    res = lloyd(
        Xb,
        centers,
        wb,
        max_iter=p["max_iter"],
        tol=abs_tol,
        spherical=spherical,
        sync=not fixed_iterations,
        comm=comm,
        backend=p["backend"],
    )
    inertia = res.inertia[0] if fixed_iterations else float(res.inertia[0])
    if not fixed_iterations:  # clusters used on any rank
        present = labels_present(res.labels, p["n_clusters"]).to(torch.float64)
        comm.sum_(present)
        warn_fewer_clusters(present > 0, p["n_clusters"])
    return to_output(res.centers[0], was_tensor), to_output(res.labels[0], was_tensor), inertia


def _sampled_init(
    X: torch.Tensor,
    w: torch.Tensor | None,
    n_clusters: int,
    init: str,
    random_state: Any,
    sample_size: int | None,
    n_local: list[int],
    comm: _Comm,
) -> torch.Tensor:
    """k-means++ or random init on rank 0 over rows gathered from every rank: centers (1, k, d) on every rank
    (valid on rank 0, to be broadcast)."""
    group, dev = comm.group, X.device
    rank = dist.get_rank(group)
    _, n, d = X.shape
    gen = resolve_generator(random_state)
    seed = torch.tensor([gen.initial_seed() % 2**63], dtype=torch.int64, device=dev)
    dist.broadcast(seed, src=_src(group), group=group)
    size = sample_size or max(1 << 16, 64 * n_clusters)
    if comm.n_total <= size:
        take = torch.arange(n, device=dev)
        counts = n_local
    else:
        counts = [max(1, round(size * m / comm.n_total)) for m in n_local]
        local_gen = torch.Generator().manual_seed((int(seed) + 1 + rank) % 2**64)
        take = torch.randperm(n, generator=local_gen)[: counts[rank]].to(dev)
    if sum(counts) < n_clusters:
        raise ValueError(f"init_sample_size={size} gathers {sum(counts)} rows, fewer than n_clusters={n_clusters}")
    m_max = max(counts)
    rows = torch.zeros(m_max, d, dtype=X.dtype, device=dev)
    rows[: take.numel()] = X[0, take]
    weights = torch.zeros(m_max, dtype=compute_dtype(X.dtype), device=dev)
    weights[: take.numel()] = 1.0 if w is None else w[0, take]
    if rank == 0:
        all_rows = [torch.empty_like(rows) for _ in range(comm.world)]
        all_weights = [torch.empty_like(weights) for _ in range(comm.world)]
    else:
        all_rows = all_weights = None
    dist.gather(rows, all_rows, dst=_src(group), group=group)
    dist.gather(weights, all_weights, dst=_src(group), group=group)
    if rank != 0:
        return torch.empty(1, n_clusters, d, dtype=compute_dtype(X.dtype), device=dev)
    sample = torch.cat([r[:c] for r, c in zip(all_rows, counts)]).unsqueeze(0)
    sw = None if w is None else torch.cat([s[:c] for s, c in zip(all_weights, counts)]).unsqueeze(0)
    return initial_centers(sample, sw, n_clusters, init, _init.ProblemRNG([gen]), spherical=False).contiguous()
