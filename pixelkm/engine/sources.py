"""Data sources of the Lloyd loop: what one pass over the data gives, and how empty clusters are refilled.

:class:`BatchSource` holds b in-memory problems (b, n, d), with weights and masks; :class:`StreamSource` reads
one problem chunk by chunk (:class:`pixelkm.io.pipeline.ChunkReader`) and keeps, per pass, the k farthest rows
for the refill. Both sum their passes over the processes of their communicator.
"""

from __future__ import annotations

import torch

from .._result import AssignUpdateResult, PassExtras
from ..backends import Backend, select_backend
from ..ops import run_assign_update
from .comm import LOCAL, LocalComm
from .relocate import Candidates, relocate_empty_clusters


def mean_feature_variance(
    X: torch.Tensor,
    mask: torch.Tensor | None = None,
    comm: LocalComm = LOCAL,
    rows: int = 1 << 18,
    backend: Backend | None = None,
) -> torch.Tensor:
    """Mean over features of each feature's (unweighted) variance, per problem: shape (b,), float64.

    Only the points where ``mask`` is True count. Two chunked passes in float64, so that no float copy of X
    is made; without a mask, the ``backend``'s :meth:`~pixelkm.backends.Backend.feature_sums` where it has one (the
    cpu backend's kernel: no float64 copy of a chunk either). No host synchronization.
    """
    b, n, d = X.shape
    first = None if mask is not None or backend is None else backend.feature_sums(X[0])
    if first is not None:
        total = torch.stack([first] + [backend.feature_sums(X[i]) for i in range(1, b)])
        count = torch.full((b, 1), float(n), dtype=torch.float64)
        comm.sum_(total)
        comm.sum_(count)
        mean = total / count
        sq = torch.stack([backend.feature_sums(X[i], mean[i]) for i in range(b)])
        comm.sum_(sq)
        return (sq / count).mean(1)
    total = torch.zeros(b, d, dtype=torch.float64, device=X.device)
    count = torch.full((b, 1), float(n), dtype=torch.float64, device=X.device)
    m = None if mask is None else mask.to(torch.float64).unsqueeze(-1)
    for start in range(0, n, rows):
        part = X[:, start : start + rows].double()
        total += (part if m is None else part * m[:, start : start + rows]).sum(1)
    if m is not None:
        count = m.sum(1)
    comm.sum_(total)
    comm.sum_(count)
    mean = (total / count).unsqueeze(1)
    sq = torch.zeros(b, d, dtype=torch.float64, device=X.device)
    for start in range(0, n, rows):
        part = (X[:, start : start + rows].double() - mean).square_()
        sq += (part if m is None else part * m[:, start : start + rows]).sum(1)
    comm.sum_(sq)
    return (sq / count).mean(1)


def _inertia(res: AssignUpdateResult, sample_weight: torch.Tensor | None, spherical: bool) -> torch.Tensor:
    """(Weighted) sum of squared distances per problem, or of cosine distances when ``spherical``; float64."""
    inertia = res.inertia(sample_weight)
    return inertia / 2 if spherical else inertia


