"""What a backend is: a name, what it supports, its tolerances, and one batched operation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

from .._result import AssignUpdateResult

if TYPE_CHECKING:
    from .._result import PassExtras


class Bounds(Protocol):
    """The state of a bounded pass strategy over one problem (see ``pixelkm.engine.bounds``). It may also have
    ``final(centers) -> AssignUpdateResult``: what a full pass against the final centers returns (labels, distances,
    sums and counts in the compute dtype, a batch of one), bit for bit; the fit then takes it instead of that pass."""

    def step(self, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Assign every point to its nearest center of ``centers`` (k, d) (compute dtype), exactly as a full pass
        would (lowest index on ties), using and updating the bounds; returns (labels (n,) integer tensor, sums
        (k, d) float64, counts (k,) float64, n_changed: labels changed since the previous step; n for the first).
        The state remembers the previous centers itself to compute their drifts."""
        ...

    def invalidate(self) -> None:
        """Sums/counts or labels were changed from outside (empty-cluster relocation): the next step is a full
        pass."""
        ...


class Backend:
    """Base class of the pluggable implementations of the fused assign-and-update pass.

    Subclasses set the class attributes and implement :meth:`assign_update` for batched inputs:
    ``X`` of shape (b, n, d) in any supported dtype, ``centers`` (b, k, d) in the compute dtype
    (float32, or float64 for float64 data), ``sample_weight`` (b, n) in the compute dtype or None.
    """

    #: registry name, as passed to ``backend=``
    name: str = ""
    #: device types it runs on
    devices: tuple[str, ...] = ()
    #: input dtypes it reads
    dtypes: tuple[torch.dtype, ...] = ()
    #: (rtol, atol) of ``sums`` and ``min_sq_dist`` against the torch reference, per input dtype
    tolerances: dict[torch.dtype, tuple[float, float]] = {}

    def not_supported_reasons(self, X: torch.Tensor, centers: torch.Tensor) -> list[str]:
        """Every reason why this backend cannot run on these inputs (empty when it can)."""
        reasons = []
        if X.device.type not in self.devices:
            reasons.append(f"{self.name}: device {X.device.type!r} not in {self.devices}")
        if X.dtype not in self.dtypes:
            reasons.append(f"{self.name}: dtype {X.dtype} not supported")
        return reasons

    #: whether ``chunk_size`` bounds this backend's memory (an out-of-memory retry with smaller chunks helps)
    chunks: bool = True

    def auto_reasons(self, X: torch.Tensor, centers: torch.Tensor) -> list[str]:
        """Reasons that keep ``backend="auto"`` (but not an explicit request) from taking this backend."""
        return []

    def chunk_rows(self, X: torch.Tensor, centers: torch.Tensor) -> int:
        """Rows per chunk used when no ``chunk_size`` is given (the whole of n unless a backend chunks)."""
        return X.shape[1]

    def assign_update(
        self,
        X: torch.Tensor,
        centers: torch.Tensor,
        sample_weight: torch.Tensor | None,
        *,
        compute_labels: bool = True,
        compute_distances: bool | None = None,
        chunk_size: int | None = None,
        deterministic: bool | None = None,
        cache: dict | None = None,
        extras: PassExtras | None = None,
    ) -> AssignUpdateResult:
        """The fused pass. ``deterministic=True`` asks for bit-identical results run after run; None means
        the backend's default (deterministic when ``torch.are_deterministic_algorithms_enabled()``).

        ``compute_distances=False`` means the caller does not need ``min_sq_dist`` (a backend may still return
        it); None means the same as ``compute_labels``. ``cache`` is a dict private to one fit over the same X,
        where a backend may keep what it prepared in one pass for the next (or ignore it); what it keeps there
        must have a method ``select(keep, X, sample_weight)`` giving the same for the problems ``keep`` only,
        when the fit goes on with those (held in a new ``X``). ``extras`` asks for backend-specific outputs (see
        :class:`~pixelkm._result.PassExtras`); it is passed only when not None, and a backend without any ignores
        it."""
        raise NotImplementedError

    def feature_sums(self, X: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor | None:
        """Per feature of ONE problem X (n, d), float64 (d,): the sum of the values, or with ``mean`` (d,) the sum
        of their squared deviations from it (the two passes of the tolerance's variance), or None where this
        backend has no kernel for it (the engine's chunked torch passes serve)."""
        return None

    def bounds(
        self, X: torch.Tensor, sample_weight: torch.Tensor | None, n_clusters: int, kind: str = "hamerly"
    ) -> Bounds | None:
        """A bounded-pass state for ONE problem: X (n, d) in its own dtype, sample_weight (n,) in the compute dtype
        or None; ``kind`` "hamerly" or "yinyang". None when this backend has no such bounded pass for these inputs
        (for "hamerly", the engine then uses its torch one)."""
        return None

    def auto_bounds(self, n: int, d: int, n_clusters: int, budget: int) -> str | None:
        """The bounded pass (a ``kind`` of :meth:`bounds`) that ``algorithm="auto"`` takes for n rows of d features
        and ``n_clusters`` centers, its bounds within ``budget`` bytes: one measured faster than this backend's full
        passes there, or None (full passes)."""
        return None

    def __repr__(self) -> str:
        return f"<pixelkm backend {self.name!r}>"
