"""Initialization that scales to huge n: k-means|| and the lightweight coreset it runs on.

k-means|| (Bahmani et al., "Scalable K-Means++", VLDB 2012) replaces k-means++'s k sequential draws by a few
rounds that each draw about ``oversampling * k`` points independently with probability proportional to their
current cost, then reclusters the weighted candidates (weighted k-means++ and Lloyd, in memory).

For very large n, every round would still cost a pass over the data against ~2k new candidates, so the rounds
run on a *lightweight coreset* instead (Bachem, Lucic and Krause, KDD 2018): points drawn with probability
q(x) = 1/2 w(x)/W + 1/2 w(x) d(x, mean)^2 / sum w d^2 and weighted by w / (m q). Drawing it takes two passes over
the data that each cost O(d) per point (cheaper than one Lloyd pass, which costs O(k d)), so for n = 1e9 the
whole initialization costs less than two Lloyd passes. The same code draws the coreset from a stream of chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from .._validation import compute_dtype
from ..ops import run_assign_update
from ..ops.distance import sq_distances
from .init import (
    ProblemRNG,
    as_problem_rng,
    explicit_init,
    kmeans_plusplus,
    random_init,
    weighted_pick,
)
from .lloyd import lloyd
from .sources import BatchSource

#: rows per chunk when drawing the coreset from an in-memory tensor
_CHUNK_ROWS = 1 << 20
#: candidates compared per block when updating the closest distances (bounds memory to block * n)
_CAND_BLOCK = 8


def _rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniforms in [0, 1), float64, drawn on the generator's device and moved to ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64).to(device)


def default_coreset_size(n_clusters: int) -> int:
    """Coreset size used when none is given: large against k, small against the data."""
    return max(1 << 16, 256 * n_clusters)


ChunkFactory = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor | None]]]


class Moments:
    """Per-feature sums over a stream of chunks, for the mean, the variance and the coreset's cost.

    Sums are taken around a shift (the first row seen) in float64 so that data far from the origin keeps its digits.
    """

    def __init__(self) -> None:
        self.shift = None
        self.n = 0
        self.w = 0.0
        self.s = self.sq = self.ws = self.wsq = None

    def add(self, x: torch.Tensor, w: torch.Tensor | None) -> None:
        if self.shift is None:
            self.shift = x[:1].double()
            z = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
            self.s, self.sq, self.ws, self.wsq = z.clone(), z.clone(), z.clone(), z.clone()
        xc = x.double() - self.shift
        self.n += x.shape[0]
        self.s += xc.sum(0)
        self.sq += (xc * xc).sum(0)
        if w is None:
            self.w += float(x.shape[0])
            self.ws += xc.sum(0)
            self.wsq += (xc * xc).sum(0)
        else:
            wd = w.double().unsqueeze(1)
            self.w += float(wd.sum())
            self.ws += (xc * wd).sum(0)
            self.wsq += (xc * xc * wd).sum(0)

    def reduced(self, comm: Any) -> Moments:
        """The moments of every process's rows together (around rank 0's shift); ``self`` for a single process."""
        if comm.is_local:
            return self
        if self.shift is None:
            raise ValueError("this rank's shard has no rows; every rank must hold at least one")
        out = Moments()
        shift = self.shift.clone()
        comm.broadcast_(shift)
        delta = (self.shift - shift)[0]  # this process's sums move from its shift to the common one
        n = torch.tensor([float(self.n), self.w], dtype=torch.float64, device=shift.device)
        s = self.s + self.n * delta
        sq = self.sq + 2 * delta * self.s + self.n * delta * delta
        ws = self.ws + self.w * delta
        wsq = self.wsq + 2 * delta * self.ws + self.w * delta * delta
        for t in (n, s, sq, ws, wsq):
            comm.sum_(t)
        out.shift, out.s, out.sq, out.ws, out.wsq = shift, s, sq, ws, wsq
        out.n, out.w = int(n[0]), float(n[1])
        return out

    def variance(self) -> torch.Tensor:
        """Mean over features of each feature's unweighted variance (what ``tol`` is relative to), shape ()."""
        m = self.s / self.n
        return (self.sq / self.n - m * m).clamp_min(0).mean()

    def weighted_mean(self) -> torch.Tensor:
        return (self.ws / self.w + self.shift[0]).unsqueeze(0)

    def weighted_cost(self) -> float:
        """sum_x w(x) ||x - weighted mean||^2."""
        m = self.ws / self.w
        return float((self.wsq - self.w * m * m).clamp_min(0).sum())


