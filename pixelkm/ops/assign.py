"""``assign_update``: the one fused operation of a Lloyd step, with validation and backend dispatch."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .._result import AssignUpdateResult, PassExtras
from .._validation import as_tensor, check_data, check_param, check_sample_weight, compute_dtype
from ..backends import select_backend


def prepare_batched(
    X: torch.Tensor, centers: torch.Tensor, sample_weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Give 2-D inputs a leading batch dimension of 1; 3-D inputs pass through."""
    if X.ndim == 2:
        return X.unsqueeze(0), centers.unsqueeze(0), None if sample_weight is None else sample_weight.unsqueeze(0)
    return X, centers, sample_weight


#: rows per chunk that fitted in device memory after an out-of-memory retry, per (backend, device, dtype, shape)
_FITTING_ROWS: dict[tuple, int] = {}


def run_assign_update(
    X: torch.Tensor,
    centers: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    *,
    backend: str = "auto",
    compute_labels: bool = True,
    compute_distances: bool | None = None,
    chunk_size: int | None = None,
    deterministic: bool | None = None,
    cache: dict | None = None,
    extras: PassExtras | None = None,
) -> AssignUpdateResult:
    """Unchecked batched entry point for internal callers: X (b, n, d), centers (b, k, d) in the compute dtype.

    ``compute_distances=False`` (with labels) tells the backend that ``min_sq_dist`` is not needed: a backend
    may then leave it None. ``cache`` is a dict that lives as long as one fit over the same X: a backend may keep
    data prepared in the first pass there for the next ones. ``extras`` asks the backend for what only some
    backends give (see :class:`~pixelkm._result.PassExtras`).

    When the device runs out of memory, the pass is retried with half as many rows per chunk (with a
    warning) until it fits; only a single row that does not fit is an error.
    """
    impl = select_backend(backend, X, centers)
    key = (impl.name, str(X.device), X.dtype, tuple(centers.shape))
    rows = chunk_size or _FITTING_ROWS.get(key)
    more = {} if extras is None else {"extras": extras}
    while True:
        try:
            result = impl.assign_update(
                X,
                centers,
                sample_weight,
                compute_labels=compute_labels,
                compute_distances=compute_distances,
                chunk_size=rows,
                deterministic=deterministic,
                cache=cache,
                **more,
            )
            if rows is not None and chunk_size is None:
                _FITTING_ROWS[key] = rows  # the next pass of the same fit starts from what fitted
            return result
        except torch.cuda.OutOfMemoryError as err:
            current = rows or impl.chunk_rows(X, centers)
            if not impl.chunks:
                raise MemoryError(
                    f"backend {impl.name!r} ran out of device memory and does not work in chunks; stream the data "
                    f"in smaller pieces or use backend='torch': {err}"
                ) from err
            if current <= 1:
                raise MemoryError(
                    f"backend {impl.name!r} ran out of device memory even with 1 row per chunk "
                    f"(k={centers.shape[1]}, d={centers.shape[2]}): {err}"
                ) from err
            rows = max(1, current // 2)
            if X.device.type == "cuda":
                torch.cuda.empty_cache()
            warnings.warn(
                f"out of device memory in assign_update ({impl.name}, {current} rows per chunk); "
                f"retrying with {rows} rows per chunk",
                ResourceWarning,
                stacklevel=2,
            )


def assign_update(
    X: Any,
    centers: Any,
    sample_weight: Any = None,
    *,
    backend: str = "auto",
    compute_labels: bool = True,
    chunk_size: int | None = None,
    deterministic: bool | None = None,
) -> AssignUpdateResult:
    """One pass over the data: nearest center of every point, and per-cluster sums and counts.

    Parameters
    ----------
    X : array-like or tensor of shape (n_samples, n_features) or (batch, n_samples, n_features)
        Data in uint8, float16, bfloat16, float32 or float64; read in its own dtype, chunk by chunk.
    centers : array-like or tensor of shape (n_clusters, n_features) or (batch, n_clusters, n_features)
    sample_weight : array-like or tensor of shape (n_samples,) or (batch, n_samples), optional
        Non-negative weights; ``sums`` and ``counts`` are then weighted.
    backend : {"auto", "torch", "triton", ...}
        Which implementation runs; see :func:`pixelkm.available_backends`.
    compute_labels : bool
        When False, only ``sums`` and ``counts`` are produced (``labels`` and ``min_sq_dist`` are None).
    chunk_size : int, optional
        Rows per chunk; by default chosen from a memory budget.
    deterministic : bool, optional
        True asks for bit-identical results run after run (the torch backend always is, on the CPU); None uses
        the backend's default, which follows ``torch.are_deterministic_algorithms_enabled()``.

    Returns
    -------
    AssignUpdateResult
        ``labels`` (int64), ``min_sq_dist``, ``sums`` and ``counts``, computed in float32 (float64 for float64
        data) and accumulated in float64: tensors on the device of ``X`` for a tensor ``X``, NumPy arrays otherwise.
    """
    Xt, was_tensor = as_tensor(X, "X")
    check_data(Xt, "X", ndims=(2, 3))
    cdt = compute_dtype(Xt.dtype)
    C, _ = as_tensor(centers, "centers")
    if C.ndim != Xt.ndim or C.shape[-1] != Xt.shape[-1] or (Xt.ndim == 3 and C.shape[0] != Xt.shape[0]):
        want = "(n_clusters, n_features)" if Xt.ndim == 2 else "(batch, n_clusters, n_features)"
        raise ValueError(f"centers must have shape {want} matching X {tuple(Xt.shape)}, got {tuple(C.shape)}")
    if C.shape[-2] == 0:
        raise ValueError("centers must hold at least one center")
    C = C.to(device=Xt.device, dtype=cdt)
    check_data(C, "centers", ndims=(Xt.ndim,))
    w = check_sample_weight(sample_weight, tuple(Xt.shape[:-1]), cdt, Xt.device)
    chunk_size = check_param("chunk_size", chunk_size)
    compute_labels = check_param("compute_labels", compute_labels)
    deterministic = check_param("deterministic", deterministic)
    batched = Xt.ndim == 3
    Xb, Cb, wb = prepare_batched(Xt, C, w)
    result = run_assign_update(
        Xb, Cb, wb, backend=backend, compute_labels=compute_labels, chunk_size=chunk_size, deterministic=deterministic
    )
    result = result if batched else result.squeeze_batch()
    return result if was_tensor else result.numpy()  # NumPy in, NumPy out
