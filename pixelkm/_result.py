"""The one result type of the fused assign-and-update pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class AssignUpdateResult:
    """Output of one pass of :func:`pixelkm.assign_update`.

    Shapes are given for a batch of ``b`` problems; a 2-D input drops the leading ``b``. :func:`pixelkm.assign_update`
    gives NumPy arrays for NumPy (or array-like) ``X`` and tensors on X's device for a tensor.

    Attributes
    ----------
    labels : int64 tensor of shape (b, n), or None when labels were not requested
        Index of the nearest center of each point; ties go to the lowest index.
    min_sq_dist : tensor of shape (b, n), or None when labels were not requested
        Squared Euclidean distance of each point to its nearest center (not weighted).
    sums : tensor of shape (b, k, d)
        Per-cluster sum of the points (times their weight) nearest to it.
    counts : tensor of shape (b, k)
        Per-cluster number (or total weight) of the points nearest to it.
    """

    labels: torch.Tensor | None
    min_sq_dist: torch.Tensor | None
    sums: torch.Tensor
    counts: torch.Tensor

    def squeeze_batch(self) -> AssignUpdateResult:
        """Drop a leading batch dimension of size 1 (used for 2-D inputs)."""
        return AssignUpdateResult(
            labels=None if self.labels is None else self.labels[0],
            min_sq_dist=None if self.min_sq_dist is None else self.min_sq_dist[0],
            sums=self.sums[0],
            counts=self.counts[0],
        )

    def numpy(self) -> AssignUpdateResult:
        """The same result with NumPy arrays (host copies) in place of tensors."""
        fields = (self.labels, self.min_sq_dist, self.sums, self.counts)
        return AssignUpdateResult(*(None if t is None else t.detach().cpu().numpy() for t in fields))

    def inertia(self, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of (weighted) squared distances per problem, in float64 (a NumPy value for a NumPy result)."""
        if self.min_sq_dist is None:
            raise ValueError("inertia needs min_sq_dist: call assign_update with compute_labels=True")
        if isinstance(self.min_sq_dist, np.ndarray):
            d = self.min_sq_dist.astype(np.float64)
            return (d if sample_weight is None else d * np.asarray(sample_weight, dtype=np.float64)).sum(-1)
        if sample_weight is None:  # summed in float64 without a float64 copy of the distances
            return self.min_sq_dist.sum(-1, dtype=torch.float64)
        d = self.min_sq_dist.to(torch.float64)
        return (d * torch.as_tensor(sample_weight, device=d.device).to(torch.float64)).sum(-1)


@dataclass
class PassExtras:
    """Backend-specific extras of one pass: asked for by internal callers, filled in by a backend that has them.

    With ``bounds=True`` the torch backend sets ``min_sq_upper`` and ``second_sq_lower`` (shape (b, n)): an upper
    bound of each point's squared distance to its nearest center and a lower bound of that to its second-nearest,
    from the distance block itself (the rounding of the matmul accounted for), and returns ``sums`` and ``counts``
    in their float64 accumulator. The bounds pass strategy of the engine needs these.

    With ``previous_labels`` (b, n) int64, the cpu backend sets ``n_changed`` (b,) int64: how many labels differ from
    those, counted as the labels are written; and with ``labels_out`` (b, n) int64 too (a buffer no longer needed,
    not ``previous_labels``) it writes the labels there instead of into a new tensor. Other backends leave
    ``n_changed`` None (the caller compares the labels itself).
    """

    bounds: bool = False
    min_sq_upper: torch.Tensor | None = None
    second_sq_lower: torch.Tensor | None = None
    previous_labels: torch.Tensor | None = None
    labels_out: torch.Tensor | None = None
    n_changed: torch.Tensor | None = None
