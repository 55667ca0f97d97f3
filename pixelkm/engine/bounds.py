"""The bounds pass strategy: the assignments of full passes with most distance computations skipped.

Here: Hamerly's bounds on the torch backend's passes (:class:`TorchBounds`), and :func:`bounded_state`, which
picks a strategy for a fit (a backend's own bounds where it has them: the cpu backend's Hamerly and Yinyang).

Each point keeps an upper bound ``u`` on the distance to its own center and a lower bound ``l`` on the distance to
every other center (G. Hamerly, "Making k-means even faster", SDM 2010). After the centers move by ``delta``, ``u``
grows by its own center's move and ``l`` shrinks by the largest move of any center; a point whose ``u`` is at
most ``max(l, s[own])`` (``s[j]``: half the distance from center j to its nearest other center) cannot have changed
cluster and costs a few vector operations. Only the others get their distances recomputed (from
:data:`TIGHTEN_K` clusters, first the one to their own center, which often settles them), to every center
through the backend's pass. Sums and counts are updated by the points that changed cluster only, in float64
(exact for integer data such as pixels and counts, so the centers are those of Lloyd's full passes).

A state runs full passes while many points move (more than :data:`ENTER_FRACTION` of them), since a bounded step
would then recompute most of them at a higher cost per point; a full pass also sets every point's bounds, and a
step whose bounds leave more than :data:`FULL_PASS_FRACTION` of the points unsettled is a full pass instead.

The bounds are kept in float64 on the distances that the full pass rounded (the pass returns a rounding-safe
lower bound for the second-nearest center), so the labels are the exact nearest centers; they can differ from a
full float32 pass only where two centers are at the same distance within float32 rounding.
"""

from __future__ import annotations

import torch

from .._result import PassExtras
from .._sysinfo import available_memory
from .._validation import ALGORITHMS
from ..backends import select_backend
from ..ops import run_assign_update

#: the fewest rows for which ``algorithm="auto"`` takes the bounds (below, full passes cost next to nothing)
MIN_ROWS = 1 << 14
#: memory the bounds hold per row: float64 upper and lower bounds and two float64 work arrays, a bool mask
BYTES_PER_ROW = 8 * 4 + 1


