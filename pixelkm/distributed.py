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

from ._validation import (
    as_tensor,
    check_data,
    compute_dtype,
    resolve_generator,
    to_output,
)
from .engine import init as _init
from .engine.batched import fit_batched, initial_centers
from .engine.comm import DistComm
from .estimators.base import fit_params

__all__ = ["fit_stream", "kmeans"]


def _require_process_group(what: str) -> None:
    import torch.distributed as dist  # imported here: ``import pixelkm`` does not load torch.distributed

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"pixelkm.distributed.{what} needs torch.distributed.init_process_group() first")


def kmeans(
    X: Any,
    n_clusters: int,
    *,
    sample_weight: Any = None,
    init: Any = "k-means++",
    n_init: int | str = 1,
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
    n_clusters, init, n_init, max_iter, tol, spherical, backend
        As in :func:`pixelkm.kmeans`; an explicit ``init`` is taken from rank 0. Each of the ``n_init`` runs
        draws its own initialization; every rank keeps the run of lowest total inertia.
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
    _require_process_group("kmeans")
    Xt, was_tensor = as_tensor(X, "X")
    dev = Xt.device
    cdt = compute_dtype(Xt.dtype)
    comm = DistComm(group)
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
    comm.agree(error, "pixelkm.distributed.kmeans")
    n_local = comm.agree_data("pixelkm.distributed.kmeans", Xt.shape[0], Xt.shape[1], Xt.dtype)  # once, before the loop
    n_total = sum(n_local)
    params = {"n_clusters": n_clusters, "init": init, "n_init": n_init, "max_iter": max_iter, "tol": tol}
    params.update(backend=backend, random_state=random_state, spherical=spherical, fixed_iterations=fixed_iterations)
    p = fit_params({**params, "init_sample_size": init_sample_size}, n_total)

    gen = resolve_generator(p["random_state"]) if isinstance(p["init"], str) else None

    def initial(Xb: torch.Tensor, wb: torch.Tensor | None) -> torch.Tensor:  # (unit rows when spherical)
        if isinstance(p["init"], str):
            centers = _sampled_init(Xb, wb, p["n_clusters"], p["init"], gen, init_sample_size, n_local, comm)
        else:
            centers = initial_centers(
                Xb, None, p["n_clusters"], p["init"], None, spherical, finite=not fixed_iterations
            )
        comm.broadcast_(centers)
        return centers

    res = fit_batched(
        Xt.unsqueeze(0),
        None if w is None else w.unsqueeze(0),
        n_clusters=p["n_clusters"],
        init=p["init"],
        n_init=p["n_init"],
        max_iter=p["max_iter"],
        tol=p["tol"],
        generator=None,
        backend=p["backend"],
        spherical=bool(spherical),
        sync=not fixed_iterations,
        algorithm="lloyd",
        comm=comm,
        initial=initial,
    )
    inertia = res.inertia[0] if fixed_iterations else float(res.inertia[0])
    return to_output(res.centers[0], was_tensor), to_output(res.labels[0], was_tensor), inertia


def _sampled_init(
    X: torch.Tensor,
    w: torch.Tensor | None,
    n_clusters: int,
    init: str,
    gen: torch.Generator,
    sample_size: int | None,
    n_local: list[int],
    comm: DistComm,
) -> torch.Tensor:
    """k-means++ or random init on rank 0 over rows gathered from every rank: centers (1, k, d) on every rank
    (valid on rank 0, to be broadcast)."""
    dist, group, dev = comm.dist, comm.group, X.device
    rank, n_total = comm.rank, sum(n_local)
    _, n, d = X.shape
    seed = torch.tensor([gen.initial_seed() % 2**63], dtype=torch.int64, device=dev)
    comm.broadcast_(seed)
    size = sample_size or max(1 << 16, 64 * n_clusters)
    if n_total <= size:
        take = torch.arange(n, device=dev)
        counts = n_local
    else:
        counts = [max(1, round(size * m / n_total)) for m in n_local]
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
    dist.gather(rows, all_rows, dst=comm.src, group=group)
    dist.gather(weights, all_weights, dst=comm.src, group=group)
    if rank != 0:
        return torch.empty(1, n_clusters, d, dtype=compute_dtype(X.dtype), device=dev)
    sample = torch.cat([r[:c] for r, c in zip(all_rows, counts)]).unsqueeze(0)
    sw = None if w is None else torch.cat([s[:c] for s, c in zip(all_weights, counts)]).unsqueeze(0)
    return initial_centers(sample, sw, n_clusters, init, _init.ProblemRNG([gen]), spherical=False).contiguous()


def fit_stream(
    data: Any,
    n_clusters: int,
    *,
    sample_weight: Any = None,
    init: Any = "k-means++",
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: Any = None,
    coreset_size: int | None = None,
    backend: str = "auto",
    device: str | torch.device | None = None,
    max_device_memory: int | None = None,
    chunk_rows: int | None = None,
    progress: bool = False,
    verbose: bool = False,
    group: Any = None,
) -> Any:
    """:func:`pixelkm.fit_stream` with each rank streaming its own shard; call it on every rank of ``group``.

    ``data`` and ``sample_weight`` are this rank's rows, as :func:`pixelkm.fit_stream` takes them (arrays,
    memmaps, ``.npy`` or image files, lists or callables of chunks). Every pass sums the per-cluster sums,
    counts and inertia over the ranks, and an empty cluster takes the globally farthest row (each rank's k
    farthest candidates are gathered): every rank ends with the centers of one streamed fit over all the shards
    in rank order from the same initial centers. A string ``init`` runs on rank 0's seed over a lightweight
    coreset to which every rank contributes its part (drawn against the moments of all the rows). The fit
    streams Lloyd passes (no histogram reduction). Returns a :class:`pixelkm.estimators.stream.StreamFit` on
    every rank (``n_passes`` counts this rank's passes).

    Every rank must hold at least one row, of the same number of features and dtype as the others: otherwise,
    or when a check fails on a rank in any pass (a NaN, a negative weight, a source that cannot be read), every
    rank raises a ValueError that names the rank, as :func:`kmeans` does (the failed rank raises its own error).
    Each collective of the fit is preceded by that agreement (a 4-byte all-reduce).
    """
    options = dict(locals())
    group = options.pop("group")
    _require_process_group("fit_stream")
    from .estimators.stream import stream_fit
    from .io.pipeline import as_source

    what = "pixelkm.distributed.fit_stream"
    comm = DistComm(group)
    comm.check_collectives(what)  # a rank that fails in a pass (its source, a NaN, a weight) tells the others
    try:
        source = options["data"] = as_source(data)
        comm.agree_data(what, source.n_samples, source.n_features, source.dtype)
        return stream_fit(**options, reduce=False, comm=comm)
    except Exception as exc:
        comm.failed(exc)
        raise