class BatchSource:
    """b in-memory problems: X (b, n, d), weights (b, n) in the compute dtype or None (zero where ``mask`` is
    False), mask (b, n) or None; the points where the mask is False get label -1."""

    def __init__(
        self,
        X: torch.Tensor,
        sample_weight: torch.Tensor | None,
        mask: torch.Tensor | None = None,
        *,
        backend: str = "auto",
        chunk_size: int | None = None,
        comm: LocalComm = LOCAL,
        cache: dict | None = None,
    ) -> None:
        self.X, self.w, self.mask = X, sample_weight, mask
        self.backend, self.chunk_size, self.comm = backend, chunk_size, comm
        self.cache: dict = {} if cache is None else cache  # what the backend prepared from X, for the next passes

    def assign(self, centers: torch.Tensor, distances: bool, extras: PassExtras | None = None) -> AssignUpdateResult:
        """One pass: labels, distances (when asked), and sums and counts summed over every process."""
        more = {} if extras is None else {"extras": extras}
        res = run_assign_update(
            self.X,
            centers,
            self.w,
            backend=self.backend,
            chunk_size=self.chunk_size,
            compute_distances=distances,
            cache=self.cache,
            **more,
        )
        if self.comm.is_local:
            return res
        sums, counts = res.sums.double(), res.counts.double()
        self.comm.sum_(sums)
        self.comm.sum_(counts)
        return AssignUpdateResult(res.labels, res.min_sq_dist, sums.to(res.sums.dtype), counts.to(res.counts.dtype))

    def assign_tracked(
        self, centers: torch.Tensor, distances: bool, previous: torch.Tensor, spare: torch.Tensor | None
    ) -> tuple[AssignUpdateResult, torch.Tensor | None]:
        """:meth:`assign`, and per problem how many labels differ from ``previous`` (this process's points) where
        the backend counts them as it writes them (None otherwise, and with a mask); the labels may be written into
        ``spare`` (a labels tensor no longer needed, or None)."""
        if self.mask is not None or select_backend(self.backend, self.X, centers).name != "cpu":
            return self.assign(centers, distances), None
        extras = PassExtras(previous_labels=previous, labels_out=spare)
        res = self.assign(centers, distances, extras)
        return res, extras.n_changed

    def refill(self, res: AssignUpdateResult, centers: torch.Tensor, sync: bool) -> AssignUpdateResult:
        """Empty clusters take the farthest points (a second pass when ``res`` has no distances)."""
        if res.min_sq_dist is None:
            res = self.assign(centers, True)
        if self.comm.is_local:
            return relocate_empty_clusters(res, self.X, self.w, sync=sync)
        far = Candidates(centers.shape[1])  # one problem (b = 1) per shard: its farthest rows, merged over ranks
        w = None if self.w is None else self.w[0]
        far.add(self.X[0], res.min_sq_dist[0].double(), res.labels[0], w, res.sums.dtype)
        return far.merged(self.comm).relocate(res, w is not None, sync=sync)

    def labels(self, res: AssignUpdateResult) -> torch.Tensor:
        return res.labels if self.mask is None else res.labels.masked_fill(~self.mask, -1)

    def inertia(self, res: AssignUpdateResult, spherical: bool) -> torch.Tensor:
        inertia = _inertia(res, self.w, spherical)
        self.comm.sum_(inertia)
        return inertia

    def select(self, keep: torch.Tensor) -> BatchSource:
        """The problems ``keep`` only (a copy of their data; the backend's prepared data follows them)."""
        X = self.X[keep]
        w = None if self.w is None else self.w[keep]
        cache = {name: prepared.select(keep, X, w) for name, prepared in self.cache.items()}
        mask = None if self.mask is None else self.mask[keep]
        return BatchSource(X, w, mask, backend=self.backend, chunk_size=self.chunk_size, comm=self.comm, cache=cache)

    def final(self, centers: torch.Tensor, spherical: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and inertia against the final centers. This pass does not reuse the prepared data: its rounding
        must not depend on the batch-mates (a problem's final labels and inertia are the same alone as in a batch,
        and an n_init pick with it). Also keeps that pass's counts (b, k) in ``final_counts``: unweighted, a
        cluster's count is positive exactly when a label names it."""
        res = run_assign_update(self.X, centers, self.w, backend=self.backend, chunk_size=self.chunk_size)
        return self.final_from(res, spherical)

    def final_from(self, res: AssignUpdateResult, spherical: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`final` from the result of that pass, had by other means (a bounded state's ``final``)."""
        self.final_counts = res.counts
        return self.labels(res), self.inertia(res, spherical)


class StreamSource:
    """One problem read chunk by chunk from a :class:`pixelkm.io.pipeline.ChunkReader` (with its weights); each
    pass keeps the k farthest rows of positive weight, to refill empty clusters as the in-memory fit does."""

    def __init__(self, reader, *, backend: str = "auto", comm: LocalComm = LOCAL) -> None:
        self.reader, self.backend, self.comm = reader, backend, comm
        self.iteration = 0
        self._inertia = self._far = None

    def pass_(self, centers: torch.Tensor, label: str, labels_out=None):
        """One pass against centers (k, d): float64 sums, counts and inertia of this process's rows (weighted when
        the reader has weights), and their farthest rows (none when ``labels_out`` takes the labels instead)."""
        k, d = centers.shape
        sums = torch.zeros(k, d, dtype=torch.float64, device=centers.device)
        counts = torch.zeros(k, dtype=torch.float64, device=centers.device)
        inertia = torch.zeros((), dtype=torch.float64, device=centers.device)
        far = Candidates(k)
        run = self.reader
        for x, w in run.pairs(label) if labels_out is None else ((x, None) for x in run.chunks(label)):
            wb = None if w is None else w.unsqueeze(0)
            res = run_assign_update(
                x.unsqueeze(0), centers.unsqueeze(0), wb, backend=self.backend, chunk_size=run.block
            )
            sums += res.sums[0].double()
            counts += res.counts[0].double()
            dist = res.min_sq_dist[0].double()
            inertia += dist.sum() if w is None else (dist * w.double()).sum()
            if labels_out is not None:
                labels_out(res.labels[0])
            else:
                far.add(x, dist, res.labels[0], w, centers.dtype)
        return sums, counts, inertia, far

    def _reduced_pass(self, centers: torch.Tensor, label: str):
        sums, counts, inertia, far = self.pass_(centers[0], label)
        for t in (sums, counts, inertia):
            self.comm.sum_(t)
        return sums, counts, inertia, far

    def assign(self, centers: torch.Tensor, distances: bool) -> AssignUpdateResult:
        self.iteration += 1
        sums, counts, self._inertia, self._far = self._reduced_pass(centers, f"Lloyd iteration {self.iteration}")
        return AssignUpdateResult(None, None, sums.unsqueeze(0), counts.unsqueeze(0))

    def refill(self, res: AssignUpdateResult, centers: torch.Tensor, sync: bool) -> AssignUpdateResult:
        return self._far.merged(self.comm).relocate(res, self.reader.weights is not None)

    def labels(self, res: AssignUpdateResult) -> None:
        return None  # the rows' labels are not kept: identical labels give a zero shift, the same stop

    def inertia(self, res: AssignUpdateResult, spherical: bool) -> torch.Tensor:
        return self._inertia.view(1)

    def select(self, keep: torch.Tensor) -> StreamSource:
        return self

    def final(self, centers: torch.Tensor, spherical: bool) -> tuple[None, torch.Tensor]:
        _, self.final_counts, inertia, _ = self._reduced_pass(centers, "final inertia")
        return None, inertia.view(1)
