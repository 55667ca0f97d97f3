"""What a backend is: a name, what it supports, its tolerances, and one batched operation."""

from __future__ import annotations

import torch

from .._result import AssignUpdateResult


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
    ) -> AssignUpdateResult:
        """The fused pass. ``deterministic=True`` asks for bit-identical results run after run; None means
        the backend's default (deterministic when ``torch.are_deterministic_algorithms_enabled()``).

        ``compute_distances=False`` means the caller does not need ``min_sq_dist`` (a backend may still return
        it); None means the same as ``compute_labels``. ``cache`` is a dict private to one fit over the same X,
        where a backend may keep what it prepared in one pass for the next (or ignore it); what it keeps there
        must have a method ``select(keep, X, sample_weight)`` giving the same for the problems ``keep`` only,
        when the fit goes on with those (held in a new ``X``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<pixelkm backend {self.name!r}>"
