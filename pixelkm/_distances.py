"""Squared distances that stay right when the data spans magnitudes: the expansion's error bound, direct differences.

The fast form of a squared distance, ``||x - s||^2 - 2 (x - s).(c - s) + ||c - s||^2`` around a shift ``s`` (one
matmul for a whole block), has an absolute rounding error that grows with ``||x - s||^2 + ||c - s||^2``, not with
the distance itself: one outlier, or centers far from the data, and it loses every digit. Every distance outside
the kernels goes through one of two sound schemes built here:

- labels: the expansion picks the nearest center, and the points whose margin (second-nearest minus nearest) is
  below the expansion's error bound are recomputed from direct differences (:func:`expansion_error`,
  :func:`exact_nearest`);
- all distances (init, ``transform``): direct differences (:func:`sq_distances`).

The bound, for one dot product of length m = d + 2 in a dtype of unit roundoff u (Higham, *Accuracy and Stability
of Numerical Algorithms*, 3.1): the matmul adds at most ``gamma_m (2 |x'| |c'| + A + B) <= 2 gamma_m (A + B)``
(``x' = x - s``, ``c' = c - s``, ``A = |x'|^2``, ``B = |c'|^2``), the rounded ``A`` and ``B`` add ``gamma_d (A + B)``,
the rounded subtractions of the shift ``4 u (A + B)``, the scaled ``B`` term ``u B``: at most ``(3 d + 9) u (A + B)``
in all, doubled here for the rounding of the test itself.
"""

from __future__ import annotations

import torch

#: elements of one (rows, k, d) block of direct differences
_BLOCK_ELEMENTS = 1 << 22
#: up to this many features all distances are direct differences, feature by feature
DIRECT_D = 16
#: the relative error beyond which an expanded distance is recomputed from direct differences (:func:`sq_distances`)
_RELATIVE = {torch.float32: 2.0**-22, torch.float64: 2.0**-30}


def unit_roundoff(dtype: torch.dtype) -> float:
    """The unit roundoff of matmuls in ``dtype``: float32 matmuls may run in TF32 or bfloat16 when
    ``torch.set_float32_matmul_precision`` allows it, and the bound must hold then too."""
    if dtype == torch.float32:
        precision = torch.get_float32_matmul_precision()
        if precision == "high":
            return 2.0**-11  # TF32: 10 stored mantissa bits
        if precision == "medium":
            return 2.0**-8  # bfloat16: 7 stored mantissa bits
    return torch.finfo(dtype).eps / 2


def expansion_error(d: int, dtype: torch.dtype) -> float:
    """``eps_x`` such that the expansion's squared distance differs from the exact one by at most
    ``eps_x * (|x - s|^2 + |c - s|^2)`` (see the module docstring)."""
    return 2.0 * (3 * d + 9) * unit_roundoff(dtype)


def exact_nearest(
    x: torch.Tensor, centers: torch.Tensor, problem: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest center of each row of ``x`` (m, d), from direct differences in float64.

    ``centers`` is (k, d), or (b, k, d) with ``problem`` (m,) naming the problem of each row. Returns labels (m,)
    int64 (ties to the lowest index), the squared distance to the nearest (m,) and to the second-nearest (m,),
    float64 (inf when k == 1).
    """
    c = centers.double()
    if c.ndim == 2:
        c = c.unsqueeze(0)
        problem = None
    m = x.shape[0]
    k, d = c.shape[1], c.shape[2]
    labels = torch.empty(m, dtype=torch.int64, device=x.device)
    nearest = torch.empty(m, dtype=torch.float64, device=x.device)
    second = torch.full((m,), torch.inf, dtype=torch.float64, device=x.device)
    step = max(1, _BLOCK_ELEMENTS // (k * d))
    for s in range(0, m, step):
        xs = x[s : s + step].double()
        cs = c[0].unsqueeze(0) if problem is None else c[problem[s : s + step]]
        dist = (xs.unsqueeze(1) - cs).square_().sum(-1)  # (rows, k)
        if k > 1:
            two = torch.topk(dist, 2, dim=1, largest=False, sorted=True)
            nearest[s : s + step], second[s : s + step] = two.values[:, 0], two.values[:, 1]
            # topk does not promise the lowest index among ties: argmin does
            labels[s : s + step] = dist.argmin(1)
        else:
            nearest[s : s + step] = dist[:, 0]
            labels[s : s + step] = 0
    return labels, nearest, second


def sq_distances(X: torch.Tensor, P: torch.Tensor, dtype: torch.dtype, rows: int = 1 << 16) -> torch.Tensor:
    """Squared distances of every point of X (b, n, d) to each point of P (b, t, d), shape (b, t, n), ``dtype``.

    Up to :data:`DIRECT_D` features, direct differences feature by feature: each entry is ``sum((x - p)^2)`` as
    rounded in ``dtype``. Beyond, the expansion in float64, each entry within ``_RELATIVE[dtype]`` of the exact
    distance (entries whose error bound is larger are recomputed from direct differences), whatever the magnitudes.
    """
    b, n, d = X.shape
    t = P.shape[1]
    out = torch.empty(b, t, n, dtype=dtype, device=X.device)
    if d <= DIRECT_D:
        p = P.to(dtype)
        for start in range(0, n, rows):
            x = X[:, start : start + rows].to(dtype)
            acc = out[:, :, start : start + rows]
            for j in range(d):
                diff = x[:, :, j].unsqueeze(1) - p[:, :, j].unsqueeze(2)  # (b, t, r)
                if j == 0:
                    torch.mul(diff, diff, out=acc)
                else:
                    acc.addcmul_(diff, diff)
        return out
    # many features: the expansion in float64 (one matmul per block), and direct differences for the points where
    # its error bound exceeds RELATIVE[dtype] of a distance (points at or next to a P, outliers)
    shift = P.double().mean(1, keepdim=True)
    p = P.double() - shift
    p_sq = (p * p).sum(-1)  # (b, t)
    err = expansion_error(d, torch.float64)
    for start in range(0, n, rows):
        x = X[:, start : start + rows].double() - shift
        x_sq = (x * x).sum(-1)  # (b, r)
        dist = torch.baddbmm(p_sq.unsqueeze(-1), p, x.transpose(1, 2), alpha=-2.0).add_(x_sq.unsqueeze(1))
        bound = (x_sq.unsqueeze(1) + p_sq.unsqueeze(-1)).mul_(err)
        bad = torch.nonzero((bound > _RELATIVE[dtype] * dist).any(1))  # (m, 2): problem, row
        if bad.numel():
            xb = X[bad[:, 0], start + bad[:, 1]].double()  # (m, d)
            direct = (xb.unsqueeze(1) - P.double()[bad[:, 0]]).square_().sum(-1)  # (m, t)
            dist[bad[:, 0], :, bad[:, 1]] = direct
        out[:, :, start : start + rows] = dist.clamp_min_(0.0)
    return out
