"""Hamerly's bounds inside the CPU kernel, with exactly the iterates of full passes.

Per point: an upper bound of the distance to its own center and a lower bound of that to every other center
(float64 distances, inflated/deflated by the rounding bound of the kernel's squared distances). A step moves the
bounds by the centers' drifts, skips the points whose own center is provably strictly nearest (the test leaves room
for the rounding of both sides, so a skipped point has the label a full pass would give, ties included), checks the
rest against their own center and scans every center for those still undecided, with the same arithmetic as the
full pass. The sums and counts are then recomputed from the labels by the full pass's blocks in the full pass's
order, so they are bit-identical to a full pass's, and the centers the engine derives from them are too.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._result import PassExtras
from . import kernels as K


class HamerlyBounds:
    """The bounded-pass state of one problem (see the bounds interface of :class:`pixelkm.backends.Backend`)."""

    def __init__(self, backend, X: torch.Tensor, sample_weight: torch.Tensor | None, n_clusters: int):
        n, d = X.shape
        self.backend, self.X, self.w, self.k = backend, X, sample_weight, n_clusters
        self.labels = torch.zeros(n, dtype=torch.int64)
        self.upper = np.empty(n)
        self.lower = np.empty(n)
        self.prev: np.ndarray | None = None  # the centers of the previous step (float64), None: next step is full
        nb = (n + K.BLOCK - 1) // K.BLOCK
        self.moved = np.zeros(nb, dtype=np.int64)
        self._part_s = np.empty((nb, n_clusters, d))
        self._part_c = np.empty((nb, n_clusters))
        # the data as the kernel reads it: in place, or one float32 copy of float16/bfloat16 data
        self._xn = X.numpy() if X.dtype in (torch.uint8, torch.float32, torch.float64) else X.float().numpy()
        self._xn = np.ascontiguousarray(self._xn)
        self._wn = np.empty(0) if sample_weight is None else sample_weight.to(torch.float64).contiguous().numpy()

    def invalidate(self) -> None:
        self.prev = None

    def step(self, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        import numba

        from .backend import pass_threads, rounding_slack

        C = centers.contiguous()
        Cn = C.numpy()
        n, d = self._xn.shape
        k = Cn.shape[0]
        slack = rounding_slack(Cn.dtype, d)
        numba.set_num_threads(pass_threads())
        nt = numba.get_num_threads()
        if self.prev is None:
            old = self.labels.clone()
            extras = PassExtras(bounds=True)
            res = self.backend.assign_update(
                self.X.unsqueeze(0),
                C.unsqueeze(0),
                None if self.w is None else self.w.unsqueeze(0),
                extras=extras,
            )
            self.labels = res.labels[0]
            self.upper = extras.min_sq_upper[0].double().sqrt_().numpy().copy()
            self.lower = extras.second_sq_lower[0].double().sqrt_().numpy().copy()
            changed = n if not hasattr(self, "_started") else int((old != self.labels).sum())
            self._started = True
            self.prev = Cn.astype(np.float64)
            return self.labels, res.sums[0], res.counts[0], changed
        c64 = Cn.astype(np.float64)
        grow = 1.0 + 8 * d * 2.0**-52
        drift = np.sqrt(((c64 - self.prev) ** 2).sum(1)) * grow
        # the largest drift among the other centers: the largest, or the second largest for the largest itself
        order = np.argsort(drift)
        other = np.full(k, drift[order[-1]])
        if k > 1:
            other[order[-1]] = drift[order[-2]]
        else:
            other[:] = 0.0
        half = K.half_separation(Cn) * (1.0 - 8 * d * 2.0**-52) if k > 1 else np.full(k, np.inf)
        K.bounded_step(
            self._xn,
            Cn,
            drift,
            other,
            half,
            slack,
            self.labels.numpy(),
            self.upper,
            self.lower,
            self.moved,
            nt,
        )
        sums = torch.zeros(k, d, dtype=torch.float64)
        counts = torch.zeros(k, dtype=torch.float64)
        K.sums_by_label(
            self._xn,
            self._wn,
            self.labels.numpy(),
            self._part_s,
            self._part_c,
            sums.numpy(),
            counts.numpy(),
            nt,
        )
        self.prev = c64
        return self.labels, sums, counts, int(self.moved.sum())
