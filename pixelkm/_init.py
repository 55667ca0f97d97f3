"""Center initialization: greedy k-means++ (as scikit-learn does it), random, or explicit.

All functions are batched: X of shape (b, n, d) in any supported dtype, weights (b, n) or None, and return
centers of shape (b, k, d) in the compute dtype on X's device. Random numbers come from a ``torch.Generator``
(drawn on the generator's device, then moved), so a seed gives the same centers on the same device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ._distances import sq_distances
from ._validation import as_tensor, check_data


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


def _sq_dist_to_points(X: torch.Tensor, P: torch.Tensor, rows: int = 1 << 16) -> torch.Tensor:
    """Squared distances of every point of X (b, n, d) to each of the points P (b, t, d): shape (b, t, n), in P's
    dtype, right whatever the magnitudes of the data (see :func:`pixelkm._distances.sq_distances`)."""
    return sq_distances(X, P, P.dtype, rows)


def _gather_rows(X: torch.Tensor, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """X[b, idx[b, j]] for every b, j: shape (b, t, d), converted to ``dtype``."""
    b, _, d = X.shape
    return torch.gather(X, 1, idx.unsqueeze(-1).expand(b, idx.shape[1], d)).to(dtype)


def _weighted_pick(cum: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Indices drawn with probability proportional to the increments of ``cum`` (b, n), for uniforms u (b, t)."""
    target = u * cum[:, -1:]
    idx = torch.searchsorted(cum, target.contiguous(), right=True)
    return idx.clamp_(max=cum.shape[1] - 1)


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

    first = _weighted_pick(torch.cumsum(w, 1), uniforms[:, :1])  # (b, 1)
    indices[:, 0] = first[:, 0]
    centers[:, 0] = _gather_rows(X, first, dtype)[:, 0]
    closest = _sq_dist_to_points(X, centers[:, :1])[:, 0].double()  # (b, n)
    for c in range(1, n_clusters):
        u = uniforms[:, 1 + (c - 1) * n_local_trials : 1 + c * n_local_trials]
        cand = _weighted_pick(torch.cumsum(w * closest, 1), u)
        dist = _sq_dist_to_points(X, _gather_rows(X, cand, dtype)).double()  # (b, t, n)
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
