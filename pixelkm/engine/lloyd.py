"""The one Lloyd loop, under every entry point (``KMeans``, ``kmeans``, ``fit_stream``, ``distributed``, ``nn``).

It is parameterised, as faiss's ``Clustering::train`` is, by

- a **source** (:mod:`pixelkm.engine.sources`): in-memory problems in a batch, with masks, or a stream of
  chunks with weights. A source makes one pass (sums and counts, summed over the processes), refills empty
  clusters, and gives the final labels and inertia;
- a **communicator** (:mod:`pixelkm.engine.comm`): a single process, or ``torch.distributed`` ranks that each
  hold a shard of the rows;
- a **pass strategy**: full passes, or a bounded state (:class:`pixelkm.backends.Bounds`, the torch one in
  :mod:`pixelkm.engine.bounds`) that assigns exactly as a full pass while skipping most distances.

The loop owns what every fit shares, once: the restarts (``n_init``) and the pick of the best, the refill of
empty clusters, the convergence rule (the squared shift of the centers at most ``tol``, as scikit-learn, or no
label change) and the verbose print-out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .._validation import labels_present, warn_fewer_clusters
from ..ops.distance import unit_rows
from .comm import LocalComm


@dataclass
class LloydResult:
    centers: torch.Tensor  # (b, k, d)
    labels: torch.Tensor | None  # (b, n) int64, -1 where the mask is False; None for a stream
    inertia: torch.Tensor  # (b,) float64
    n_iter: torch.Tensor  # (b,) int64
    counts: torch.Tensor | None = None  # (b, k): the final pass's counts, where it tells which labels are used


def centers_from(
    sums: torch.Tensor, counts: torch.Tensor, previous: torch.Tensor, spherical: bool = False
) -> torch.Tensor:
    """New centers = sums / counts (scaled to unit norm when ``spherical``); an empty cluster keeps its center."""
    counts = counts.unsqueeze(-1)
    safe = torch.where(counts > 0, counts, torch.ones_like(counts))
    new = sums / safe
    if spherical:
        new = unit_rows(new)
    return torch.where(counts > 0, new, previous).to(previous.dtype)


def same_clustering(labels1: torch.Tensor, labels2: torch.Tensor, k: int) -> torch.Tensor:
    """Per problem (b,), whether labels (b, n) of two runs make the same partition, up to renaming the clusters
    (labels -1, masked-out points, are equal in both)."""
    a, b = labels1 + 1, labels2 + 1  # -1 -> 0: masked-out points form one more "cluster"
    mapping = torch.zeros(a.shape[0], k + 1, dtype=a.dtype, device=a.device).scatter_(1, a, b)
    return (mapping.gather(1, a) == b).all(1)


def _print(it: int, inertia: torch.Tensor, shift: torch.Tensor) -> None:
    values = ", ".join(f"{v:.6g}" for v in inertia.tolist())
    shifts = ", ".join(f"{v:.3g}" for v in shift.tolist())
    print(f"Iteration {it}: inertia {values}, center shift {shifts}")


def lloyd(
    source: Any,
    centers: torch.Tensor,
    *,
    max_iter: int,
    tol: torch.Tensor,
    spherical: bool = False,
    sync: bool = True,
    verbose: bool = False,
    bounds: Any = None,
) -> LloydResult:
    """Lloyd iterations of every problem of ``source`` from ``centers`` (b, k, d), until each converges or
    ``max_iter`` steps are taken.

    A problem converges when its labels stop changing (sources that keep labels), or when the squared shift of
    its centers summed over clusters is at most its ``tol`` (an absolute tolerance, shape (b,)). The final labels
    and inertia come from one last pass against the final centers. With ``spherical`` the data holds unit rows:
    centers are scaled to unit norm after every update and the inertia is the sum of cosine distances
    1 - cos = |x - c|^2 / 2. ``sync=False`` runs exactly ``max_iter`` steps with no host synchronization inside
    the loop (``n_iter`` still counts the steps each problem took before converging). With ``sync=True``, once at
    most half of the problems still step, the loop goes on with those only (``source.select``), so that a batch
    does not pay for its converged problems until the slowest one is done. ``bounds`` is a bounded pass strategy
    (:class:`pixelkm.backends.Bounds`) for a single problem, used instead of full passes.
    """
    if verbose and not sync:
        raise ValueError("verbose printing reads values on the host: it needs sync=True")
    if bounds is not None:
        return _lloyd_bounded(source, centers, bounds, max_iter=max_iter, tol=tol, verbose=verbose)
    comm: LocalComm = source.comm
    b = centers.shape[0]
    dev = centers.device
    n_iter = torch.zeros(b, dtype=torch.int64, device=dev)
    out_centers = centers
    rows = torch.arange(b, device=dev)  # the problems still in the loop, as indices into the batch
    src, tolc = source, tol
    active = torch.ones(b, dtype=torch.bool, device=dev)
    labels_old = None
    spare = None  # with one problem and host syncs: the labels of two passes ago, written over by the next pass
    # Distances are needed only to refill empty clusters (rare: a pass without them, and again with them when
    # a cluster came out empty) and to print the inertia; without host syncs there is no second chance.
    distances = verbose or not sync
    for it in range(max_iter):
        bc = centers.shape[0]
        changed = None
        if sync and bc == 1 and labels_old is not None and hasattr(src, "assign_tracked"):
            # the backend may count the changed labels as it writes them (into the spare buffer): no comparison
            res, changed = src.assign_tracked(centers, distances, labels_old, spare)
        else:
            res = src.assign(centers, distances)
        if not sync:  # (then the pass has distances) a no-op on the device when no cluster is empty
            res = src.refill(res, centers, sync=False)
        elif bool((res.counts <= 0).any()):  # the one host check of the step for empty clusters
            res = src.refill(res, centers, sync=True)
            changed = None  # the refill's labels: compare them
        new_centers = centers_from(res.sums, res.counts, centers, spherical)
        shift = (new_centers - centers).double().square().sum((1, 2))
        labels = src.labels(res)
        same = torch.zeros(bc, dtype=torch.bool, device=dev)
        if labels is not None and labels_old is None:
            labels_old = labels
        elif labels is not None:
            same = comm.all(changed == 0 if changed is not None else (labels == labels_old).all(1))
            # with host syncs every problem in the loop is active until it drops out: no select needed
            if sync and bc == 1:
                spare, labels_old = (labels_old if labels_old is not labels else None), labels
            else:
                labels_old = torch.where(active.unsqueeze(1), labels, labels_old)
        n_iter.index_add_(0, rows, active.to(torch.int64))
        centers = torch.where(active.view(bc, 1, 1), new_centers, centers)
        if verbose:
            _print(it, src.inertia(res, spherical), shift)
        active = active & ~(same | (shift <= tolc))
        if not sync:
            continue
        n_active = int(active.sum())
        if n_active == 0:
            break
        if n_active <= bc // 2:  # most problems are done: keep stepping only the others (a copy of their data)
            out_centers = out_centers.index_copy(0, rows, centers)
            keep = torch.nonzero(active).flatten()
            rows, centers, tolc = rows[keep], centers[keep], tolc[keep]
            labels_old = None if labels_old is None else labels_old[keep]
            src = src.select(keep)
            active = active[keep]
    centers = out_centers.index_copy(0, rows, centers)
    labels, inertia = source.final(centers, spherical)
    return LloydResult(centers, labels, inertia, n_iter, _used_counts(source))


def _lloyd_bounded(
    source: Any, centers: torch.Tensor, state: Any, *, max_iter: int, tol: torch.Tensor, verbose: bool
) -> LloydResult:
    """The loop of one problem with a bounded pass strategy: ``state.step`` instead of full passes; an empty
    cluster costs one full pass with distances, the refill, and ``state.invalidate()``."""
    cdt = centers.dtype
    n_iter = 0
    for it in range(max_iter):
        _, sums, counts, n_changed = state.step(centers[0])
        sums, counts = sums.to(cdt).unsqueeze(0), counts.to(cdt).unsqueeze(0)
        if bool((counts <= 0).any()):  # refill from the farthest points; their move is in the sums, not the labels
            res = source.refill(source.assign(centers, True), centers, sync=True)
            sums, counts = res.sums, res.counts  # (convergence still by the labels of the pass, as full passes)
            state.invalidate()
        # the centers exactly as a full pass gives them: its sums and counts rounded to the compute dtype
        new_centers = centers_from(sums, counts, centers)
        shift = (new_centers - centers).double().square().sum((1, 2))
        n_iter += 1
        centers = new_centers
        if verbose:
            print(f"Iteration {it}: {n_changed} labels changed, center shift {float(shift[0]):.3g}")
        if n_changed == 0 or shift[0] <= tol[0]:
            break
    # a state that can give the final pass's result (labels, distances, sums, counts) from its bounds does
    final = getattr(state, "final", None)
    if final is None:
        labels, inertia = source.final(centers, False)
    else:
        labels, inertia = source.final_from(final(centers[0]), False)
    n_iters = torch.full((1,), n_iter, dtype=torch.int64, device=centers.device)
    return LloydResult(centers, labels, inertia, n_iters, _used_counts(source))


def _used_counts(source: Any) -> torch.Tensor | None:
    """The final pass's counts when they say which clusters the labels use (no weights: every point counts 1), or
    None (weighted points, a zero weight among them, or a source without labels)."""
    return getattr(source, "final_counts", None) if getattr(source, "w", True) is None else None


def fit(
    source: Any,
    initial: Callable[[], torch.Tensor],
    *,
    n_init: int,
    max_iter: int,
    tol: torch.Tensor,
    spherical: bool = False,
    sync: bool = True,
    verbose: bool = False,
    bounds: Callable[[torch.Tensor], Any] | None = None,
) -> LloydResult:
    """``n_init`` runs of :func:`lloyd`, each from ``initial()`` (centers (b, k, d)), keeping per problem the run
    of lowest inertia. As scikit-learn: a run that found the same clustering (up to the order of the labels) is
    not taken, whatever the rounding of its inertia, so that the pick does not hang on the last bit. ``bounds``
    gives the bounded state of a run from its initial centers (None: full passes)."""
    comm: LocalComm = source.comm
    best = None
    for run in range(n_init):
        centers = initial()
        state = None if bounds is None else bounds(centers)
        res = lloyd(
            source, centers, max_iter=max_iter, tol=tol, spherical=spherical, sync=sync, verbose=verbose, bounds=state
        )
        if verbose and n_init > 1:
            print(f"Initialization {run}: inertia {', '.join(f'{v:.6g}' for v in res.inertia.tolist())}")
        if best is None:
            best = res
            continue
        better = res.inertia < best.inertia
        if res.labels is not None:
            better &= ~comm.all(same_clustering(res.labels, best.labels, res.centers.shape[1]))
        b = better.shape[0]
        best.centers = torch.where(better.view(b, 1, 1), res.centers, best.centers)
        if res.labels is not None:
            best.labels = torch.where(better.view(b, 1), res.labels, best.labels)
        best.inertia = torch.where(better, res.inertia, best.inertia)
        best.n_iter = torch.where(better, res.n_iter, best.n_iter)
        if best.counts is not None and res.counts is not None:
            best.counts = torch.where(better.view(b, 1), res.counts, best.counts)
    if sync and best.labels is not None:  # as scikit-learn: fewer distinct clusters than asked is worth a warning
        k = best.centers.shape[1]
        # (a scatter over every label otherwise: a few ms per million points)
        present = (best.counts > 0 if best.counts is not None else labels_present(best.labels, k)).to(torch.float64)
        comm.sum_(present)  # clusters used on any process
        warn_fewer_clusters(present > 0, k, stacklevel=5)
    return best
