"""Input checking and conversion shared by every public entry point: the one validation module.

Everything that turns user input (NumPy arrays, torch tensors, array-likes) into torch tensors lives here, and so
does the table of parameters (:data:`PARAMETERS`, scikit-learn's ``_parameter_constraints`` idea): one constraint
per parameter name, so that ``KMeans``, ``kmeans``, ``MiniBatchKMeans``, ``fit_stream``, ``predict_stream``,
``distributed.kmeans``, ``nn.KMeans`` and ``assign_update`` accept and reject the same values with the same words.
This module imports nothing else of pixelkm.
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
    check_largest(float(largest_magnitude(X)), X.shape[-1], X.dtype, name)


def largest_magnitude(X: torch.Tensor) -> torch.Tensor:
    """The largest ``|x|`` of floating X (non-empty) as a 0-d tensor on its device, NaN when any value is NaN.

    From one ``aminmax`` pass (12x faster on the CPU than ``vector_norm(X, inf)``: 0.6 ms instead of 7.6 ms for
    2^20 x 3 float32 on one thread)."""
    lo, hi = torch.aminmax(X)
    return torch.maximum(lo.abs(), hi.abs())  # (NaN propagates)


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
        if not bool(torch.isfinite(w).all()):
            raise ValueError("sample_weight contains NaN or inf")
        given = w
        w = w.to(device=device, dtype=dtype)
        if not bool(torch.isfinite(w).all()):  # finite as given, not in the compute dtype
            big = float(given.abs().max())
            raise ValueError(f"sample_weight has values too large for {dtype} (up to {big:.3g}); rescale them")
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
    if random_state is None:  # (torch's CPU generator keeps 32 bits of a seed: the draws are taken modulo 2**32)
        seed = int(torch.randint(0, 2**62, (1,)).item()) % 2**32
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= random_state < 2**64:
            raise ValueError(f"random_state must be an int in [0, 2**64), got {random_state}")
        seed = torch_seed(int(random_state))
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, 2**31 - 1))
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, 2**62)) % 2**32
    else:
        raise TypeError(
            f"random_state must be None, an int, a numpy RandomState/Generator or a torch.Generator, "
            f"got {type(random_state).__name__}"
        )
    return torch.Generator(device="cpu").manual_seed(seed)


_M64 = 2**64 - 1


def torch_seed(seed: int) -> int:
    """The seed of torch's CPU generator for an int ``random_state`` in [0, 2**64): that generator keeps only the
    low 32 bits of its seed, so a seed at or above 2**32 is mixed down first (splitmix64's finalizer), so that every
    bit of it counts (7 and 7 + 2**32 gave the same fit); seeds below 2**32 are kept as they are."""
    if seed < 2**32:
        return seed
    z = ((seed ^ (seed >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return (z ^ (z >> 31)) % 2**32


def available_devices() -> list[str]:
    """The devices this torch can compute on here: "cpu", then every CUDA GPU, MPS and XPU where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        devices.append("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        devices += [f"xpu:{i}" for i in range(torch.xpu.device_count())]
    return devices


def check_device(device: Any) -> torch.device:
    """``device`` as a torch.device, with a ValueError naming it and the devices available when it cannot be used
    on this machine."""
    available = ", ".join(available_devices())
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device must be e.g. 'cpu', 'cuda' or 'cuda:1'; got {device!r} ({e}); available: {available}"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} is not available: this torch has no usable CUDA GPU; available: {available}"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} is not available: {torch.cuda.device_count()} CUDA GPU(s) found")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} is not available on this machine; available: {available}")
    elif dev.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ValueError(f"device {device!r} is not available on this machine; available: {available}")
    elif dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(
            f"device {device!r} cannot hold the data of a fit ({dev.type!r} tensors have no values); "
            f"available: {available}"
        )
    return dev


def to_output(t: torch.Tensor, as_tensor_out: bool) -> Any:
    """Return ``t`` as given (tensor in, tensor out) or as a NumPy array (NumPy in, NumPy out)."""
    if as_tensor_out:
        return t
    return t.detach().cpu().numpy()


# -- the parameter table ---------------------------------------------------------------------------------------
#: the string inits (an array of centers is the other choice)
INIT_METHODS = ("k-means++", "k-means||", "random")
#: values of ``algorithm=``
ALGORITHMS = ("auto", "lloyd", "hamerly", "yinyang")


