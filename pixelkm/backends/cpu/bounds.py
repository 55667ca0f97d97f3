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

from ..._result import AssignUpdateResult, PassExtras
from . import kernels as K
from .simd import group_lanes
from .threads import pass_threads


def drifts(c64: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """How far each center moved (float64 distances, inflated by their rounding bound: a bound moved by it stays a
    bound)."""
    return np.sqrt(((c64 - prev) ** 2).sum(1)) * (1.0 + 8 * c64.shape[1] * 2.0**-52)


def label_sums(xn, wn, labels: torch.Tensor, k: int, part_s, part_c, nt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 sums and counts over ``k`` centers of a full pass from the labels (:func:`.kernels.sums_by_label`:
    its blocks, its order, the same bits); ``part_s``/``part_c`` the per-block scratch
    (:func:`.kernels.block_partials`)."""
    d = part_s.shape[2]
    sums = torch.zeros(k, d, dtype=torch.float64)
    counts = torch.zeros(k, dtype=torch.float64)
    K.sums_by_label(xn, wn, labels.numpy(), part_s, part_c, sums.numpy(), counts.numpy(), nt)
    return sums, counts


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
        self._part_s, self._part_c = K.block_partials(nb, n_clusters, d)
        # the data as the kernel reads it: in place, or one float32 copy of float16/bfloat16 data
        self._xn = X.numpy() if X.dtype in (torch.uint8, torch.float32, torch.float64) else X.float().numpy()
        self._xn = np.ascontiguousarray(self._xn)
        self._wn = np.empty(0) if sample_weight is None else sample_weight.to(torch.float64).contiguous().numpy()

    def invalidate(self) -> None:
        self.prev = None

    def step(self, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        import numba

        from .backend import rounding_slack

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
        drift = drifts(c64, self.prev)
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
        sums, counts = label_sums(self._xn, self._wn, self.labels, self.k, self._part_s, self._part_c, nt)
        self.prev = c64
        return self.labels, sums, counts, int(self.moved.sum())


#: centers per group of the Yinyang bounds, on average (Ding et al. take k / 10 groups)
GROUP_SIZE = 10
#: Lloyd iterations that group the initial centers (the grouping only changes the speed, never the result)
GROUP_ITERS = 5


def group_centers(C: np.ndarray, n_groups: int) -> np.ndarray:
    """The group (0 .. n_groups - 1, every one used) of each center of C (k, d): a few Lloyd iterations over the
    centers (Ding et al. group the initial centers once, so) from a farthest-point traversal of them (the first
    center, then each time the center farthest from those taken), deterministic."""
    k = C.shape[0]
    c = C.astype(np.float64)
    g = np.full(k, 0, np.int64)
    if n_groups <= 1:
        return g
    taken = [0]
    near = ((c - c[0]) ** 2).sum(1)
    for _ in range(1, min(n_groups, k)):
        j = int(near.argmax())
        taken.append(j)
        np.minimum(near, ((c - c[j]) ** 2).sum(1), out=near)
    mid = c[taken]
    for _ in range(GROUP_ITERS):
        dist = (c * c).sum(1)[:, None] - 2 * c @ mid.T + (mid * mid).sum(1)[None, :]
        g = dist.argmin(1)
        counts = np.bincount(g, minlength=mid.shape[0])
        sums = np.zeros_like(mid)
        np.add.at(sums, g, c)
        keep = counts > 0
        mid = sums[keep] / counts[keep, None]
    _, g = np.unique(g, return_inverse=True)  # groups left empty are dropped
    return g.astype(np.int64)


def yinyang_bytes_per_row(n_clusters: int, d: int) -> int:
    """Memory of Yinyang's state per row: the group lower bounds, the upper bound, the label (float64, int64), and
    its share of the float64 per-block partial sums (k (d + 1) per block of :data:`.kernels.BLOCK` rows)."""
    return 8 * max(1, n_clusters // GROUP_SIZE) + 16 + -(-8 * n_clusters * (d + 1) // K.BLOCK)


class YinyangBounds:
    """Yinyang's bounds (Ding et al. 2015, "Yinyang K-Means: A Drop-In Replacement of the Classic K-Means with
    Consistent Speedup") for one problem of large ``d``, with exactly the iterates of full passes.

    The centers are grouped once (:func:`group_centers`, about :data:`GROUP_SIZE` per group); each point keeps an
    upper bound of its own center's distance and a lower bound per group (float64: 8 bytes x groups per point).
    A step settles the points whose bounds prove their center nearest, and scans, for the others, only the groups
    that their bounds do not rule out (:func:`.kernels.yinyang_step`), and in the same parallel region adds up the
    sums and counts of a full pass from the labels (the same blocks in the same order, the same bits; a block whose
    labels did not change keeps its partials)."""

    def __init__(self, X: torch.Tensor, sample_weight: torch.Tensor | None, n_clusters: int, dtype):
        n, d = X.shape
        self.n_groups = max(1, n_clusters // GROUP_SIZE)
        self.labels = torch.zeros(n, dtype=torch.int64)
        self.upper = np.empty(n)
        self.L: np.ndarray | None = None
        self.gof: np.ndarray | None = None
        self.prev: np.ndarray | None = None  # the centers of the previous step (float64); None: bounds anew
        self.started = False
        nb = (n + K.BLOCK - 1) // K.BLOCK
        self.moved = np.zeros((n + K.YY_BLOCK - 1) // K.YY_BLOCK, dtype=np.int64)
        self._part_s, self._part_c = K.block_partials(nb, n_clusters, d)
        self._done = np.zeros(nb, dtype=np.int64)  # the step's finished units per block
        self._valid = np.zeros(nb, dtype=np.int64)  # whether a block's partials are those of the current labels
        # the data in the compute dtype, as the full pass of large d reads it (in place when it is already)
        self._xn = np.ascontiguousarray(X.to(dtype).numpy())
        self._wn = np.empty(0) if sample_weight is None else sample_weight.to(torch.float64).contiguous().numpy()

    def invalidate(self) -> None:
        self.prev = None

    def _step(self, Cn: np.ndarray, drift: np.ndarray, slack: float, nt: int) -> None:
        """:func:`.kernels.yinyang_step` against the centers ``Cn`` (their drifts ``drift`` since the bounds): the
        labels, bounds, ``sums`` and ``counts``."""
        k, d = Cn.shape
        self.sums = torch.zeros(k, d, dtype=torch.float64)
        self.counts = torch.zeros(k, dtype=torch.float64)
        self._done[:] = 0
        K.yinyang_step(
            self._xn,
            Cn,
            self._layout(Cn),
            self.perm,
            self.pstart,
            self.gof,
            group_lanes(Cn.dtype.itemsize),
            drift,
            self.gcum,
            slack,
            self.labels.numpy(),
            self.upper,
            self.L,
            self.moved,
            self._wn,
            self._part_s,
            self._part_c,
            self._done,
            self._valid,
            self.sums.numpy(),
            self.counts.numpy(),
            nt,
        )

    def _group(self, Cn: np.ndarray) -> None:
        """Group the centers (once, from the first ones) and lay the groups out: ``order`` (the centers by group),
        ``gstart`` (each group's first place there), and the kernel's padded ``perm`` and ``pstart``."""
        n = self._xn.shape[0]
        self.gof = group_centers(Cn, self.n_groups)
        self.n_groups = G = int(self.gof.max()) + 1
        self.L = np.zeros((n, G))
        self.gcum = np.zeros(G)
        lanes = group_lanes(Cn.dtype.itemsize)
        self.order = np.argsort(self.gof, kind="stable")
        sizes = np.bincount(self.gof, minlength=G)
        self.gstart = np.zeros(G + 1, np.int64)
        np.cumsum(sizes, out=self.gstart[1:])
        self.pstart = np.zeros(G + 1, np.int64)
        np.cumsum(-(-sizes // lanes) * lanes, out=self.pstart[1:])
        self.perm = np.full(self.pstart[-1], -1, np.int64)
        for g in range(G):
            self.perm[self.pstart[g] : self.pstart[g] + sizes[g]] = self.order[self.gstart[g] : self.gstart[g + 1]]

    def _layout(self, Cn: np.ndarray) -> np.ndarray:
        """The centers by group, transposed and padded with +inf (the kernel's ``CPT``)."""
        CPT = np.full((Cn.shape[1], self.perm.shape[0]), np.inf, dtype=Cn.dtype)
        real = self.perm >= 0
        CPT[:, real] = Cn[self.perm[real]].T
        return CPT

    def step(self, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        import numba

        from .backend import rounding_slack

        Cn = centers.contiguous().numpy()
        n, d = self._xn.shape
        c64 = Cn.astype(np.float64)
        numba.set_num_threads(pass_threads())
        nt = numba.get_num_threads()
        if self.gof is None:
            self._group(Cn)
        if self.prev is None:  # every bound anew, from the expansion
            changed = self._start(centers, Cn, nt)
            self.prev = c64
            return self.labels, self.sums, self.counts, changed
        drift = drifts(c64, self.prev)
        gmax = np.zeros(self.n_groups)
        np.maximum.at(gmax, self.gof, drift)
        self.gcum += gmax
        self._step(Cn, drift, rounding_slack(Cn.dtype, d), nt)
        self.prev = c64
        return self.labels, self.sums, self.counts, int(self.moved.sum())

    def final(self, centers: torch.Tensor) -> AssignUpdateResult:
        """What a full pass against ``centers`` (k, d) returns (labels, distances, sums and counts in the compute
        dtype, a batch of one), from a step and the distances of every point to its own center: the same bits."""
        import numba

        labels, sums, counts, _ = self.step(centers)
        mind = np.empty(labels.shape[0], dtype=self._xn.dtype)
        K.own_sq_dist(self._xn, centers.contiguous().numpy(), labels.numpy(), mind, numba.get_num_threads())
        cdt = centers.dtype
        return AssignUpdateResult(
            labels.unsqueeze(0), torch.from_numpy(mind).unsqueeze(0), sums.to(cdt).unsqueeze(0), counts.to(cdt)[None]
        )

    def _start(self, centers: torch.Tensor, Cn: np.ndarray, nt: int) -> int:
        """Every bound from one GEMM pass (:func:`.kernels.group_bounds`: provisional labels), then a step without
        drift (the exact labels) and the sums; the labels that changed."""
        from .backend import center_panels, rounding_slack

        n, d = self._xn.shape
        old = self.labels.clone()
        CP, csq, chunks = center_panels(Cn[self.order])
        slack = rounding_slack(Cn.dtype, d)
        self.gcum[:] = 0.0
        K.group_bounds(
            self._xn, CP, csq, chunks, self.gstart, self.order, slack, self.labels.numpy(), self.upper, self.L, nt
        )
        self._valid[:] = 0  # the labels are group_bounds' provisional ones: every block's partials anew
        self._step(Cn, np.zeros(Cn.shape[0]), slack, nt)
        changed = int((old != self.labels).sum()) if self.started else n
        self.started = True
        return changed
