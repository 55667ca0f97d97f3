"""The one squared-distance primitive (outside the backends' fused pass): chunked, batched, right at any magnitude.

The expanded form ``|x - s|^2 - 2 (x - s).(c - s) + |c - s|^2`` (one matmul per block) loses every digit when the
data spans magnitudes (one outlier, far centers); the schemes of :mod:`pixelkm._distances` keep it sound:
:func:`sq_distances` gives the whole (b, n, k) matrix (k-means++ and k-means|| draws, ``KMeans.transform``, the
silhouette) from direct differences up to 16 features and from the expansion with the doubtful entries recomputed
beyond; :func:`nearest` (``nn.KMeans``) takes the expansion's argmin and recomputes from direct differences the rows
whose margin is below the expansion's error bound, and gives the distance to the chosen center from direct
differences (differentiable in X). Under ``torch.compile`` it is one graph of direct differences.
"""

from __future__ import annotations

import torch

from .._distances import exact_nearest, expansion_error
from .._distances import sq_distances as _sq_to_points

#: rows per block of :func:`sq_distances`
ROWS = 1 << 16


def unit_rows(X: torch.Tensor) -> torch.Tensor:
    """X (..., d) scaled to unit norm row by row (spherical k-means); rows of zeros stay zeros.

    ``torch.nn.functional.normalize`` divides by ``max(norm, 1e-12)``, so rows shorter than 1e-12 did not come out
    unit (and spherical fits of data scaled by 1e-13 differed from the unscaled ones); here every positive norm
    counts, and the row is divided by its largest magnitude first so that neither the squares of tiny values
    underflow nor those of huge ones overflow. Differentiable in X (zero rows have a zero gradient)."""
    scale = X.abs().amax(dim=-1, keepdim=True)
    Y = X / torch.where(scale > 0, scale, torch.ones_like(scale))
    norm = torch.linalg.vector_norm(Y, dim=-1, keepdim=True)
    return Y / torch.where(norm > 0, norm, torch.ones_like(norm))


def sq_distances(X: torch.Tensor, C: torch.Tensor, *, rows: int = ROWS) -> torch.Tensor:
    """Squared Euclidean distances of X (b, n, d) (any dtype) to C (b, k, d): shape (b, n, k) in C's dtype."""
    return _sq_to_points(X, C, C.dtype, rows).transpose(1, 2)


def _nearest_labels(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Labels of a block of rows x (r, d) against c (k, d): the expansion around the centers' median (its
    ``|c|^2`` lowered by the error bound), and direct differences for the rows whose margin is below that bound."""
    if c.shape[0] == 1:
        return torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    with torch.no_grad():
        shift = c.median(0).values  # distances are translation invariant: work near the centers (robustly)
        xc, cc = x - shift, c - shift
        err = expansion_error(x.shape[1], x.dtype)
        c_sq = (cc * cc).sum(-1)
        x_sq = (xc * xc).sum(-1)
        D = torch.addmm(c_sq * (1.0 - err), xc, cc.t(), alpha=-2.0).add_(x_sq.unsqueeze(1))  # (r, k)
        two = torch.topk(D, 2, dim=1, largest=False, sorted=True)
        lab = D.argmin(1)  # (the lowest index among ties)
        bound = (x_sq + c_sq[lab]).mul_(2.0 * err)
        close = torch.nonzero((two.values[:, 1] - two.values[:, 0]) < bound).squeeze(1)
        if close.numel():
            lab[close] = exact_nearest(x[close], c)[0]
        return lab


def nearest(X: torch.Tensor, C: torch.Tensor, *, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest center (ties: the lowest) and the squared distance to it, for X (b, n, d) in C's
    dtype and C (b, k, d): labels (b, n) int64 and distances (b, n). Differentiable in X; ``rows`` per block
    (None: one block)."""
    if torch.compiler.is_compiling():  # one graph, no data-dependent branch: direct differences (which the
        # compiler fuses into one reduction), exact whatever the magnitudes
        dist, lab = (X.unsqueeze(2) - C.unsqueeze(1)).square().sum(-1).min(2)
        return lab, dist
    b, n, d = X.shape
    step = max(1, n if rows is None else rows)
    lab = torch.stack(
        [torch.cat([_nearest_labels(X[i, s : s + step], C[i]) for s in range(0, max(1, n), step)]) for i in range(b)]
    )
    chosen = C.gather(1, lab.unsqueeze(-1).expand(b, n, d))
    return lab, (X - chosen).square().sum(-1)  # direct differences to the chosen center
