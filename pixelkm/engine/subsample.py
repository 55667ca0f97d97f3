"""Uniform subsamples of rows: the draws of choose-k's silhouette sample and of ``max_points_per_cluster``."""

from __future__ import annotations

import torch


def random_subset(n: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """``min(m, n)`` distinct indices of ``range(n)`` in random order, every ordered choice equally likely (as
    ``randperm(n)[:m]``), int64.

    A permutation of every index costs O(n) (0.2-0.36 s for the pixels of a 12 MP photo, for a sample of 2000):
    for m well below n the indices are drawn with replacement and repeats drawn again (rejection keeps the
    sample uniform without replacement), in O(m).
    """
    m = min(m, n)
    if 8 * m >= n:
        return torch.randperm(n, generator=gen)[:m]
    out = torch.randint(n, (m,), generator=gen)
    while True:
        uniq, inv = torch.unique(out, return_inverse=True)
        if uniq.numel() == out.numel():
            return out
        # keep the first occurrence of each index (the order of the draws), then draw the missing ones
        first = torch.full((uniq.numel(),), out.numel(), dtype=torch.int64)
        first.scatter_reduce_(0, inv, torch.arange(out.numel()), "amin")
        out = torch.cat([out[first.sort().values], torch.randint(n, (m - uniq.numel(),), generator=gen)])


def capped_rows(
    n: int,
    n_clusters: int,
    max_points_per_cluster: int | None,
    gen: torch.Generator,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The rows a fit capped at ``max_points_per_cluster`` points per cluster runs on (faiss's
    ``max_points_per_centroid``): ``n_clusters * max_points_per_cluster`` of the ``n`` rows drawn uniformly without
    replacement from ``gen``, in increasing order (the data's own order, so that a histogram or a stream sees the
    rows as they lie); None when the cap is None or does not bind (every row is used, nothing is drawn).

    With ``sample_weight`` (n,) the draw is among the rows of positive weight (a zero weight adds nothing to the
    fit, and a subsample of zero-weight rows would have nothing to fit); the cap binds when they outnumber it."""
    if max_points_per_cluster is None:
        return None
    m = n_clusters * max_points_per_cluster
    if sample_weight is None:
        return None if n <= m else random_subset(n, m, gen).sort().values
    positive = torch.nonzero(sample_weight.cpu() > 0).squeeze(1)
    if positive.numel() <= m:
        return None
    return positive[random_subset(positive.numel(), m, gen).sort().values]
