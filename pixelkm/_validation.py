"""Input checking and conversion shared by the public entry points.

Everything that turns user input (NumPy arrays, torch tensors, array-likes) into torch tensors lives here,
so that ``assign_update``, ``KMeans`` and ``kmeans`` give the same errors for the same mistakes.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from typing import Any

import numpy as np
import torch

#: dtypes that the engine reads as they are (no float copy of the data is made).
SUPPORTED_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


class NotFittedError(ValueError, AttributeError):
    """Raised when a method that needs a fitted estimator is called before ``fit``."""


def not_fitted_error(message: str) -> NotFittedError:
    """A :class:`NotFittedError`; when scikit-learn is already imported, also an instance of its NotFittedError.

    scikit-learn is never imported here: code that catches its exception has imported it already.
    """
    sk = sys.modules.get("sklearn.exceptions")
    if sk is None:
        return NotFittedError(message)
    global _SK_NOT_FITTED
    if _SK_NOT_FITTED is None:
        _SK_NOT_FITTED = type("NotFittedError", (NotFittedError, sk.NotFittedError), {"__module__": __name__})
    return _SK_NOT_FITTED(message)


_SK_NOT_FITTED: type | None = None


class ConvergenceWarning(UserWarning):
    """A fit that found fewer distinct clusters than asked for (as scikit-learn's ConvergenceWarning; when
    scikit-learn is imported, the warning issued is an instance of both)."""


_SK_CONVERGENCE: type | None = None


def warn_fewer_clusters(present: torch.Tensor, n_clusters: int, stacklevel: int = 3) -> None:
    """Warn when a problem's clusters holding at least one point, ``present`` (b, k) bool, are fewer than k.

    Reads one value on the host."""
    found = int(present.sum(-1).min())
    if found >= n_clusters:
        return
    global _SK_CONVERGENCE
    category = ConvergenceWarning
    sk = sys.modules.get("sklearn.exceptions")
    if sk is not None:
        if _SK_CONVERGENCE is None:
            _SK_CONVERGENCE = type(
                "ConvergenceWarning", (ConvergenceWarning, sk.ConvergenceWarning), {"__module__": __name__}
            )
        category = _SK_CONVERGENCE
    warnings.warn(
        f"Number of distinct clusters ({found}) found smaller than n_clusters ({n_clusters}). "
        "Possibly due to duplicate points in X.",
        category,
        stacklevel=stacklevel,
    )


def labels_present(labels: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """(b, k) bool: which clusters the labels (b, n) use (label -1, a masked-out point, counts for none)."""
    b = labels.shape[0]
    seen = torch.zeros(b, n_clusters + 1, dtype=torch.bool, device=labels.device)
    seen.scatter_(1, labels + 1, True)
    return seen[:, 1:]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The floating dtype in which data of ``dtype`` is computed: float64 stays float64, all else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def is_sparse(X: Any) -> bool:
    """Whether ``X`` is a SciPy sparse matrix/array or a sparse torch tensor."""
    if isinstance(X, torch.Tensor):
        return X.layout != torch.strided
    return hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse")


def as_tensor(X: Any, name: str = "X", device: torch.device | str | None = None) -> tuple[torch.Tensor, bool]:
    """Convert ``X`` to a torch tensor without copying when possible.

    Returns ``(tensor, was_tensor)``; ``was_tensor`` tells the caller whether outputs should be tensors.
    NumPy integer and boolean data become float64 (as scikit-learn does), uint8 stays uint8; torch int32 and
    int64 tensors become float64 too (float32 holds integers exactly only up to 2^24), smaller integer and
    boolean tensors float32. A tensor that requires grad is detached (k-means is not differentiated); NumPy
    views with negative strides are copied.
    """
    if is_sparse(X):
        raise TypeError(f"{name}: sparse input is not supported; pass a dense array or tensor")
    if isinstance(X, torch.Tensor):
        t = X.detach()
        if t.is_complex():
            raise ValueError(f"{name}: Complex data not supported")
        if t.dtype in (torch.int32, torch.int64):
            t = t.to(torch.float64)
        elif t.dtype not in SUPPORTED_DTYPES:
            t = t.to(torch.float32)
        was_tensor = True
    else:
        arr = X if isinstance(X, np.ndarray) else np.asarray(X)
        if arr.dtype.kind == "c":
            raise ValueError(f"{name}: Complex data not supported")
        if arr.dtype.kind == "O":
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                if any(v is None or type(v).__name__ == "NAType" for v in arr.ravel().tolist()):
                    raise ValueError(
                        f"Input {name} contains missing values (pandas NA or None); remove or impute them first"
                    ) from None
                raise
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected numeric data, got an array of dtype {arr.dtype}")
        if arr.dtype.kind == "f" and arr.dtype.itemsize not in (2, 4, 8):
            arr = arr.astype(np.float64)
        elif arr.dtype != np.uint8 and arr.dtype.kind in "biu":
            arr = arr.astype(np.float64)
        if arr.dtype.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if any(st < 0 for st in arr.strides):  # torch cannot view negative strides (e.g. X[::-1]): copy
            arr = np.ascontiguousarray(arr)
        with warnings.catch_warnings():
            # Read-only inputs (memmaps) are fine: the engine never writes into X.
            warnings.filterwarnings("ignore", message=".*non-writable.*")
            t = torch.from_numpy(arr) if arr.ndim > 0 else torch.as_tensor(arr)
        was_tensor = False
    if device is not None:
        t = t.to(device)
    return t, was_tensor


def check_data(X: torch.Tensor, name: str = "X", *, ndims: tuple[int, ...] = (2,), finite: bool = True) -> None:
    """Check dimensions, emptiness and finiteness of data that is already a tensor."""
    if X.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        shape = {2: "(n_samples, n_features)", 3: "(batch, n_samples, n_features)"}
        hint = ", ".join(shape[d] for d in ndims if d in shape)
        msg = f"{name} must be {want} of shape {hint}, got {X.ndim}-D of shape {tuple(X.shape)}"
        if X.ndim == 1:
            msg += (
                ". Reshape your data either using array.reshape(-1, 1) if your data has a single feature "
                "or array.reshape(1, -1) if it contains a single sample"
            )
        raise ValueError(msg)
    if X.shape[-2] == 0:
        raise ValueError(f"{name} has 0 sample(s) (shape={tuple(X.shape)}) while a minimum of 1 is required.")
    if X.shape[-1] == 0:
        raise ValueError(f"{name} has 0 feature(s) (shape={tuple(X.shape)}) while a minimum of 1 is required.")
    if finite and X.dtype.is_floating_point:
        check_magnitude(X, name)


#: largest and smallest non-zero magnitude whose squared distances stay normal numbers, per compute dtype
_MAGNITUDE_LIMITS = {torch.float32: (1e18, 1e-18), torch.float64: (1e150, 1e-150)}


def check_magnitude(X: torch.Tensor, name: str = "X") -> None:
    """Refuse NaN, inf, and data whose squared distances would overflow or underflow the compute dtype.

    One pass over X (its largest magnitude, which is NaN or inf when any value is); the finer checks run
    only when that pass finds a problem.
    """
    check_largest(float(torch.linalg.vector_norm(X, float("inf"))), X.shape[-1], X.dtype, name)  # NaN if any is


def check_largest(amax: float, n_features: int, dtype: torch.dtype, name: str = "X") -> None:
    """:func:`check_magnitude` from the largest magnitude ``amax`` of data of ``dtype`` (NaN when any value is
    NaN): for callers that see the data in pieces (streams)."""
    if not math.isfinite(amax):
        kind = "NaN" if math.isnan(amax) else "inf"
        raise ValueError(f"Input {name} contains {kind}; remove or impute non-finite values (NaN or inf) first")
    cdt = compute_dtype(dtype)
    high, low = _MAGNITUDE_LIMITS[cdt]
    amax *= math.sqrt(n_features)
    hint = "pass float64 data or rescale it" if cdt == torch.float32 else "rescale it"
    if amax > high:
        raise ValueError(f"{name} has values of magnitude {amax:.3g}: their squared distances overflow {cdt}; {hint}")
    if 0 < amax < low:
        raise ValueError(
            f"{name} has values of magnitude {amax:.3g} at most: their squared distances underflow {cdt}; {hint}"
        )


def check_sample_weight(
    sample_weight: Any, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """Validate ``sample_weight`` against the leading ``shape`` of X and return it as a tensor (or None)."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        w = torch.full(shape, float(sample_weight), dtype=dtype, device=device)
    else:
        w, _ = as_tensor(sample_weight, "sample_weight")
        w = w.to(device=device, dtype=dtype)
    if tuple(w.shape) != tuple(shape):
        raise ValueError(f"sample_weight must have shape {tuple(shape)} to match X, got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("sample_weight contains NaN or inf")
    if bool((w < 0).any()):
        raise ValueError("sample_weight must be non-negative; got negative values")
    if bool((w.sum(-1) <= 0).any()):
        raise ValueError(
            "sample_weight sums to zero: at least one weight must be positive (in every problem of a batch)"
        )
    return w


def resolve_generator(random_state: Any, device: torch.device | None = None) -> torch.Generator:
    """A ``torch.Generator`` from ``random_state`` (None, int, NumPy RandomState/Generator, or torch.Generator).

    Ints give the same generator on every call; None draws a seed from torch's global RNG so that
    ``torch.manual_seed`` makes the result reproducible.
    """
    if isinstance(random_state, torch.Generator):
        return random_state
    if random_state is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be a non-negative integer, got {random_state}")
        seed = int(random_state)
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, 2**31 - 1))
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, 2**62))
    else:
        raise TypeError(
            f"random_state must be None, an int, a numpy RandomState/Generator or a torch.Generator, "
            f"got {type(random_state).__name__}"
        )
    return torch.Generator(device="cpu").manual_seed(seed)


def to_output(t: torch.Tensor, as_tensor_out: bool) -> Any:
    """Return ``t`` as given (tensor in, tensor out) or as a NumPy array (NumPy in, NumPy out)."""
    if as_tensor_out:
        return t
    return t.detach().cpu().numpy()