def memory_budget() -> int:
    """Bytes ``algorithm="auto"`` lets the bounds take: 1 GiB, and no more than a quarter of the free memory
    (beyond, full passes, whose extra memory per row is two int64 label arrays)."""
    free = available_memory()
    return 1 << 30 if free is None else min(1 << 30, free // 4)


#: from this many clusters a candidate's distance to its own center is computed first (it often settles it)
TIGHTEN_K = 24
#: above this fraction of the points left unsettled by their bounds, a step is a full pass instead
FULL_PASS_FRACTION = 0.2
#: a full pass sets the bounds (and the next step uses them) once the last one moved at most this fraction
ENTER_FRACTION = 0.02


def _separation(centers: torch.Tensor) -> torch.Tensor:
    """Half the distance from each center (k, d) to its nearest other center, float64 (inf when k == 1)."""
    c = centers.double()
    # differences, not the matmul expansion (whose rounding could overstate a distance): k x k is small
    dist = torch.cdist(c.unsqueeze(0), c.unsqueeze(0), compute_mode="donot_use_mm_for_euclid_dist")[0]
    dist.fill_diagonal_(torch.inf)
    return dist.amin(1) / 2


def _own_distance(x: torch.Tensor, rows: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Exact (float64) distance of the points ``x[rows]`` to their centers ``centers[labels]``, feature by feature
    (1-D gathers are many times faster than gathering rows of a few features on the CPU)."""
    if x.shape[1] > 8:
        return (x.index_select(0, rows).double() - centers.double().index_select(0, labels)).square_().sum(1).sqrt_()
    c = centers.double().t()
    total = torch.zeros(rows.numel(), dtype=torch.float64, device=x.device)
    for j in range(x.shape[1]):
        diff = x[:, j].index_select(0, rows).double() - c[j].index_select(0, labels)
        total.addcmul_(diff, diff)
    return total.sqrt_()


class TorchBounds:
    """Hamerly's bounds over one problem X (n, d), on the torch backend's passes (see
    :class:`pixelkm.backends.Bounds` for the protocol).

    The bounds are stored relative to running totals so that a step touches each point with two gathers and a
    few vector operations: ``drift[j]`` is the summed move of center j and ``spread`` the summed largest move;
    a point's upper bound is ``up[i] + drift[label]`` and its lower bound ``low[i] - spread``.
    """

    def __init__(
        self,
        X: torch.Tensor,
        sample_weight: torch.Tensor | None,
        n_clusters: int,
        *,
        chunk_size: int | None = None,
        cache: dict | None = None,
    ) -> None:
        n = X.shape[0]
        dev = X.device
        self.x, self.X = X, X.unsqueeze(0)
        self.sw = None if sample_weight is None else sample_weight.unsqueeze(0)
        self.w = None if sample_weight is None else sample_weight.double()
        self.chunk_size = chunk_size
        self.cache = {} if cache is None else cache
        self.bounded = False  # plain full passes until few points change cluster, then bounds
        self.moved_frac = 1.0  # the fraction of the points that changed cluster in the last full pass
        self.enter = ENTER_FRACTION
        self.labels = self.up = self.low = self.sums = self.counts = self.sep = None
        self.drift = torch.zeros(n_clusters, dtype=torch.float64, device=dev)
        self.upper = torch.empty(n, dtype=torch.float64, device=dev)
        self.bound = torch.empty(n, dtype=torch.float64, device=dev)
        self.over = torch.empty(n, dtype=torch.bool, device=dev)
        self.spread = 0.0
        self.previous = None

    def invalidate(self) -> None:
        self.bounded = False
        self.moved_frac = 1.0

    def _pass(self, X, centers, sample_weight, extras, cache=None):
        return run_assign_update(
            X,
            centers,
            sample_weight,
            backend="torch",
            compute_distances=False,
            chunk_size=self.chunk_size,
            cache=cache,
            extras=extras,
        )

    def step(self, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        x, n = self.x, self.x.shape[0]
        if self.previous is not None:  # the drifts of the centers since the last step
            delta = (centers - self.previous).double().square().sum(1).sqrt()
            self.drift += delta
            self.spread += float(delta.max())
        self.previous = centers
        self.sep = _separation(centers)
        C = centers.unsqueeze(0)
        drift, spread = self.drift, self.spread
        n_changed = n
        stepped = False
        if self.bounded:
            labels, up, low = self.labels, self.up, self.low
            torch.add(up, drift.index_select(0, labels), out=self.upper)
            torch.maximum(torch.sub(low, spread, out=self.bound), self.sep.index_select(0, labels), out=self.bound)
            cand = torch.nonzero(torch.gt(self.upper, self.bound, out=self.over)).squeeze(1)
            # a candidate costs a few times what a point of a full pass does: with many, a full pass is cheaper,
            # and the bounds wait for the passes to settle further
            self.bounded = cand.numel() <= FULL_PASS_FRACTION * n
            self.enter = self.enter if self.bounded else self.enter / 2
        if self.bounded:
            stepped = True
            sums, counts = self.sums, self.counts
            changed = 0
            if cand.numel() and centers.shape[0] >= TIGHTEN_K:  # first the distance to their own center: it
                lab_c = labels[cand]  # settles most of them
                own = _own_distance(x, cand, centers, lab_c)
                up[cand] = own - drift.index_select(0, lab_c)
                cand = cand[own > self.bound[cand]]
            if cand.numel():  # then the distances to every center, for those left
                xc = x.index_select(0, cand)
                extras = PassExtras(bounds=True)
                sub = self._pass(xc.unsqueeze(0), C, None, extras)
                new = sub.labels[0]
                up[cand] = extras.min_sq_upper[0].double().sqrt_() - drift.index_select(0, new)
                low[cand] = extras.second_sq_lower[0].double().sqrt_().add_(spread)
                old = labels[cand]
                moved = new != old
                changed = int(moved.sum())
                if changed:
                    w = self.w
                    pts, old, new = cand[moved], old[moved], new[moved]
                    wx = xc[moved].double() if w is None else xc[moved].double() * w[pts].unsqueeze(1)
                    wc = torch.ones_like(pts, dtype=torch.float64) if w is None else w[pts]
                    sums.index_add_(0, old, wx, alpha=-1).index_add_(0, new, wx)
                    counts.index_add_(0, old, wc, alpha=-1).index_add_(0, new, wc)
                    labels[pts] = new
            n_changed = changed
        else:
            # a full pass; it also sets every point's bounds once the last one moved few points (a step with
            # bounds would then leave most points settled)
            want = self.labels is not None and self.moved_frac <= self.enter
            extras = PassExtras(bounds=True) if want else None
            res = self._pass(self.X, C, self.sw, extras, self.cache)
            if self.labels is not None:
                n_moved = int((res.labels[0] != self.labels).sum())
                self.moved_frac = n_moved / n
                if not stepped:
                    n_changed = n_moved
            self.labels = res.labels[0].clone() if want else res.labels[0]
            self.sums, self.counts = res.sums[0].double(), res.counts[0].double()
            if want:
                self.up = extras.min_sq_upper[0].double().sqrt_() - drift.index_select(0, self.labels)
                self.low = extras.second_sq_lower[0].double().sqrt_().add_(spread)
                self.bounded = True
        return self.labels, self.sums, self.counts, n_changed


#: what ``algorithm="auto"`` takes, and the measurement behind it (whole fits to tol=1e-4 from the same init,
#: 2-core x86-64, 2026-12-02, same iterates either way): on the torch backend Hamerly's bounds from MIN_ROWS rows
#: (its full passes are many torch operations); on the fused cpu kernel full passes. Its bounds, since their
#: undecided points are scanned in tiles as the full pass scans (12:40 UTC, KMeans(algorithm=...), time of the
#: bounded fit / the full-pass fit, min of 2 interleaved): 1M-pixel photo d=3, K=16/64/256: 1.28x/1.11x/0.84x;
#: the 12 MP photo's color histogram (960,825 weighted colors) 1.28x/1.25x/1.00x. Hamerly's one lower bound
#: leaves 10-35% of the points of a photo undecided at every step, and a bounded step still reads and writes 24
#: bytes of bounds and labels per point and recomputes the sums in a second pass. (Before the tiles, one center
#: at a time per undecided point: 1.5-2.1x on photos, x,y,R,G,B and blobs; 4.1x on the histogram at K=256.)
#: Yinyang's bounds on the cpu backend beyond SMALL_D = 14 features from YINYANG_MIN_K = 128 centers (64 from 128
#: features)
#: (pixelkm.backends.cpu.backend, with the measurements), whose single-point scans of the groups left open cost about
#: what the GEMM pass costs per (point, center) and skip most of them once the first iterations are done.
AUTO_RULE = (
    "torch backend: hamerly from MIN_ROWS rows; cpu backend: yinyang beyond 14 features from 128 centers (64 from 128"
    " features) and MIN_ROWS rows, else lloyd; triton: lloyd"
)


def bounded_state(
    algorithm: str,
    X: torch.Tensor,
    sample_weight: torch.Tensor | None,
    centers: torch.Tensor,
    *,
    backend: str = "auto",
    chunk_size: int | None = None,
    cache: dict | None = None,
    batched_or_masked: bool = False,
    spherical: bool = False,
    sync: bool = True,
    distributed: bool = False,
    verbose: bool = False,
):
    """The bounded pass state of a fit of X (1, n, d) from centers (1, k, d), or None for full passes.

    "hamerly" and "yinyang" ask for those bounds (an error where they cannot run), "auto" takes bounds where they
    pay (:data:`AUTO_RULE`), while they fit in :func:`memory_budget`, "lloyd" never. Hamerly's is the backend's
    own bounded pass (:meth:`pixelkm.backends.Backend.bounds`) where it has one, else the torch one; Yinyang's
    only the backend's (the cpu backend's).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "lloyd":
        return None
    why = []
    if X.shape[0] != 1 or batched_or_masked:
        why.append("it runs one problem at a time (not a batch, no mask)")
    if spherical or not sync or distributed or verbose:
        why.append("it needs no spherical k-means, host syncs, one process and verbose=False")
    n, d, k = X.shape[1], X.shape[2], centers.shape[1]
    if algorithm == "auto" and (why or X.device.type != "cpu" or n < MIN_ROWS or k < 2):
        return None
    w = None if sample_weight is None else sample_weight[0]
    state = None
    kind = algorithm
    if not why:
        impl = select_backend(backend, X, centers)
        if algorithm == "auto":
            if impl.name == "torch":
                kind = "hamerly" if n * BYTES_PER_ROW <= memory_budget() else None
            else:  # the fused kernels' full passes beat Hamerly's bounds: see AUTO_RULE
                kind = impl.auto_bounds(n, d, k, memory_budget())
            if kind is None:
                return None
        state = impl.bounds(X[0], w, k, kind)
        # Hamerly's torch bounds serve where the auto choice of backend has none for these data (the cpu
        # backend's stop at 14 features); a backend the caller named runs its own passes or none
        if state is None and (kind != "hamerly" or (impl.name != "torch" and backend != "auto")):
            runs = "the torch backend or one with bounds" if kind == "hamerly" else "the cpu backend"
            why.append(f"it runs on {runs} (the chosen backend here, {impl.name!r}, has none for {d} features)")
    if why:
        if algorithm == "auto":
            return None
        raise ValueError(f"algorithm={algorithm!r} cannot run here: " + "; ".join(why))
    if state is None:
        state = TorchBounds(X[0], w, k, chunk_size=chunk_size, cache=cache)
    return state
