"""Fits of in-memory problems: initial centers, the tolerance, the pass strategy, and the loop with restarts.

``fit_batched`` is what ``KMeans``, ``kmeans``, ``nn.KMeans``, ``distributed.kmeans`` and the histogram path of
``fit_stream`` call: b problems X (b, n, d) on one device (a shard of them per process with a distributed
communicator).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from .._validation import compute_dtype, resolve_generator
from ..backends import select_backend
from ..ops.distance import unit_rows
from . import init as _init
from .bounds import bounded_state
from .comm import LOCAL, LocalComm
from .init_scalable import kmeans_parallel
from .lloyd import LloydResult, fit
from .sources import BatchSource, mean_feature_variance


def problem_rng(random_state: Any, b: int) -> _init.ProblemRNG:
    """The random numbers of b problems, such that problem i of a batch draws what a single fit would draw.

    An int seed ``s`` (or a seed drawn from None or a NumPy generator) gives problem i the seed ``s + i``; a
    sequence of b seeds or generators gives one to each problem; one ``torch.Generator`` is shared by the batch
    and drawn problem after problem.
    """
    if isinstance(random_state, (list, tuple)):
        if len(random_state) != b:
            raise ValueError(f"random_state holds {len(random_state)} seeds for a batch of {b} problems")
        return _init.ProblemRNG([resolve_generator(r) for r in random_state])
    gen = resolve_generator(random_state)
    if isinstance(random_state, torch.Generator) or b == 1:
        return _init.ProblemRNG([gen] * b)
    # an int seed s: problem i's generator is that of a single fit with s + i; a drawn one: its seed + i
    seed = int(random_state) if isinstance(random_state, numbers.Integral) else gen.initial_seed()
    return _init.ProblemRNG([resolve_generator((seed + i) % 2**64) for i in range(b)])


def initial_centers(
    X: torch.Tensor,
    sample_weight: torch.Tensor | None,
    n_clusters: int,
    init: Any,
    rng: _init.ProblemRNG,
    spherical: bool,
    finite: bool = True,
) -> torch.Tensor:
    """Initial centers (b, k, d) in the compute dtype: k-means++, k-means||, random points, or the given array.

    ``finite=False`` skips the check that given centers are finite (a host synchronization).
    """
    cdt = compute_dtype(X.dtype)
    if isinstance(init, str) and init == "k-means++":
        centers, _ = _init.kmeans_plusplus(X, n_clusters, sample_weight, rng, cdt)
    elif isinstance(init, str) and init == "k-means||":
        centers = kmeans_parallel(X, n_clusters, sample_weight, rng, cdt)
    elif isinstance(init, str):
        centers = _init.random_init(X, n_clusters, sample_weight, rng, cdt)
    else:
        centers = _init.explicit_init(init, X, n_clusters, cdt, finite)
    return unit_rows(centers) if spherical else centers


def fit_batched(
    X: torch.Tensor,
    sample_weight: torch.Tensor | None,
    *,
    n_clusters: int,
    init: Any,
    n_init: int,
    max_iter: int,
    tol: float | torch.Tensor,
    generator: torch.Generator | _init.ProblemRNG | None,
    backend: str,
    mask: torch.Tensor | None = None,
    spherical: bool = False,
    sync: bool = True,
    chunk_size: int | None = None,
    verbose: bool = False,
    algorithm: str = "auto",
    comm: LocalComm = LOCAL,
    initial: Any = None,
) -> LloydResult:
    """Fit b problems X (b, n, d): the best of ``n_init`` runs, as a :class:`~pixelkm.engine.lloyd.LloydResult`.

    ``tol`` is relative to the mean feature variance of each problem (a tensor (b,): absolute tolerances).
    ``mask`` (b, n) keeps only the points where it is True (the others get label -1); ``spherical`` fits unit
    rows with unit centers (cosine k-means); ``sync=False`` runs exactly ``max_iter`` steps per initialization
    with no host synchronization inside the loop. Problem i draws its random numbers from the i-th generator.
    With a distributed ``comm``, X is this process's shard and ``initial(X, sample_weight)`` (returning centers
    (b, k, d), the same on every process, from the data as the loop sees it: unit rows when ``spherical``)
    replaces ``init``.
    """
    b = X.shape[0]
    if mask is not None:
        m = mask.to(compute_dtype(X.dtype))
        sample_weight = m if sample_weight is None else sample_weight * m
    if spherical:
        X = unit_rows(X.to(compute_dtype(X.dtype)))
    if isinstance(tol, torch.Tensor):
        abs_tol = tol
    elif tol > 0:
        # the backend of the passes (X against centers of its compute dtype): its kernel for the variance, if any
        be = select_backend(backend, X, X.new_empty((b, 1, X.shape[2]), dtype=compute_dtype(X.dtype)))
        abs_tol = mean_feature_variance(X, mask, comm, backend=be) * tol
    else:
        abs_tol = torch.zeros(b, dtype=torch.float64, device=X.device)
    if initial is None:
        rng = _init.as_problem_rng(generator, b)

        def initial(X, sample_weight):
            return initial_centers(X, sample_weight, n_clusters, init, rng, spherical, finite=sync)

    source = BatchSource(X, sample_weight, mask, backend=backend, chunk_size=chunk_size, comm=comm)

    def bounds(centers: torch.Tensor):
        return bounded_state(
            algorithm,
            X,
            sample_weight,
            centers,
            backend=backend,
            chunk_size=chunk_size,
            cache=source.cache,
            batched_or_masked=mask is not None,
            spherical=spherical,
            sync=sync,
            distributed=not comm.is_local,
            verbose=verbose,
        )

    return fit(
        source,
        lambda: initial(X, sample_weight),
        n_init=n_init,
        max_iter=max_iter,
        tol=abs_tol,
        spherical=spherical,
        sync=sync,
        verbose=verbose,
        bounds=bounds,
    )


def lloyd_from(
    X: torch.Tensor, centers: torch.Tensor, sample_weight: torch.Tensor | None, *, tol: torch.Tensor, **options: Any
) -> LloydResult:
    """One run of the loop over in-memory problems X (b, n, d) from ``centers`` (b, k, d), with an absolute
    ``tol`` (b,); ``options`` as :func:`fit_batched`'s (``max_iter``; ``mask``, ``sync``, ``backend``...; full
    passes unless ``algorithm`` says otherwise)."""
    options = {"backend": "auto", "algorithm": "lloyd", **options}
    return fit_batched(
        X, sample_weight, n_clusters=centers.shape[1], init=centers, n_init=1, tol=tol, generator=None, **options
    )