class Int:
    """An integer (Python or NumPy, not bool) of at least ``low``; None too when ``none``."""

    def __init__(self, low: int, none: bool = False) -> None:
        self.low, self.none = low, none

    def __call__(self, name: str, value: Any) -> Any:
        if value is None and self.none:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            what = "an int or None" if self.none else "an int"
            raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
        if value < self.low:
            raise ValueError(f"{name} must be >= {self.low}, got {value}")
        return int(value)


class Real:
    """A finite real number (Python or NumPy, not bool) of at least ``low``."""

    def __init__(self, low: float) -> None:
        self.low = low

    def __call__(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number >= {self.low}, got {value!r}")
        if not value >= self.low:
            raise ValueError(f"{name} must be a finite number >= {self.low}, got {value!r}")
        return float(value)


class Options:
    """One of a few values (compared by equality and type, so that 1 is not True)."""

    def __init__(self, *values: Any) -> None:
        self.values = values

    def __call__(self, name: str, value: Any) -> Any:
        for v in self.values:
            if type(value) is type(v) and value == v:
                return v
        raise ValueError(f"{name} must be one of {self.values}, got {value!r}")


class Either:
    """The first of several constraints that accepts the value; the error lists what each would take."""

    def __init__(self, *constraints: Any) -> None:
        self.constraints = constraints

    def __call__(self, name: str, value: Any) -> Any:
        errors = []
        for c in self.constraints:
            try:
                return c(name, value)
            except (TypeError, ValueError) as e:
                errors.append(str(e).removeprefix(f"{name} must be ").split(", got ")[0])
        raise ValueError(f"{name} must be {' or '.join(errors)}, got {value!r}")


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def _verbose(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return Int(0)(name, value)


def _init(name: str, value: Any) -> Any:
    if isinstance(value, str):
        if value not in INIT_METHODS:
            raise ValueError(f"{name} must be one of {INIT_METHODS} or an array of centers, got {value!r}")
        return value
    if callable(value) or value is None:
        raise TypeError(f"{name} must be one of {INIT_METHODS} or an array of shape (n_clusters, n_features)")
    return value


def _random_state(name: str, value: Any) -> Any:
    if isinstance(value, (list, tuple)):  # a seed per problem of a batch
        return [_random_state(name, v) for v in value]
    if value is None or isinstance(value, (torch.Generator, np.random.RandomState, np.random.Generator)):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if not 0 <= value < 2**64:
            raise ValueError(f"{name} must be an int in [0, 2**64), got {value}")
        return int(value)
    raise TypeError(
        f"{name} must be None, an int, a numpy RandomState/Generator or a torch.Generator, got {type(value).__name__}"
    )


def _device(name: str, value: Any) -> Any:
    return None if value is None else check_device(value)


def _backend(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    return value  # the name is checked against the registry by the entry points (pixelkm.backends)


#: the constraint of every parameter of the public entry points, by name
PARAMETERS: dict[str, Any] = {
    "n_clusters": Int(1),
    "init": _init,
    "n_init": Either(Options("auto"), Int(1)),
    "max_iter": Int(1),
    "tol": Real(0.0),
    "random_state": _random_state,
    "spherical": _bool,
    "algorithm": Options(*ALGORITHMS),
    "backend": _backend,
    "device": _device,
    "verbose": _verbose,
    "batch_size": Int(1),
    "compute_labels": _bool,
    "max_no_improvement": Int(0, none=True),
    "init_size": Int(1, none=True),
    "reassignment_ratio": Real(0.0),
    "chunk_size": Int(1, none=True),
    "chunk_rows": Int(1, none=True),
    "coreset_size": Int(1, none=True),
    "max_device_memory": Int(1 << 20, none=True),
    "reduce": Options("auto", True, False),
    "progress": _bool,
    "quantize": _bool,
    "force": _bool,
    "fixed_iterations": _bool,
    "init_sample_size": Int(1, none=True),
    "max_points_per_cluster": Int(1, none=True),
    "deterministic": Either(Options(None), _bool),
}


def check_param(name: str, value: Any) -> Any:
    """``value`` checked against the table's constraint for ``name``, in its plain Python form (np.float32(1e-4)
    becomes 1e-4, np.int64(10) becomes 10; a device string becomes a torch.device)."""
    return PARAMETERS[name](name, value)


def check_params(values: dict[str, Any]) -> dict[str, Any]:
    """Every entry of ``values`` checked with :func:`check_param` (names not in the table pass unchanged)."""
    return {name: check_param(name, v) if name in PARAMETERS else v for name, v in values.items()}