def lightweight_coreset(
    chunks: ChunkFactory,
    size: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    moments: Moments | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A weighted coreset of about ``size`` points from the data that ``chunks()`` yields as (x, w or None).

    Two passes (one if ``moments`` of the data are given): moments, then Poisson sampling with probability
    min(1, size * q(x)), weight w(x) / that probability (unbiased for every sum over the data).
    Returns (points (m, d) in ``dtype``, weights (m,) in ``dtype``).
    """
    if moments is None:
        moments = Moments()
        for x, w in chunks():
            moments.add(x, w)
    mean, cost, total = moments.weighted_mean(), moments.weighted_cost(), moments.w
    points, weights = [], []
    for x, w in chunks():
        xd = x.to(torch.float64)
        wd = torch.ones(x.shape[0], dtype=torch.float64, device=x.device) if w is None else w.double()
        d2 = (xd - mean.to(x.device)).square_().sum(1)
        q = 0.5 * wd / total + (0.5 * wd * d2 / cost if cost > 0 else 0.5 * wd / total)
        p = (size * q).clamp_(max=1.0)
        keep = torch.nonzero(_rand((x.shape[0],), generator, x.device) < p).squeeze(1)
        points.append(x[keep].to(dtype))
        weights.append((wd[keep] / p[keep]).to(dtype))
    return torch.cat(points), torch.cat(weights)


def _tensor_chunks(X: torch.Tensor, w: torch.Tensor | None) -> ChunkFactory:
    def it() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for s in range(0, X.shape[0], _CHUNK_ROWS):
            yield X[s : s + _CHUNK_ROWS], None if w is None else w[s : s + _CHUNK_ROWS]

    return it


def _kmeans_parallel_one(
    X: torch.Tensor,
    n_clusters: int,
    w: torch.Tensor | None,
    generator: torch.Generator,
    dtype: torch.dtype,
    n_rounds: int,
    oversampling: float,
) -> torch.Tensor:
    """k-means|| on one problem X (n, d) with weights w (n,) or None: centers (k, d) in ``dtype``."""
    n = X.shape[0]
    dev = X.device
    wd = torch.ones(n, dtype=torch.float64, device=dev) if w is None else w.double()
    first = weighted_pick(torch.cumsum(wd, 0).unsqueeze(0), _rand((1, 1), generator, dev))[0]
    cands = [X[first].to(dtype)]
    closest = sq_distances(X.unsqueeze(0), cands[0].unsqueeze(0))[0, :, 0].double()
    ell = oversampling * n_clusters
    for _ in range(n_rounds):
        phi = float((wd * closest).sum())
        if phi <= 0:
            break
        p = (ell * wd * closest / phi).clamp_(max=1.0)
        new = torch.nonzero(_rand((n,), generator, dev) < p).squeeze(1)
        if new.numel() == 0:
            continue
        new_c = X[new].to(dtype)
        for s in range(0, new_c.shape[0], _CAND_BLOCK):
            dist = sq_distances(X.unsqueeze(0), new_c[s : s + _CAND_BLOCK].unsqueeze(0))[0]
            torch.minimum(closest, dist.min(1).values.double(), out=closest)
        cands.append(new_c)
    C = torch.cat(cands)
    if C.shape[0] <= n_clusters:  # too few candidates (tiny or degenerate data): plain k-means++ on X
        centers, _ = kmeans_plusplus(
            X.unsqueeze(0), n_clusters, None if w is None else w.unsqueeze(0), generator, dtype
        )
        return centers[0]
    # weight of a candidate = weight of the points closest to it (one pass against the candidates)
    cw = run_assign_update(
        X.unsqueeze(0), C.unsqueeze(0), None if w is None else w.unsqueeze(0).to(dtype), compute_labels=False
    ).counts.to(dtype)
    if int((cw > 0).sum()) < n_clusters:  # duplicates: keep every candidate in play
        cw = cw + (cw.max() * 1e-6)
    centers, _ = kmeans_plusplus(C.unsqueeze(0), n_clusters, cw, generator, dtype)
    zero = torch.zeros(1, dtype=torch.float64, device=dev)
    return lloyd(BatchSource(C.unsqueeze(0), cw), centers, max_iter=30, tol=zero).centers[0]


def kmeans_parallel(
    X: torch.Tensor,
    n_clusters: int,
    sample_weight: torch.Tensor | None,
    generator: torch.Generator | ProblemRNG,
    dtype: torch.dtype,
    *,
    n_rounds: int = 5,
    oversampling: float = 2.0,
    coreset_size: int | None = None,
) -> torch.Tensor:
    """k-means|| centers (b, k, d) in ``dtype`` for b problems X (b, n, d), weights (b, n) or None.

    ``n_rounds`` rounds each draw about ``oversampling * n_clusters`` candidates. When n exceeds 4 times
    ``coreset_size`` (default :func:`default_coreset_size`), the rounds run on a lightweight coreset of that size
    drawn in two O(d)-per-point passes, so the cost over the full data stays below two Lloyd passes.
    """
    b, n, d = X.shape
    m = coreset_size or default_coreset_size(n_clusters)
    out = torch.empty(b, n_clusters, d, dtype=dtype, device=X.device)
    gens = as_problem_rng(generator, b).generators
    for bi in range(b):
        gen = gens[bi]
        x, w = X[bi], None if sample_weight is None else sample_weight[bi]
        if n > 4 * m:
            x, w = lightweight_coreset(_tensor_chunks(x, w), m, gen, compute_dtype(X.dtype))
            if x.shape[0] < n_clusters:  # pathological weights: fall back to the full data
                x, w = X[bi], None if sample_weight is None else sample_weight[bi]
        out[bi] = _kmeans_parallel_one(x, n_clusters, w, gen, dtype, n_rounds, oversampling)
    return out


def resolve_init(
    init: Any, X: torch.Tensor, w: torch.Tensor | None, k: int, gen: torch.Generator, cdt: torch.dtype
) -> torch.Tensor:
    """Centers (k, d) from a string init on in-memory weighted points, or from an explicit array."""
    if isinstance(init, str):
        if init == "k-means++":
            return kmeans_plusplus(X.unsqueeze(0), k, None if w is None else w.unsqueeze(0), gen, cdt)[0][0]
        if init == "k-means||":
            return kmeans_parallel(X.unsqueeze(0), k, None if w is None else w.unsqueeze(0), gen, cdt)[0]
        if init == "random":
            return random_init(X.unsqueeze(0), k, None if w is None else w.unsqueeze(0), gen, cdt)[0]
        raise ValueError(f"init must be 'k-means++', 'k-means||', 'random' or an array, got {init!r}")
    return explicit_init(init, X.unsqueeze(0), k, cdt)[0]
