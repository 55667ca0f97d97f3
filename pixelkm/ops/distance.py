"""The one squared-distance primitive (outside the backends' fused pass): shifted, chunked, batched.

Distances are translation invariant, so both sides are first moved by the mean of the centers (the data keeps its
digits when it lies far from the origin); one batched matmul per block of rows gives
``|x - s|^2 - 2 (x - s).(c - s) + |c - s|^2``, clamped at zero. :func:`sq_distances` gives the whole (b, n, k)
matrix (k-means++ and k-means|| draws, ``KMeans.transform``, the silhouette); :func:`nearest` reduces each block
to its nearest center at once (``nn.KMeans``), differentiable in X and free of Python loops when ``rows`` is None
(``torch.compile(fullgraph=True)``).
"""

from __future__ import annotations

import torch

#: rows per block of :func:`sq_distances`
ROWS = 1 << 16


def _centered(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(shift (b, 1, d), centers - shift (b, k, d), their squared norms (b, 1, k))."""
    shift = C.mean(-2, keepdim=True)
    c = C - shift
    return shift, c, (c * c).sum(-1).unsqueeze(-2)


def sq_distances(X: torch.Tensor, C: torch.Tensor, *, rows: int = ROWS) -> torch.Tensor:
    """Squared Euclidean distances of X (b, n, d) (any dtype) to C (b, k, d): shape (b, n, k) in C's dtype."""
    b, n, _ = X.shape
    shift, c, c_sq = _centered(C)
    out = torch.empty(b, n, C.shape[1], dtype=C.dtype, device=X.device)
    ct = c.transpose(1, 2)
    for start in range(0, n, rows):
        xc = X[:, start : start + rows].to(C.dtype) - shift
        block = torch.baddbmm(c_sq, xc, ct, alpha=-2.0)  # |c|^2 - 2 x.c, (b, r, k)
        block += (xc * xc).sum(-1, keepdim=True)
        out[:, start : start + rows] = block.clamp_min_(0.0)
    return out


def nearest(X: torch.Tensor, C: torch.Tensor, *, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest center (ties: the lowest) and the squared distance to it, for X (b, n, d) in C's
    dtype and C (b, k, d): labels (b, n) int64 and distances (b, n). Differentiable in X; ``rows`` per block
    (None: one block)."""
    shift, c, c_sq = _centered(C)
    ct = c.transpose(1, 2)

    def block(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xc = x - shift
        m, lab = torch.baddbmm(c_sq, xc, ct, alpha=-2.0).min(-1)  # |c|^2 - 2 x.c, (b, r, k)
        return lab, (m + (xc * xc).sum(-1)).clamp_min(0.0)

    n = X.shape[1]
    if rows is None or n <= rows:
        return block(X)
    parts = [block(X[:, start : start + rows]) for start in range(0, n, rows)]
    return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
